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
from typing import Any, Dict, List, Mapping, Optional, Sequence

from ferv39k_hf.archive.outdirs import MARKER
from ferv39k_hf.errors import Ferv39kError
from ferv39k_hf.taxonomy import CITATION, HOMEPAGE, LICENSE_SUMMARY, PERSONAL_DATA, SCENARIOS

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

def _percent(value: Optional[float]) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


# The Hub's metric ids (hf.co/metrics): WAR is accuracy over the clips; UAR is the
# unweighted mean of the per-class recalls, i.e. recall with average="macro".
_METRICS = {"war": ("accuracy", "WAR", None), "uar": ("recall", "UAR", {"average": "macro"})}


def _eval_results(results: Mapping[str, Any], dataset_name: str, config: str, split: str) -> List[Any]:
    """``model-index`` rows as huggingface_hub EvalResults: WAR and UAR overall, then per scenario (percent)."""
    from huggingface_hub import EvalResult

    if results.get("war") is None:
        return []
    common = dict(task_type="video-classification", task_name="Video facial expression recognition",
                  dataset_type="ferv39k", dataset_name=dataset_name, dataset_config=config, dataset_split=split)
    subsets = [("", results)] + [(f" ({scenario})", results["per_scenario"][scenario]) for scenario in SCENARIOS
                                 if results.get("per_scenario", {}).get(scenario)]
    return [EvalResult(metric_type=metric_type, metric_name=name + suffix, metric_args=args,
                       metric_value=round(100 * score[key], 2), **common)
            for suffix, score in subsets for key, (metric_type, name, args) in _METRICS.items()]


def _clips(entry: Mapping[str, Any]) -> Any:
    # score() gives the overall support per class word, a scenario's as one count
    support = entry.get("support")
    return sum(support.values()) if isinstance(support, Mapping) else ("-" if support is None else support)


def _results_table(results: Mapping[str, Any]) -> str:
    lines = ["| subset | clips | WAR (%) | UAR (%) |", "|---|---|---|---|",
             f"| all test clips | {_clips(results)} | {_percent(results['war'])} | "
             f"{_percent(results['uar'])} |"]
    for scenario in SCENARIOS:
        score = results.get("per_scenario", {}).get(scenario)
        if score:
            lines.append(f"| {scenario} | {_clips(score)} | {_percent(score['war'])} | "
                         f"{_percent(score['uar'])} |")
    return "\n".join(lines)


def _protocol_lines(protocol: Mapping[str, Any], dataset_config: str) -> str:
    """The clip protocol as the card's bullet list."""
    side, sampling = protocol.get("image_size"), protocol.get("sampling")
    if sampling == "window" and protocol.get("window_stride", 1) != 1:
        sampling = f"{sampling} (frame step {protocol['window_stride']})"
    return "\n".join([
        f"- {protocol.get('num_frames')} frames per clip from the {dataset_config} frames, **{sampling}** sampling"
        " (training: random positions; evaluation: fixed positions); clips shorter than that are padded by"
        " repeating their last frame.",
        f"- Input size {side}x{side}: evaluation resizes the short side to {side} and takes the centre crop.",
        f"- Pixels scaled to [0, 1], normalised with mean {protocol.get('mean')} and std {protocol.get('std')}.",
        f"- Test: {protocol.get('test_views', '1x1')} views per clip (temporal x spatial), softmax-averaged per clip"
        " before scoring.",
    ])


def render_model_card(
    *,
    model_name: str,
    base_model: Optional[str],
    label_names: Sequence[str],
    label_order: str,
    dataset_config: str,
    protocol: Mapping[str, Any],
    results: Mapping[str, Any],
    eval_split: str = "test",
    training: Optional[Mapping[str, Any]] = None,
) -> str:
    """The README.md of a FERV39k checkpoint: metadata the Hub reads, then what a user needs to know.

    Args:
        model_name: the checkpoint's name (``model-index`` name and the title).
        base_model: the Hub id or local folder it was fine-tuned from; None if trained from scratch.
            Only a Hub id goes into the metadata.
        label_names: the 7 class words in the checkpoint's ``id2label`` order.
        label_order: that order's name (``alphabetical`` or ``dfew``).
        dataset_config: ``faces``, ``scenes`` or ``videos``.
        protocol: the clip protocol: ``num_frames``, ``image_size``, ``sampling``, ``test_views``
            (temporal x spatial, e.g. ``"2x2"``), ``mean``, ``std`` and optionally ``window_stride``.
        results: ``war``, ``uar`` (fractions), ``support`` and ``per_scenario``
            ``{scenario: {war, uar, support}}``, as :func:`ferv39k_hf.metrics.score` returns them;
            ``war`` None for a checkpoint not scored (no ``model-index`` then).
        eval_split: the split the results are on.
        training: hyperparameters to list, name -> value.

    Returns:
        The card as text: YAML front matter (licence, pipeline tag, base model and ``model-index`` with
        WAR as ``accuracy`` and UAR as ``recall`` with ``average: macro``, overall and per scenario, in
        percent), then the labels, the clip protocol, the results table, training, terms, personal data
        and citation. ``huggingface_hub.ModelCard(text)`` parses it.

    Example:
        >>> card = render_model_card(model_name="videomae-ferv39k", base_model="MCG-NJU/videomae-base",
        ...     label_names=label_names("alphabetical"), label_order="alphabetical", dataset_config="faces",
        ...     protocol=model.config.ferv39k, results=score(...))  # doctest: +SKIP
        >>> Path("videomae-ferv39k/README.md").write_text(card)  # doctest: +SKIP
    """
    from huggingface_hub import ModelCardData

    dataset_name = f"FERV39k ({dataset_config})"
    local_base = bool(base_model) and os.path.isdir(base_model)
    data = ModelCardData(
        model_name=model_name,
        base_model=None if local_base or not base_model else base_model,  # metadata takes Hub ids only
        license="other",
        library_name="transformers",
        pipeline_tag="video-classification",
        tags=["video-classification", "facial-expression-recognition", "ferv39k"],
        metrics=["accuracy", "recall"],
        eval_results=_eval_results(results, dataset_name, dataset_config, eval_split) or None,
    )
    labels = "\n".join(f"| {i} | {name} |" for i, name in enumerate(label_names))
    if not base_model:
        base = "none: trained from scratch"
    elif local_base:
        base = f"`{Path(base_model).name}` (a local checkpoint)"
    else:
        base = f"[{base_model}](https://huggingface.co/{base_model})"
    hyper = "\n".join(f"- {key}: {value}" for key, value in (training or {}).items())
    frames = protocol.get("num_frames")
    return f"""---
{data.to_yaml()}
---

# {model_name}

A video classifier of facial expressions trained on **FERV39k** ({dataset_config} config,
official train split) and scored on its `{eval_split}` split.

- Base model: {base}
- Dataset: FERV39k (Wang et al., CVPR 2022), {HOMEPAGE}. The data is licence-gated and is **not**
  included in or distributed with this checkpoint.

## Labels ({label_order} order)

`config.json`'s `id2label` holds this order; a prediction's index means the class below.

| id | expression |
|---|---|
{labels}

## Clip protocol

{_protocol_lines(protocol, dataset_config)}

The same protocol is written where transformers reads it: `video_preprocessor_config.json` (for
`AutoVideoProcessor`: `num_frames`, resize, crop, mean and std), `preprocessor_config.json` (the image
processor the video-classification pipeline uses without torchvision), each with the whole protocol
under `ferv39k`, and `config.json` (`ferv39k`). transformers picks frames its own way: its video
processor takes the first frame of each of {frames} equal segments and refuses shorter clips, and the
pipeline with an image processor takes the first {frames} frames. To reproduce the scores below, sample
with `ferv39k_hf.VideoClipTransform`, as ferv39k-hf's `examples/predict.py` does.

## Results on FERV39k `{eval_split}`

WAR is accuracy over the clips; UAR is the mean of the 7 per-class recalls. In the `model-index`
metadata WAR is `accuracy` and UAR is `recall` with `average: macro`, in percent as papers print them.

{_results_table(results)}

## Training

{hyper or "See `training_args.bin` and `all_results.json`."}

## Terms

{LICENSE_SUMMARY} Use of this model is subject to the terms of the data it was trained on.

## Personal data

{PERSONAL_DATA}
## Citation

```bibtex
{CITATION.strip()}
```
"""


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
