"""DFEW's and MAFW's rows: their columns, one row per clip, and a fold's train/test views over the same table."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple, Union

import datasets

from ferv39k_hf.dfer_taxonomy import CLIPS_SPLIT, FOLDS, facts

CAPTION_COLUMNS = ("caption_en", "caption_zh")
FOLD_COLUMNS = ("test_fold", "train_folds")


def _list_of(feature: Any) -> Any:
    list_type = getattr(datasets, "List", None)  # datasets < 4 spells it Sequence
    return list_type(feature) if list_type is not None else datasets.Sequence(feature)


def dfer_features(dataset: str, config: str, label_order: Optional[str] = None,
                  captions: bool = False) -> datasets.Features:
    """The columns of a DFEW or MAFW config, frames (or video) last."""
    info = facts(dataset)
    if config not in info.configs:
        raise ValueError(f"unknown {info.title} config {config!r}; choose one of {', '.join(info.configs)}")
    names = info.label_names(label_order)
    columns: Dict[str, Any] = {"clip_id": datasets.Value("string")}
    if config == "compound":
        columns["labels"] = _list_of(datasets.ClassLabel(names=names))
        columns["compound"] = datasets.Value("string")
    else:
        columns["label"] = datasets.ClassLabel(names=names)
    columns["num_frames"] = datasets.Value("int32")
    columns["test_fold"] = datasets.Value("int8")
    columns["train_folds"] = _list_of(datasets.Value("int8"))
    if captions:
        columns.update({name: datasets.Value("string") for name in CAPTION_COLUMNS})
    if config == "videos":
        columns["video"] = {"bytes": datasets.Value("binary"), "path": datasets.Value("string")}
    else:
        columns["frames"] = _list_of(datasets.Image())
    return datasets.Features(columns)


def make_dfer_example(record: Any, fields: Dict[str, Any], dataset: str, config: str,
                      label_order: Optional[str] = None, captions: bool = False) -> Dict[str, Any]:
    """A row from a :class:`~ferv39k_hf.archive.dfer_folds.FoldClip` and what ClipReader read."""
    names = facts(dataset).label_names(label_order)
    example: Dict[str, Any] = {"clip_id": record.clip_id}
    if config == "compound":
        example["labels"] = [names.index(word) for word in record.labels]
        example["compound"] = record.label
    else:
        example["label"] = names.index(record.label)
    example["num_frames"] = fields["num_frames"]
    example["test_fold"] = record.test_fold
    example["train_folds"] = list(record.train_folds)
    if captions:
        example.update(zip(CAPTION_COLUMNS, record.captions))
    example.update(fields)
    return example


def _clips(dataset: Union[datasets.Dataset, datasets.DatasetDict]) -> datasets.Dataset:
    if isinstance(dataset, datasets.DatasetDict):
        if CLIPS_SPLIT in dataset:
            return dataset[CLIPS_SPLIT]
        if len(dataset) == 1:
            return next(iter(dataset.values()))
        raise ValueError(f"fold() needs the {CLIPS_SPLIT!r} split of a built DFEW or MAFW folder; "
                         f"this DatasetDict has {sorted(dataset)}")
    if isinstance(dataset, datasets.Dataset):
        return dataset
    raise TypeError(f"fold() takes a Dataset or DatasetDict, not {type(dataset).__name__}")


def fold_indices(dataset: Union[datasets.Dataset, datasets.DatasetDict], k: int) -> Tuple[List[int], List[int]]:
    """Row indices of fold ``k``'s train and test sets, read from the fold columns only (no frame is read)."""
    clips = _clips(dataset)
    missing = [c for c in FOLD_COLUMNS if c not in clips.column_names]
    if missing:
        raise ValueError(f"no {' or '.join(missing)} column: fold() needs a DFEW or MAFW folder built by "
                         "'ferv39k-hf build' (FERV39k has no folds)")
    if k not in FOLDS:
        raise ValueError(f"fold must be one of {', '.join(map(str, FOLDS))}, got {k!r}")
    table = clips.select_columns(list(FOLD_COLUMNS)).with_format("arrow")[:]
    tests, trains = table.column("test_fold").to_pylist(), table.column("train_folds").to_pylist()
    test = [i for i, fold in enumerate(tests) if fold == k]
    train = [i for i, folds in enumerate(trains) if folds and k in folds]
    return train, test


def fold(dataset: Union[datasets.Dataset, datasets.DatasetDict], k: int) -> datasets.DatasetDict:
    """Fold ``k`` (1..5) of a built DFEW or MAFW folder as a DatasetDict with ``train`` and ``test``.

    Both are index views (``Dataset.select``) over the same Arrow table: no frame is copied.

    Args:
        dataset: what ``datasets.load_dataset(DIR)`` returns for a folder built by ``ferv39k-hf build``
            from a DFEW or MAFW archive (or its ``clips`` split).
        k: the fold, 1..5, as the official lists number them (``set_k``).

    Returns:
        ``DatasetDict(train=..., test=...)``: exactly the clips of the fold's train and test lists.

    Raises:
        ValueError: no fold columns (not a DFEW/MAFW build) or ``k`` outside 1..5.

    Example::

        ds = datasets.load_dataset("dfew")
        split = ferv39k_hf.fold(ds, 1)     # split["train"], split["test"]
    """
    clips = _clips(dataset)
    train, test = fold_indices(clips, k)
    return datasets.DatasetDict({"train": clips.select(train), "test": clips.select(test)})
