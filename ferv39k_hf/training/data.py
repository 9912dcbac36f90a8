"""The data side of a training run: a built folder or an archive as splits, or a built folder as streams."""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from ferv39k_hf.archive.outdirs import check_outside_archive
from ferv39k_hf.clips.presets import get_preset
from ferv39k_hf.clips.sampling import SAMPLINGS
from ferv39k_hf.dataset import streaming

logger = logging.getLogger(__name__)

__all__ = ["SAMPLINGS", "ClipData", "load_clips", "load_streams", "parse_test_views", "preset_size", "subset",
           "check_output_dir", "streamed_max_steps"]


@dataclass
class ClipData:
    """Splits of one dataset and what its card says: ``splits`` (name -> split), ``labels`` (class words in
    id order), ``dataset_config`` (faces, scenes, videos), ``label_order``, ``rows`` (card row counts, streams)."""

    splits: Dict[str, Any]
    labels: list
    dataset_config: str
    label_order: str
    rows: Optional[Dict[str, int]] = None
    dataset: str = "ferv39k"  # or dfew, mafw (their builds: one table, the folds as columns)
    fold: Optional[int] = None  # DFEW/MAFW: the fold whose train and test sets these splits are


def _labels(splits: Dict[str, Any], eval_split: str) -> list:
    if eval_split not in splits:
        raise ValueError(f"the dataset has no {eval_split!r} split: {sorted(splits)}")
    return list(splits["train" if "train" in splits else eval_split].features["label"].names)


def load_clips(dataset_dir: Optional[str] = None, archive_dir: Optional[str] = None, *, eval_split: str = "test",
               dataset_config: str = "faces", label_order: str = "alphabetical",
               validation_fraction: float = 0.0, fold: Optional[int] = None) -> ClipData:
    """A folder made by ``ferv39k-hf build`` (``dataset_dir``, its card's config and label order) or a raw
    archive (``archive_dir``, through the builder) as map-style splits with undecoded frames.

    A DFEW or MAFW build holds every clip once, with the official folds as columns: ``fold`` (1..5) picks
    fold k's ``train`` and ``test`` (:func:`ferv39k_hf.fold`, no frame copied); it is required there and
    refused for FERV39k, which has one official split."""
    import datasets

    import ferv39k_hf
    from ferv39k_hf.archive.dfer_layout import detect_dataset

    if dataset_dir:
        card = streaming.read_card(dataset_dir)
        dataset_config = card.get("ferv39k_config", dataset_config)
        label_order = card.get("ferv39k_label_order", label_order)
        dataset = card.get("ferv39k_dataset", "ferv39k")
    else:
        dataset = detect_dataset(archive_dir) or "ferv39k"
    where = dataset_dir or archive_dir
    if dataset != "ferv39k" and fold is None:
        raise ValueError(f"{where}: {dataset.upper()} has five official folds and no single split: pass --fold K "
                         "(1..5) or --fold all")
    if dataset == "ferv39k" and fold is not None:
        raise ValueError(f"{where}: --fold is for DFEW and MAFW; FERV39k has one official train/test split")
    if dataset_dir:
        splits = datasets.load_dataset(dataset_dir)
        splits = splits if fold is None else ferv39k_hf.fold(splits, fold)
    elif dataset == "ferv39k":
        splits = ferv39k_hf.load(archive_dir, config=dataset_config, label_order=label_order,
                                 validation_fraction=validation_fraction)
    else:  # the dataset's own default config and label order (FERV39k's do not apply)
        from ferv39k_hf.dfer_taxonomy import facts

        dataset_config, label_order = facts(dataset).configs[0], facts(dataset).default_order
        splits = ferv39k_hf.load(archive_dir, dataset=dataset, fold=fold)
    splits = ferv39k_hf.undecoded_frames(splits)
    return ClipData(dict(splits), _labels(splits, eval_split), dataset_config, label_order, dataset=dataset,
                    fold=fold)


def load_streams(dataset_dir: str, *, eval_split: str = "test", train: bool = True, shuffle_buffer: int = 1024,
                 seed: int = 0, max_train_samples: Optional[int] = None, max_eval_samples: Optional[int] = None,
                 rank: int = 0, world_size: int = 1) -> ClipData:
    """This process's share of ``eval_split`` (and of ``train``, shuffled) of a built folder, local or an fsspec
    URL, as streams (:func:`ferv39k_hf.dataset.streaming.stream`); ``rows`` holds the card's rows per split."""
    card = streaming.read_card(dataset_dir)
    rows = streaming.card_row_counts(card, f"{dataset_dir}/README.md")
    node = dict(rank=rank, world_size=world_size, card=card)
    splits = {eval_split: streaming.stream(dataset_dir, eval_split, max_rows=max_eval_samples, **node)}
    if train:
        splits["train"] = streaming.stream(dataset_dir, "train", shuffle_buffer=shuffle_buffer, seed=seed,
                                           max_rows=max_train_samples, **node)
    return ClipData(splits, _labels(splits, eval_split), card.get("ferv39k_config", "faces"),
                    card.get("ferv39k_label_order", "alphabetical"), rows)


def streamed_max_steps(args: Any, steps_per_epoch: int) -> int:
    """``args.max_steps`` if set, else ``args.num_train_epochs`` epochs of ``steps_per_epoch`` (at least 1)."""
    if args.max_steps > 0:
        return args.max_steps
    return max(1, int(math.ceil(args.num_train_epochs * steps_per_epoch)))


def parse_test_views(sampling: str, test_views: Optional[str] = None) -> Tuple[int, int]:
    """(temporal, spatial) views per test clip: ``test_views`` (``"2x2"``), else the preset's, else (1, 1).

    Raises ValueError for an unknown ``sampling`` (one of :data:`SAMPLINGS`) or a malformed ``test_views``.
    """
    if sampling not in SAMPLINGS:
        raise ValueError(f"--sampling must be one of {SAMPLINGS}, got {sampling!r}")
    preset = get_preset(sampling)
    if test_views is None:
        return (preset.temporal_views, preset.spatial_views) if preset else (1, 1)
    views = test_views.lower().split("x")
    if len(views) != 2 or not all(v.isdigit() and int(v) > 0 for v in views):
        raise ValueError(f"--test_views must look like 2x2, got {test_views!r}")
    return int(views[0]), int(views[1])


def preset_size(sampling: str) -> Optional[int]:
    """The input size a codebase preset fixes (``mae-dfer``: 160), or None for ``segment`` / ``window``."""
    preset = get_preset(sampling)
    return preset.size if preset else None


def subset(split: Any, limit: Optional[int], seed: int) -> Any:
    """A seeded random ``limit`` rows of a map-style ``split`` (all of it when ``limit`` is None or larger)."""
    return split if limit is None or limit >= len(split) else split.shuffle(seed=seed).select(range(limit))


def check_output_dir(output_dir: "os.PathLike[str] | str", *data_dirs: Optional[str]) -> None:
    """Refuse an ``output_dir`` inside (or holding) one of the local ``data_dirs``: checkpoints never go into data."""
    for data_dir in data_dirs:
        if data_dir and not streaming.is_remote(data_dir):
            check_outside_archive(output_dir, data_dir, "--output_dir")
