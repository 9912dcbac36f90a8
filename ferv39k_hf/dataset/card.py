"""The dataset card (README.md) of a built folder.

Its YAML front matter declares the config, the splits' exact data files and
the features, so ``datasets.load_dataset(folder)`` needs nothing else. The
body states the licence terms, what the faces in it mean for its users,
citation, label order and counts.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any, Dict, List, Mapping, Optional, Sequence

import datasets
import yaml

from ferv39k_hf.dataset.storage import (
    StorageMissing,
    StoragePatience,
    StreamError,
    join,
    read_bytes,
    storage_options_for,
)
from ferv39k_hf.taxonomy import CITATION, HOMEPAGE, LICENSE_SUMMARY, PERSONAL_DATA, SCENARIOS, SCENES, label_names

_FRAMES_NOTE = {
    "copy": "Frames are the archive's own JPEG bytes, unchanged, in frame order.",
    "reference": (
        "**Reference build**: rows hold absolute paths to the frame files of an unpacked archive on the machine "
        "that built it, not the bytes. It works only there, breaks if the archive moves, and must never be pushed."
    ),
}


def parse_front_matter(text: str, where: str) -> object:
    """The parsed YAML front matter of a card's text (whatever YAML gives), or None when the text has none.

    Raises ValueError naming ``where`` when the front matter is not closed by a ``---`` line or is
    not YAML. The one reader of built cards' metadata, for the Hub push and for streaming.
    """
    if not text.startswith("---\n"):
        return None
    front, sep, _ = text[4:].partition("\n---")
    if not sep:
        raise ValueError(f"{where}: the YAML front matter is not closed by a '---' line")
    try:
        return yaml.safe_load(front)
    except yaml.YAMLError as err:
        raise ValueError(f"{where}: unreadable YAML front matter: {err}") from None


def read_card(location: "os.PathLike[str] | str", storage_options: Optional[Mapping[str, Any]] = None,
              patience: Optional[StoragePatience] = None) -> Dict[str, Any]:
    """The YAML front matter of ``location/README.md`` (a built folder's card), local or through fsspec.

    The one reader of built cards, for streaming, scoring and the Hub push. Returns the metadata
    dict (``configs``, ``dataset_info``, ``ferv39k_config``, ...), ``{}`` when the card has no front
    matter. Raises :class:`StreamError` naming the card when it is missing (and whether its bucket
    is), unreadable, not YAML or not a mapping. ``patience`` (default: the environment's,
    :meth:`StoragePatience.from_env`) bounds the read from object storage.
    """
    location = os.fspath(location)
    card = join(location, "README.md")
    patience = StoragePatience.from_env() if patience is None else patience
    options = storage_options_for(location, storage_options, patience)
    try:
        data = read_bytes(card, options, patience, "reading the card")
    except StorageMissing as err:
        if err.no_bucket:
            raise
        raise StorageMissing(f"{card} is missing: {location} is not a folder built by 'ferv39k-hf build'") from None
    try:
        meta = parse_front_matter(data.decode("utf-8"), card)
    except UnicodeDecodeError:
        raise StreamError(f"{card}: not UTF-8 text, so not the card of a built folder") from None
    except ValueError as err:
        raise StreamError(str(err)) from None
    if meta is not None and not isinstance(meta, dict):
        raise StreamError(f"{card}: the YAML front matter is not a mapping")
    return meta or {}


def _entries(value: Any) -> List[Dict[str, Any]]:
    entries = value if isinstance(value, list) else [value] if isinstance(value, dict) else []
    return [entry for entry in entries if isinstance(entry, dict)]


def _chosen_config(meta: Mapping[str, Any], where: str) -> Dict[str, Any]:
    """The card's default ``configs`` entry; else its only one; else a StreamError naming the configs."""
    configs = _entries(meta.get("configs"))
    if not configs:
        raise StreamError(f"{where}: no 'configs' in the YAML front matter, so no list of the splits' files")
    defaults = [c for c in configs if c.get("default")]
    if len(defaults) == 1 or len(configs) == 1:
        return (defaults or configs)[0]
    names = ", ".join(str(c.get("config_name")) for c in configs)
    raise StreamError(f"{where}: {len(configs)} configs ({names}) and {'several' if defaults else 'none'} marked "
                      "default, so which files make a split is not known")


def split_files(meta: Mapping[str, Any], location: "os.PathLike[str] | str",
                where: str = "README.md") -> Dict[str, List[str]]:
    """Each split's Parquet files from the card's default config (else its only one), joined onto ``location``.

    The one split-to-files rule, for streaming and scoring. Example: ``split_files(read_card("ferv39k"),
    "ferv39k")["test"]`` -> ``["ferv39k/data/faces/test-00000-of-00008.parquet", ...]``.
    """
    config = _chosen_config(meta, where)
    files: Dict[str, List[str]] = {}
    for entry in _entries(config.get("data_files")):
        paths = entry.get("path")
        paths = [paths] if isinstance(paths, str) else list(paths or [])
        files[str(entry.get("split"))] = [join(location, str(path)) for path in paths]
    if not files:
        raise StreamError(f"{where}: configs[{config.get('config_name')!r}] lists no data_files")
    return files


def card_row_counts(meta: Mapping[str, Any], where: str = "README.md") -> Dict[str, int]:
    """Rows per split from the chosen config's ``dataset_info.splits`` (``num_examples``).

    Example: ``{"train": 31088, "test": 7847}``. ``meta`` is what :func:`read_card` returns.
    """
    name = _chosen_config(meta, where).get("config_name")
    infos = _entries(meta.get("dataset_info"))
    info = next((i for i in infos if i.get("config_name") == name), infos[0] if len(infos) == 1 else None)
    if info is None:
        raise StreamError(f"{where}: no dataset_info for config {name!r} in the YAML front matter")
    counts = {s.get("name"): s.get("num_examples") for s in _entries(info.get("splits"))}
    if not counts or not all(isinstance(n, int) and n >= 0 for n in counts.values()):
        raise StreamError(f"{where}: dataset_info.splits gives no row count per split: {counts}")
    return counts


def card_metadata(
    config: str,
    features: datasets.Features,
    shards: Mapping[str, Sequence[str]],
    counts: Mapping[str, int],
    split_bytes: Mapping[str, int],
    label_order: str,
    frames: str,
) -> Dict:
    """The YAML front matter as a dict."""
    return {
        "pretty_name": f"FERV39k ({config})",
        "license": "other",
        "license_name": "ferv39k-terms-of-use",
        "license_link": HOMEPAGE,
        "task_categories": ["video-classification"],
        "tags": ["facial-expression-recognition", "ferv39k", "video", "private-use-only"],
        "ferv39k_config": config,
        "ferv39k_label_order": label_order,
        "ferv39k_frames": frames,
        "configs": [
            {
                "config_name": config,
                "default": True,
                "data_files": [{"split": split, "path": list(paths)} for split, paths in shards.items()],
            }
        ],
        "dataset_info": {
            "config_name": config,
            "features": features._to_yaml_list(),
            "splits": [
                {"name": split, "num_bytes": int(split_bytes[split]), "num_examples": int(counts[split])}
                for split in shards
            ],
            "download_size": int(sum(split_bytes.values())),
            "dataset_size": int(sum(split_bytes.values())),
        },
    }


def _markdown_table(header: List[str], rows: List[List[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _lists_note(split_lists: Optional[Sequence[Mapping[str, str]]]) -> str:
    """The card's paragraph on the split lists that replaced the official split files, or nothing."""
    if not split_lists:
        return ""
    rows = [[e["split"], f"`{e['file']}`", e["format"], f"`{e['sha256']}`"] for e in split_lists]
    return ("\n## Split lists\n\nThe splits were read from these lists, not from the official `train_All.csv` and "
            "`test_All.csv`; every line's class was checked against its clip's folder:\n\n"
            + _markdown_table(["split", "file", "format", "sha256"], rows) + "\n")


def _count_tables(cells: Mapping[str, Counter], label_order: str) -> str:
    words = label_names(label_order)
    rows = [[split] + [cells[split][w] for w in words] + [sum(cells[split][w] for w in words)] for split in cells]
    return _markdown_table(["split", *words, "total"], rows)


def render_card(
    config: str,
    features: datasets.Features,
    shards: Mapping[str, Sequence[str]],
    class_counts: Mapping[str, Counter],
    scenario_counts: Mapping[str, Counter],
    split_bytes: Mapping[str, int],
    label_order: str,
    frames: str,
    skipped: int,
    command: str,
    split_lists: Optional[Sequence[Mapping[str, str]]] = None,
    synthetic: bool = False,
) -> str:
    """The whole README.md of a built folder.

    ``split_lists`` (``[{"split", "file", "format", "sha256"}, ...]``) records the community
    split lists the folder was built from, in the YAML (``ferv39k_split_lists``) and the body.
    ``synthetic``: the archive was made by ``ferv39k-hf sample``; the YAML says
    ``ferv39k_synthetic: true``, so ``score`` does not rank results on it among published ones.
    """
    counts = {split: sum(class_counts[split].values()) for split in shards}
    from ferv39k_hf.dataset.shards import shard_note

    meta = card_metadata(config, features, shards, counts, split_bytes, label_order, frames)
    if split_lists:
        meta["ferv39k_split_lists"] = [dict(entry) for entry in split_lists]
    if synthetic:
        meta["ferv39k_synthetic"] = True
    synthetic_note = (
        "\n**Synthetic sample.** The archive was made by `ferv39k-hf sample`: drawn faces in FERV39k's layout, "
        "no FERV39k data. Scores on it are not comparable with published results.\n" if synthetic else ""
    )
    words = label_names(label_order)
    label_rows = [[i, w] for i, w in enumerate(words)]
    scenario_rows = [[s] + [scenario_counts[split][s] for split in shards] for s in SCENARIOS]
    validation_note = (
        "\nThe `validation` split is a seeded carve-out of the official train split, stratified by scene and "
        "class. It is not an official split; published results use `test`.\n"
        if "validation" in shards
        else ""
    )
    skipped_note = (
        f"\n**{skipped} split-file line(s) did not become rows**; `build_report.json` lists each with its reason.\n"
        if skipped
        else ""
    )
    body = f"""
# FERV39k ({config})

FERV39k (Wang et al., CVPR 2022) is a video facial-expression dataset: 38,935 clips, 7 expression classes,
22 scenes grouped into 4 scenarios. This folder was built from a licensed copy of the archive with
[ferv39k-hf](https://pypi.org/project/ferv39k-hf/):

```
{command}
```

{_FRAMES_NOTE[frames]}
{synthetic_note}{validation_note}{skipped_note}{_lists_note(split_lists)}
## Terms of use

{LICENSE_SUMMARY} Keep this folder inside your organization; share it only through a **private**
repository (`ferv39k-hf push` refuses public ones). Homepage: {HOMEPAGE}

## Personal data

{PERSONAL_DATA}

## Loading

```python
import datasets
ds = datasets.load_dataset("path/to/this/folder")            # or streaming=True
List = getattr(datasets, "List", datasets.Sequence)         # datasets < 4 calls it Sequence
ds = ds.cast_column("frames", List(datasets.Image(decode=False)))  # decode only sampled frames
```

{shard_note(shards)}

Columns: `clip_id` (`Scene/Emotion/NNNN`, the unique key), `scene` (22 classes), `scenario` (4),
`label` (7), `num_frames`, and `{'video' if config == 'videos' else 'frames'}`.

## Label order: {label_order}

{_markdown_table(["id", "class"], label_rows)}

## Clips per split and class

{_count_tables(class_counts, label_order)}

## Clips per scenario

{_markdown_table(["scenario", *shards], scenario_rows)}

Scenes ({len(SCENES)}): {", ".join(SCENES)}.

## Citation

```bibtex
{CITATION.strip()}
```
"""
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=120)
    return f"---\n{front}---\n{body}"
