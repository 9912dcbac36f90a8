"""datasets helpers: read a frames column without decoding its images, so the transform decodes only sampled frames."""

from __future__ import annotations

import dataclasses
from typing import Any


def _without_image_decoding(feature: Any) -> Any:
    """``feature`` with every Image() inside it set to decode=False, containers kept as they are."""
    from datasets import Image as ImageFeature

    if isinstance(feature, ImageFeature):
        return dataclasses.replace(feature, decode=False)
    if isinstance(feature, list):
        return [_without_image_decoding(feature[0])]
    if isinstance(feature, dict):
        return {key: _without_image_decoding(value) for key, value in feature.items()}
    if dataclasses.is_dataclass(feature) and hasattr(feature, "feature"):  # Sequence (2.x-3.x), List (4.0+)
        return dataclasses.replace(feature, feature=_without_image_decoding(feature.feature))
    return feature


def undecoded_frames(dataset: Any, column: str = "frames") -> Any:
    """``dataset`` with its frames read as undecoded ``{"bytes", "path"}`` dicts.

    Works on ``Dataset``, ``DatasetDict``, ``IterableDataset`` and
    ``IterableDatasetDict`` of datasets 2.x to 5.x; a dataset without the column
    (the videos config) or without known features is returned unchanged. Then
    :class:`VideoClipTransform` decodes only the frames it samples.

    Args:
        dataset: a FERV39k dataset (or dict of splits) whose ``column`` is a list of Image.
        column: the frame column (``"frames"``).

    Returns:
        The same kind of object, its ``column`` typed ``Image(decode=False)``: rows
        give ``{"bytes": JPEG bytes, "path": str or None}`` per frame. No data is
        copied for a map-style ``Dataset``.

    Example::

        ds = ferv39k_hf.undecoded_frames(datasets.load_dataset("ferv39k"))
        ds["train"][0]["frames"][0].keys()     # dict_keys(['bytes', 'path'])
    """
    if hasattr(dataset, "keys") and hasattr(dataset, "values") and not hasattr(dataset, "features"):
        return type(dataset)({split: undecoded_frames(part, column) for split, part in dataset.items()})
    features = getattr(dataset, "features", None)
    if features is None or column not in features:
        return dataset
    target = _without_image_decoding(features[column])
    if target == features[column]:
        return dataset
    relabelled = _relabel_in_place(dataset, column, target)
    return relabelled if relabelled is not None else dataset.cast_column(column, target)


def _relabel_in_place(dataset: Any, column: str, target: Any) -> Any:
    """A copy of a map-style ``dataset`` whose ``column`` reads as ``target``, the Arrow data shared.

    ``Dataset.cast_column`` rewrites the whole table when the Image sits inside a
    list (tens of GB for FERV39k), yet the decode flag does not change the Arrow
    storage. Returns None where the datasets internals differ, so the caller
    falls back to the public cast.
    """
    import copy
    import hashlib

    from datasets import Dataset

    if not isinstance(dataset, Dataset) or not hasattr(dataset, "_info") or not hasattr(dataset, "_fingerprint"):
        return None
    if target.__class__ is not dataset.features[column].__class__:
        return None
    relabelled = copy.deepcopy(dataset)  # datasets' deepcopy re-opens memory-mapped tables, it copies no data
    relabelled._info.features[column] = target
    relabelled._fingerprint = hashlib.sha256(f"{dataset._fingerprint}/undecoded/{column}".encode()).hexdigest()[:16]
    return relabelled
