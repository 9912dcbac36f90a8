"""The Hub side: a built dataset folder goes only to a private repository;
checkpoints go anywhere, with a model card that says what they were trained on.

FERV39k's terms forbid redistributing any part of the data, so
:func:`push_dataset_folder` checks the target repository is private before it
writes anything (creating it private when missing) and refuses otherwise.
Checkpoints carry no data and may be public; :func:`render_model_card` states
their base model, the dataset and label order, the clip protocol, the WAR/UAR
overall and per scenario (in a table, and in ``model-index`` metadata with the
Hub's metric types) and what the faces in the training data mean for users.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from ferv39k_hf.archive.outdirs import MARKER
from ferv39k_hf.dataset.modelcard import render_model_card  # noqa: F401  (the push writes it; public here too)
from ferv39k_hf.errors import Ferv39kError

TERMS_REASON = (
    "FERV39k's terms of use forbid reproducing or distributing any portion of the data; a built copy may "
    "only be kept for internal use by your own organization, so it may go only to a PRIVATE repository"
)

# Files a checkpoint push leaves behind: intermediate checkpoints, private
# files, an earlier run's results set aside, and anything that could be (a copy of) the data itself.
CHECKPOINT_IGNORE_PATTERNS = [
    "checkpoint-*", "checkpoint-*/**", "_*", "runs/**", "previous-run-*", "previous-run-*/**",
    "*.parquet", "*.arrow", "*.jpg", "*.jpeg", "*.png", "*.mp4", "*.zip", "data/**",
]


class PushRefused(Ferv39kError):
    """A push that would break the dataset's terms, or a folder that is not a build."""


@dataclass
class PushResult:
    repo_id: str
    created: bool
    commit_url: str
    num_files: int


# -- dataset folders ---------------------------------------------------------------

def read_card_metadata(folder: "os.PathLike[str] | str") -> Dict[str, Any]:
    """The YAML front matter of ``folder/README.md`` as a dict ({} if it has none): card.read_card's."""
    from ferv39k_hf.dataset.card import read_card  # card.py imports datasets

    try:
        return read_card(folder)
    except Ferv39kError as err:
        raise PushRefused(str(err)) from None


def check_pushable_folder(folder: "os.PathLike[str] | str") -> Dict[str, Any]:
    """The card metadata of a folder made by ``ferv39k-hf build --frames copy``; PushRefused otherwise."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PushRefused(f"{folder} is not a folder")
    meta = read_card_metadata(folder)
    if "ferv39k_frames" not in meta or not meta.get("configs"):
        raise PushRefused(
            f"{folder} is not a folder built by 'ferv39k-hf build': its README.md has no "
            "'ferv39k_frames' and 'configs' metadata"
        )
    if meta["ferv39k_frames"] != "copy":
        raise PushRefused(
            f"{folder} was built with --frames {meta['ferv39k_frames']}: its rows point at files on the machine "
            "that built it instead of holding the frames, so a pushed copy would be unusable. "
            "Rebuild with --frames copy to push it"
        )
    for config in meta["configs"]:
        for entry in config.get("data_files", []):
            paths = entry["path"] if isinstance(entry["path"], list) else [entry["path"]]
            missing = [p for p in paths if not (folder / p).is_file()]
            if missing:
                raise PushRefused(f"{folder}: README.md lists data files that are missing, e.g. {folder / missing[0]}")
    return meta


def _hf_api(token: Optional[str], endpoint: Optional[str]):
    from huggingface_hub import HfApi, get_token

    token = token or get_token()
    if not token:
        raise PushRefused("no Hub token: log in with 'hf auth login', set HF_TOKEN, or pass --token")
    return HfApi(endpoint=endpoint or os.environ.get("HF_ENDPOINT"), token=token)


def _ensure_private_dataset_repo(api, repo_id: str) -> bool:
    """Make sure ``repo_id`` is a private dataset repo; True if it was created here."""
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    created = False
    try:
        info = api.repo_info(repo_id, repo_type="dataset")
    except RepositoryNotFoundError:
        try:
            api.create_repo(repo_id, repo_type="dataset", private=True)
            created = True
        except HfHubHTTPError as err:
            if err.response is None or err.response.status_code != 409:
                raise
        info = api.repo_info(repo_id, repo_type="dataset")
    if info.private is not True:
        state = "public" if info.private is False else "of unknown visibility"
        raise PushRefused(
            f"refusing to push to dataset repository {repo_id}: it is {state}. {TERMS_REASON}. "
            "Make it private on the Hub (Settings > Change repository visibility) or choose another name"
        )
    return created


def push_dataset_folder(
    folder: "os.PathLike[str] | str",
    repo_id: str,
    *,
    token: Optional[str] = None,
    revision: Optional[str] = None,
    endpoint: Optional[str] = None,
) -> PushResult:
    """Upload a built folder to the private dataset repository ``repo_id`` (ORG/NAME)."""
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise PushRefused(f"--repo-id must be ORG/NAME, got {repo_id!r}")
    meta = check_pushable_folder(folder)
    api = _hf_api(token, endpoint)
    created = _ensure_private_dataset_repo(api, repo_id)
    if revision and revision != "main":
        api.create_branch(repo_id, branch=revision, repo_type="dataset", exist_ok=True)
    # The build marker says which local files --overwrite may replace; it means nothing in a repository.
    files = [p for p in Path(folder).rglob("*") if p.is_file() and ".cache" not in p.parts and p.name != MARKER]
    commit = api.upload_folder(
        folder_path=str(folder),
        repo_id=repo_id,
        repo_type="dataset",
        revision=revision,
        commit_message=f"FERV39k ({meta.get('ferv39k_config', 'faces')}) built folder, private internal copy",
        ignore_patterns=[".cache/**", MARKER],
    )
    return PushResult(repo_id, created, commit.commit_url, len(files))


def run_push_command(args: Any) -> int:
    from huggingface_hub import get_token
    from huggingface_hub.errors import HfHubHTTPError

    secret = args.token or get_token()
    try:
        result = push_dataset_folder(args.dir, args.repo_id, token=args.token, revision=args.revision)
    except HfHubHTTPError as err:
        message = str(err).replace(secret, "***") if secret else str(err)
        raise PushRefused(f"the Hub refused the push to {args.repo_id}: {message}") from None
    except Exception as err:  # noqa: BLE001 -- only connection failures are ours to describe; others go on
        if not _unreachable(err):
            raise
        from huggingface_hub import constants

        where = os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
        detail = " ".join(str(err).split())[:200] or type(err).__name__
        raise PushRefused(f"could not reach the Hub at {where} to push {args.repo_id} ({detail}); check the "
                          "network, HF_ENDPOINT or the proxy settings and push again") from None
    verb = "created private dataset repository" if result.created else "private dataset repository"
    print(f"{verb} {result.repo_id}: uploaded {result.num_files} files from {args.dir}")
    print(f"commit: {result.commit_url}")
    print("Keep it private: FERV39k's terms allow internal use by your own organization only.")
    return 0


_NETWORK_ERRORS = ("ConnectError", "ConnectTimeout", "TransportError", "NetworkError", "TimeoutException",
                   "ConnectionError", "Timeout", "ProxyError")  # httpx's and requests' names, whichever is used


def _unreachable(err: BaseException) -> bool:
    """Whether ``err`` says the Hub could not be reached (refused, unresolved, timed out), by its type's names."""
    return isinstance(err, OSError) or any(kind.__name__ in _NETWORK_ERRORS for kind in type(err).__mro__)


# -- checkpoints ---------------------------------------------------------------------

def checkpoint_files(folder: "os.PathLike[str] | str") -> List[str]:
    """The files of ``folder`` a checkpoint push uploads (relative paths), the ignore patterns applied."""
    root = Path(folder)
    kept = []
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not any(fnmatch.fnmatch(rel, p) for p in CHECKPOINT_IGNORE_PATTERNS):
            kept.append(rel)
    return sorted(kept)


def push_checkpoint(
    folder: "os.PathLike[str] | str",
    repo_id: str,
    *,
    token: Optional[str] = None,
    private: Optional[bool] = None,
    revision: Optional[str] = None,
    endpoint: Optional[str] = None,
    commit_message: str = "FERV39k fine-tuned checkpoint",
) -> PushResult:
    """Upload a saved checkpoint folder (model, processor config, card, results) to a model repo."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint or os.environ.get("HF_ENDPOINT"), token=token)
    if "/" not in repo_id:
        repo_id = f"{api.whoami()['name']}/{repo_id}"
    created = not api.repo_exists(repo_id)
    if created:
        api.create_repo(repo_id, private=private, exist_ok=True)
    if revision and revision != "main":
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    commit = api.upload_folder(
        folder_path=str(folder), repo_id=repo_id, revision=revision, commit_message=commit_message,
        ignore_patterns=list(CHECKPOINT_IGNORE_PATTERNS),
    )
    return PushResult(repo_id, created, commit.commit_url, len(checkpoint_files(folder)))
