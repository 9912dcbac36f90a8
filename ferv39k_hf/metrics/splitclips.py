"""A built split's clips (id, class, scene, scenario), read from a folder made by ``ferv39k-hf build``.

Metadata columns only, from the Parquet files the card names: no frame is read or decoded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

from ferv39k_hf.errors import Ferv39kError
from ferv39k_hf.metrics.predrows import PredictionFileError, listing
from ferv39k_hf.taxonomy import CLASS_WORDS, SCENARIOS, SCENES

METADATA_COLUMNS = ("clip_id", "label", "scene", "scenario")
__all__ = ["SplitClips", "other_splits", "read_split", "split_names"]


@dataclass
class SplitClips:
    """A built split's clips: id, class word, scene and scenario of each, in the split's row order."""

    folder: Path
    split: str
    clip_ids: List[str]
    words: List[str]
    scenes: List[str]
    scenarios: List[str]
    skipped_by_build: int = 0  # this split's lines that the build skipped (build_report.json)
    synthetic: bool = False  # built from a `ferv39k-hf sample` archive: not FERV39k, never ranked


def _split_files(folder: Path, split: str) -> Tuple[List[Path], Dict]:
    """The split's Parquet files, and the card's metadata they were read from."""
    from ferv39k_hf.dataset.card import read_card, split_files

    if not folder.is_dir():
        raise PredictionFileError(f"{folder} is not a folder (give --dataset a folder made by 'ferv39k-hf build')")
    try:
        meta = read_card(folder)
        splits = split_files(meta, str(folder), str(folder / "README.md")) if "ferv39k_config" in meta else {}
    except Ferv39kError as err:
        raise PredictionFileError(str(err)) from None
    if not splits:
        raise PredictionFileError(f"{folder}: its README.md is not the card of a 'ferv39k-hf build' folder")
    if split not in splits:
        raise PredictionFileError(f"{folder} has no split {split!r}; it has {', '.join(splits)}")
    files = [Path(name) for name in splits[split]]
    missing = [str(name) for name in files if not name.is_file()]
    if missing:
        raise PredictionFileError(f"{folder}: README.md lists data files that are missing: {listing(missing)}")
    return files, meta


def _skipped_by_build(folder: Path, split: str) -> int:
    report = folder / "build_report.json"
    if not report.is_file():
        return 0
    try:
        skipped = json.loads(report.read_text(encoding="utf-8")).get("skipped", [])
    except (ValueError, AttributeError):
        raise PredictionFileError(f"{report}: not the JSON report a build writes") from None
    return sum(1 for problem in skipped if problem.get("split") == split)


def read_split(dataset_dir, split: str = "test") -> SplitClips:
    """The clips of ``split`` in a built folder: ids, class words, scenes, scenarios (no frames are read).

    Example: ``clips = read_split("ferv39k"); clips.clip_ids[0], clips.words[0], clips.scenes[0]``.
    """
    import datasets
    import pyarrow.parquet as pq

    folder = Path(dataset_dir)
    files, meta = _split_files(folder, split)
    # Only the metadata columns' feature types are read from the file's datasets metadata, so a folder
    # built with a newer datasets (whose frame column type an older one cannot parse) still reads.
    metadata = pq.read_schema(files[0]).metadata or {}
    try:
        stored = json.loads(metadata.get(b"huggingface", b"{}"))["info"]["features"]
    except (ValueError, KeyError, TypeError):
        stored = {}
    absent = [name for name in METADATA_COLUMNS if name not in stored]
    if absent:
        raise PredictionFileError(f"{files[0]}: no column(s) {', '.join(absent)}; is this a ferv39k-hf build?")
    features = datasets.Features.from_dict({name: stored[name] for name in METADATA_COLUMNS})
    # Streaming reads the listed files as they are now (no cache keyed on the folder's name) and
    # only the metadata columns' chunks of each Parquet file.
    rows = datasets.load_dataset(
        "parquet", data_files={split: [str(name) for name in files]}, split=split, streaming=True,
        columns=list(METADATA_COLUMNS), features=features,
    )
    label, scene, scenario = features["label"], features["scene"], features["scenario"]
    if sorted(label.names) != sorted(CLASS_WORDS) or list(scene.names) != list(SCENES) \
            or list(scenario.names) != list(SCENARIOS):
        raise PredictionFileError(f"{files[0]}: label, scene or scenario names are not FERV39k's")
    synthetic = bool(meta.get("ferv39k_synthetic"))
    clips = SplitClips(folder, split, [], [], [], [], _skipped_by_build(folder, split), synthetic)
    for row in rows:
        clips.clip_ids.append(row["clip_id"])
        clips.words.append(label.int2str(row["label"]))
        clips.scenes.append(scene.int2str(row["scene"]))
        clips.scenarios.append(scenario.int2str(row["scenario"]))
    if not clips.clip_ids:
        raise PredictionFileError(f"{folder}: the {split} split has no clips")
    return clips


def split_names(dataset_dir) -> List[str]:
    """The splits a built folder's card lists, e.g. ``["train", "test"]``."""
    from ferv39k_hf.dataset.card import read_card, split_files

    folder = Path(dataset_dir)
    return list(split_files(read_card(folder), str(folder), str(folder / "README.md")))


def other_splits(dataset_dir, split: str) -> Dict[str, str]:
    """Clip id -> split, for every clip of the folder's splits other than ``split`` (metadata only)."""
    return {clip_id: other for other in split_names(dataset_dir) if other != split
            for clip_id in read_split(dataset_dir, other).clip_ids}
