"""Multi-view evaluation: average each clip's views (softmax mean), and read labels and scenes from clip ids."""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from ferv39k_hf.metrics.scoring import ScoringError, as_numpy, checked_class_ids
from ferv39k_hf.taxonomy import SCENE_TO_SCENARIO


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def _view_groups(clip_ids, count: int, views_per_clip: Optional[int]) -> Tuple[list, np.ndarray, np.ndarray]:
    ids = list(clip_ids)
    if len(ids) != count:
        raise ScoringError(f"{len(ids)} clip ids but {count} rows of scores; give one clip id per view")
    if count == 0:
        raise ScoringError("no views given: there is nothing to average")
    unique, inverse, counts = np.unique(np.asarray(ids), return_inverse=True, return_counts=True)
    if views_per_clip is not None and np.any(counts != views_per_clip):
        odd = int(np.flatnonzero(counts != views_per_clip)[0])
        raise ScoringError(f"clip {unique[odd]} has {counts[odd]} views, expected {views_per_clip}")
    return unique.tolist(), inverse.reshape(-1), counts


def average_views(
    clip_ids: Sequence[str], scores, *, inputs: str = "logits", views_per_clip: Optional[int] = None
) -> Tuple[List[str], np.ndarray]:
    """Mean softmax probabilities per clip over its views (temporal segments x spatial crops).

    ``scores`` has one row per view, ``clip_ids`` names each row's clip.
    ``inputs="logits"`` applies a softmax first; ``inputs="probs"`` takes rows
    that already sum to 1. Returns the sorted unique clip ids and a
    (clips, classes) array; take ``argmax(axis=1)`` for predictions. The
    result does not depend on the order of the views.

    Example:
        >>> ids, probs = average_views(["b", "a", "b", "a"], [[2.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 2.0]])
        >>> ids, probs.argmax(axis=1).tolist()
        (['a', 'b'], [1, 0])
    """
    if inputs not in ("logits", "probs"):
        raise ScoringError(f"inputs must be 'logits' or 'probs', got {inputs!r}")
    if hasattr(scores, "detach"):  # torch: bfloat16 has no numpy dtype
        scores = scores.detach().float()
    values = as_numpy(scores).astype(np.float64)
    if values.ndim != 2 or values.shape[1] < 2:
        raise ScoringError(f"scores must be (views, classes) with at least 2 classes, got shape {values.shape}")
    bad_rows = np.flatnonzero(~np.isfinite(values).all(axis=1))
    if bad_rows.size:
        raise ScoringError(f"scores row {bad_rows[0]} (clip {list(clip_ids)[bad_rows[0]]}) is not finite")
    if inputs == "probs":
        bad = np.flatnonzero((values < 0).any(axis=1) | (np.abs(values.sum(axis=1) - 1) > 1e-4))
        if bad.size:
            raise ScoringError(
                f"scores row {bad[0]} is not a probability vector (sum {values[bad[0]].sum():.6f}); "
                "pass inputs='logits' for raw model outputs"
            )
    probs = values if inputs == "probs" else _softmax(values)
    unique, inverse, counts = _view_groups(clip_ids, len(values), views_per_clip)
    sums = np.zeros((len(unique), values.shape[1]))
    np.add.at(sums, inverse, probs)
    return unique, sums / counts[:, None]


def clip_labels(clip_ids: Sequence[str], labels) -> Tuple[List[str], np.ndarray]:
    """One label per clip from per-view labels, in :func:`average_views`' order; views must agree.

    Returns the sorted unique clip ids and an int64 array of one label each.

    Example:
        >>> ids, labels = clip_labels(["b", "a", "b", "a"], [3, 1, 3, 1])
        >>> ids, labels.tolist()
        (['a', 'b'], [1, 3])
    """
    values = checked_class_ids(labels, "labels")
    unique, inverse, _ = _view_groups(clip_ids, len(values), None)
    per_clip = np.zeros(len(unique), dtype=np.int64)
    per_clip[inverse] = values  # one view's label per clip; all views are checked against it below
    clash = np.flatnonzero(per_clip[inverse] != values)
    if clash.size:
        clip = inverse[clash[0]]
        seen = sorted(set(values[inverse == clip].tolist()))
        raise ScoringError(f"views of clip {unique[clip]} disagree on the label: {seen}")
    return unique, per_clip


def scenes_from_clip_ids(clip_ids: Sequence[str]) -> List[str]:
    """The scene of each "Scene/Emotion/NNNN" clip id, checked against the 22 scenes.

    Example:
        >>> scenes_from_clip_ids(["Crime/Angry/0063", "War/Sad/0001"])
        ['Crime', 'War']
    """
    scenes = []
    for index, clip_id in enumerate(clip_ids):
        scene = str(clip_id).split("/")[0]
        if scene not in SCENE_TO_SCENARIO:
            raise ScoringError(f"clip_ids[{index}] = {clip_id!r} does not start with a FERV39k scene")
        scenes.append(scene)
    return scenes
