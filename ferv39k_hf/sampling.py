"""Which frames of a clip to use: the temporal samplers of the published FERV39k protocols.

Every sampler maps a clip length ``num_frames`` (n) and a clip length to produce
``clip_len`` (T) to an int64 array of T frame indices in ``[0, n)``, in temporal
order. They are pure functions of their arguments and a ``numpy.random.Generator``
(only training samplers draw from it), so each can be tested alone and composed
by :mod:`ferv39k_hf.transforms`.

- :func:`segment_indices`: T equal segments; a random frame of each segment in
  training, the segment centre at test (TSN style; the test frames are DFER-CLIP's,
  whose training instead takes the first 16 frames of clips of 17 to 31 frames).
- :func:`window_indices`: T consecutive frames (or every ``stride``-th); a random
  window in training, the centred window at test (VideoMAE / MAE-DFER style).
- :func:`segment_views` / :func:`window_views`: K deterministic temporal views for
  multi-view testing (e.g. the 2 temporal views of MAE-DFER and S2D).

Clips shorter than T are padded by repeating their last frame (about 10% of
FERV39k's face-crop clips have fewer than 16 frames). This module needs numpy only.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = [
    "pad_indices",
    "segment_indices",
    "window_indices",
    "segment_views",
    "window_views",
    "sample_indices",
    "sample_views",
    "SAMPLINGS",
]

SAMPLINGS = ("segment", "window")


def _check(num_frames: int, clip_len: int) -> None:
    if int(num_frames) < 1:
        raise ValueError(f"a clip needs at least one frame, got num_frames={num_frames}")
    if int(clip_len) < 1:
        raise ValueError(f"clip_len must be >= 1, got {clip_len}")


def _need_rng(rng: Optional[np.random.Generator]) -> np.random.Generator:
    if rng is None:
        raise ValueError("training sampling is random: pass rng=numpy.random.default_rng(seed)")
    return rng


def pad_indices(indices: np.ndarray, clip_len: int) -> np.ndarray:
    """``indices`` cut or padded to ``clip_len`` by repeating its last element."""
    indices = np.asarray(indices, dtype=np.int64)
    if indices.size == 0:
        raise ValueError("cannot pad an empty index list")
    if indices.size >= clip_len:
        return indices[:clip_len]
    return np.concatenate([indices, np.full(clip_len - indices.size, indices[-1], dtype=np.int64)])


def _segment_bounds(num_frames: int, clip_len: int) -> np.ndarray:
    """Integer segment edges: segment i is ``[edges[i], edges[i+1])``, never empty when n >= T."""
    return (np.arange(clip_len + 1, dtype=np.int64) * num_frames) // clip_len


def segment_indices(
    num_frames: int, clip_len: int, train: bool, rng: Optional[np.random.Generator] = None
) -> np.ndarray:
    """One frame from each of ``clip_len`` equal segments of the clip.

    Training draws a uniform random frame inside every segment (a random offset per
    segment); test takes each segment's centre frame. A clip shorter than
    ``clip_len`` gives all its frames, then its last frame repeated.
    """
    _check(num_frames, clip_len)
    n, t = int(num_frames), int(clip_len)
    if n < t:
        return pad_indices(np.arange(n), t)
    edges = _segment_bounds(n, t)
    starts, lengths = edges[:-1], np.diff(edges)
    if train:
        return starts + _need_rng(rng).integers(0, lengths)
    # the centre of segment i is (i + 1/2) * n / T (DFER-CLIP's int(tick / 2 + tick * i))
    return (np.arange(t, dtype=np.int64) * 2 + 1) * n // (2 * t)


def window_indices(
    num_frames: int,
    clip_len: int,
    train: bool,
    rng: Optional[np.random.Generator] = None,
    stride: int = 1,
) -> np.ndarray:
    """``clip_len`` frames ``stride`` apart from one window of the clip.

    Training starts the window at a uniform random position; test centres it. A
    clip shorter than the window gives every ``stride``-th frame from the start,
    then its last frame repeated.
    """
    _check(num_frames, clip_len)
    if int(stride) < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    n, t, s = int(num_frames), int(clip_len), int(stride)
    span = (t - 1) * s + 1
    if n < span:
        return pad_indices(np.arange(0, n, s), t)
    start = int(_need_rng(rng).integers(0, n - span + 1)) if train else (n - span) // 2
    return start + np.arange(t, dtype=np.int64) * s


def _view_positions(num_views: int) -> np.ndarray:
    """Fractions in [0, 1] placing ``num_views`` views evenly; one view sits in the middle."""
    if int(num_views) < 1:
        raise ValueError(f"num_views must be >= 1, got {num_views}")
    if num_views == 1:
        return np.array([0.5])
    return np.linspace(0.0, 1.0, int(num_views))


def segment_views(num_frames: int, clip_len: int, num_views: int) -> np.ndarray:
    """``num_views`` segment samplings of one clip, shape (num_views, clip_len).

    View k takes, in every segment, the frame at fraction (k + 1/2) / K of the
    segment, so the views interleave and a single view equals ``segment_indices``
    at test.
    """
    _check(num_frames, clip_len)
    n, t, k = int(num_frames), int(clip_len), int(num_views)
    if k < 1:
        raise ValueError(f"num_views must be >= 1, got {num_views}")
    if n < t:
        return np.tile(pad_indices(np.arange(n), t), (k, 1))
    view = np.arange(k, dtype=np.int64)[:, None]
    segment = np.arange(t, dtype=np.int64)[None, :]
    # floor((i + (k + 1/2) / K) * n / T) in integer arithmetic
    return (2 * k * segment + 2 * view + 1) * n // (2 * k * t)


def window_views(num_frames: int, clip_len: int, num_views: int, stride: int = 1) -> np.ndarray:
    """``num_views`` windows spread evenly from the clip's start to its end, shape (K, T).

    As VideoMAE's multi-view test: window k starts at k * (n - span) / (K - 1); a
    single view is the centred window.
    """
    _check(num_frames, clip_len)
    n, t, s = int(num_frames), int(clip_len), int(stride)
    span = (t - 1) * s + 1
    positions = _view_positions(num_views)
    if n < span:
        return np.tile(window_indices(n, t, train=False, stride=s), (len(positions), 1))
    starts = np.floor(positions * (n - span)).astype(np.int64)
    if len(positions) == 1:
        starts[:] = (n - span) // 2
    return starts[:, None] + np.arange(t, dtype=np.int64)[None, :] * s


def sample_indices(
    sampling: str,
    num_frames: int,
    clip_len: int,
    train: bool,
    rng: Optional[np.random.Generator] = None,
    stride: int = 1,
) -> np.ndarray:
    """Dispatch to :func:`segment_indices` or :func:`window_indices` by name."""
    if sampling == "segment":
        return segment_indices(num_frames, clip_len, train, rng)
    if sampling == "window":
        return window_indices(num_frames, clip_len, train, rng, stride=stride)
    raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")


def sample_views(sampling: str, num_frames: int, clip_len: int, num_views: int, stride: int = 1) -> np.ndarray:
    """Dispatch to :func:`segment_views` or :func:`window_views` by name."""
    if sampling == "segment":
        return segment_views(num_frames, clip_len, num_views)
    if sampling == "window":
        return window_views(num_frames, clip_len, num_views, stride=stride)
    raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
