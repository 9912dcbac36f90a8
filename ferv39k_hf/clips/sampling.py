"""Which frames of a clip to use: the temporal samplers of the published FERV39k protocols.

Every sampler maps a clip's frame count ``frame_count`` (n) and a clip length to produce
``clip_len`` (T) to an int64 array of T frame indices in ``[0, n)``, in temporal
order. They are pure functions of their arguments and a ``numpy.random.Generator``
(only training samplers draw from it), so each can be tested alone and composed
by :mod:`ferv39k_hf.clips.transforms`.

- :func:`segment_indices`: T equal segments over the whole clip; a random frame of
  each segment in training, the segment centre at test (TSN style). Its test
  indices equal DFER-CLIP's; its training draws do not (DFER-CLIP uses
  ``n // T``-frame segments and never sees a clip's tail).
- :func:`window_indices`: T consecutive frames (or every ``stride``-th); a random
  window in training (every start, the last included), the centred window at test
  (VideoMAE style; MAE-DFER differs, see below).
- :func:`segment_views` / :func:`window_views`: K deterministic temporal views for
  multi-view testing.
- :func:`dfer_clip_indices`, :func:`mae_dfer_indices`, :func:`mae_dfer_views`: the
  ``"dfer-clip"`` and ``"mae-dfer"`` presets, index for index what those codebases'
  FERV39k loaders pick (``docs/sampling.md``); the rest of each preset (size, views,
  augmentation) is in :mod:`ferv39k_hf.clips.presets`.

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
    "dfer_clip_indices",
    "mae_dfer_indices",
    "mae_dfer_views",
    "SAMPLINGS",
    "PRESETS",
]

PRESETS = ("dfer-clip", "mae-dfer")
SAMPLINGS = ("segment", "window") + PRESETS


def _check(frame_count: int, clip_len: int) -> None:
    if int(frame_count) < 1:
        raise ValueError(f"a clip needs at least one frame, got frame_count={frame_count}")
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


def _segment_bounds(frame_count: int, clip_len: int) -> np.ndarray:
    """Integer segment edges: segment i is ``[edges[i], edges[i+1])``, never empty when n >= T."""
    return (np.arange(clip_len + 1, dtype=np.int64) * frame_count) // clip_len


def segment_indices(
    frame_count: int, clip_len: int, train: bool, rng: Optional[np.random.Generator] = None
) -> np.ndarray:
    """One frame from each of ``clip_len`` equal segments of the clip.

    Training draws a uniform random frame inside every segment (a random offset per
    segment); test takes each segment's centre frame. A clip shorter than
    ``clip_len`` gives all its frames, then its last frame repeated.
    """
    _check(frame_count, clip_len)
    n, t = int(frame_count), int(clip_len)
    if n < t:
        return pad_indices(np.arange(n), t)
    edges = _segment_bounds(n, t)
    starts, lengths = edges[:-1], np.diff(edges)
    if train:
        return starts + _need_rng(rng).integers(0, lengths)
    # the centre of segment i is (i + 1/2) * n / T (DFER-CLIP's int(tick / 2 + tick * i))
    return (np.arange(t, dtype=np.int64) * 2 + 1) * n // (2 * t)


def window_indices(
    frame_count: int,
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
    _check(frame_count, clip_len)
    if int(stride) < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    n, t, s = int(frame_count), int(clip_len), int(stride)
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


def segment_views(frame_count: int, clip_len: int, num_views: int) -> np.ndarray:
    """``num_views`` segment samplings of one clip, shape (num_views, clip_len).

    View k takes, in every segment, the frame at fraction (k + 1/2) / K of the
    segment, so the views interleave and a single view equals ``segment_indices``
    at test.
    """
    _check(frame_count, clip_len)
    n, t, k = int(frame_count), int(clip_len), int(num_views)
    if k < 1:
        raise ValueError(f"num_views must be >= 1, got {num_views}")
    if n < t:
        return np.tile(pad_indices(np.arange(n), t), (k, 1))
    view = np.arange(k, dtype=np.int64)[:, None]
    segment = np.arange(t, dtype=np.int64)[None, :]
    # floor((i + (k + 1/2) / K) * n / T) in integer arithmetic
    return (2 * k * segment + 2 * view + 1) * n // (2 * k * t)


def window_views(frame_count: int, clip_len: int, num_views: int, stride: int = 1) -> np.ndarray:
    """``num_views`` windows spread evenly from the clip's start to its end, shape (K, T).

    As VideoMAE's multi-view test: window k starts at k * (n - span) / (K - 1); a
    single view is the centred window.
    """
    _check(frame_count, clip_len)
    n, t, s = int(frame_count), int(clip_len), int(stride)
    span = (t - 1) * s + 1
    positions = _view_positions(num_views)
    if n < span:
        return np.tile(window_indices(n, t, train=False, stride=s), (len(positions), 1))
    starts = np.floor(positions * (n - span)).astype(np.int64)
    if len(positions) == 1:
        starts[:] = (n - span) // 2
    return starts[:, None] + np.arange(t, dtype=np.int64)[None, :] * s


def dfer_clip_indices(
    frame_count: int, clip_len: int, train: bool, rng: Optional[np.random.Generator] = None
) -> np.ndarray:
    """DFER-CLIP's frame indices (its ``VideoDataset`` with ``duration=1``), shape (clip_len,).

    Training: segments of ``a = n // T`` frames from the clip's start; segment i gives
    frame ``i * a + r_i`` with ``r_i`` uniform in ``[0, a)``. Frames from ``T * a``
    on are never drawn, so a clip of T to 2T - 1 frames always gives its first T.
    Test: when ``n > T``, ``int(tick / 2 + tick * i)`` with ``tick = n / T`` (float
    arithmetic, as the codebase computes it). Otherwise, and for ``n < T`` in
    training, all frames then the last repeated.

    Example::

        >>> dfer_clip_indices(20, 16, train=True, rng=np.random.default_rng(0)).tolist()[-3:]
        [13, 14, 15]
        >>> dfer_clip_indices(20, 16, train=False).tolist()[:4]
        [0, 1, 3, 4]
    """
    _check(frame_count, clip_len)
    n, t = int(frame_count), int(clip_len)
    if train:
        segment = n // t
        if segment < 1:
            return pad_indices(np.arange(n), t)
        return np.arange(t, dtype=np.int64) * segment + _need_rng(rng).integers(0, segment, size=t)
    if n > t:
        tick = n / float(t)
        return np.array([int(tick / 2.0 + tick * i) for i in range(t)], dtype=np.int64)
    return pad_indices(np.arange(n), t)


def mae_dfer_indices(
    frame_count: int, clip_len: int, train: bool, rng: Optional[np.random.Generator] = None
) -> np.ndarray:
    """MAE-DFER's frame indices (its ``VideoClsDatasetFrame``, sampling rate 1), shape (clip_len,).

    Training: a clip of at most T frames gives all of them, then its last repeated;
    a longer one T consecutive frames starting uniformly in ``[0, n - T - 1]`` (the
    codebase draws the window's end in ``[T, n)``, so the window ending on the last
    frame is never drawn; ``n == T + 1`` always gives frames 0..T-1). Test: the
    first of the codebase's two temporal views, ``mae_dfer_views(n, T, 2)[0]``.

    Example::

        >>> mae_dfer_indices(18, 16, train=True, rng=np.random.default_rng(0))[0] in (0, 1)
        True
    """
    _check(frame_count, clip_len)
    n, t = int(frame_count), int(clip_len)
    if not train:
        return mae_dfer_views(n, t, 2)[0]
    if n <= t:
        return pad_indices(np.arange(n), t)
    start = int(_need_rng(rng).integers(0, n - t))
    return start + np.arange(t, dtype=np.int64)


def mae_dfer_views(frame_count: int, clip_len: int, num_views: int) -> np.ndarray:
    """MAE-DFER's test windows, shape (num_views, clip_len).

    The clip's frames are padded to T by repeating the last; window k starts at
    ``int(k * max(n' - T, 0) / (K - 1))`` with ``n' = max(n, T)``, so 2 views are
    the first and the last T frames. The codebase cannot run with one view (it
    divides by ``K - 1``); here one view is its view 0, the first T frames.

    Example::

        >>> mae_dfer_views(20, 16, 2)[:, 0].tolist()
        [0, 4]
    """
    _check(frame_count, clip_len)
    n, t, k = int(frame_count), int(clip_len), int(num_views)
    if k < 1:
        raise ValueError(f"num_views must be >= 1, got {num_views}")
    frames = pad_indices(np.arange(n), max(n, t))
    step = max(1.0 * (len(frames) - t) / (k - 1), 0) if k > 1 else 0.0
    return np.stack([frames[int(view * step):int(view * step) + t] for view in range(k)])


def sample_indices(
    sampling: str,
    frame_count: int,
    clip_len: int,
    train: bool,
    rng: Optional[np.random.Generator] = None,
    stride: int = 1,
) -> np.ndarray:
    """The ``clip_len`` frame indices of one clip by sampler name, shape (clip_len,) int64.

    Args:
        sampling: ``"segment"``, ``"window"`` (``stride`` applies), ``"dfer-clip"``
            or ``"mae-dfer"`` (see the module docstring).
        frame_count: the clip's frame count n (>= 1).
        clip_len: frames to return, T.
        train: the random training draw (needs ``rng``) or the deterministic test pick.
        rng: a ``numpy.random.Generator``; only training draws from it.

    Example::

        >>> sample_indices("dfer-clip", 40, 16, train=False)[:3].tolist()
        [1, 3, 6]
    """
    if sampling == "segment":
        return segment_indices(frame_count, clip_len, train, rng)
    if sampling == "window":
        return window_indices(frame_count, clip_len, train, rng, stride=stride)
    if sampling == "dfer-clip":
        return dfer_clip_indices(frame_count, clip_len, train, rng)
    if sampling == "mae-dfer":
        return mae_dfer_indices(frame_count, clip_len, train, rng)
    raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")


def sample_views(sampling: str, frame_count: int, clip_len: int, num_views: int, stride: int = 1) -> np.ndarray:
    """``num_views`` deterministic test samplings of one clip by sampler name, shape (num_views, clip_len).

    ``"dfer-clip"`` tests one view (its test indices); asking it for more is an
    error, since the codebase has no multi-view test to reproduce.

    Example::

        >>> sample_views("mae-dfer", 40, 16, 2)[:, 0].tolist()
        [0, 24]
    """
    if sampling == "segment":
        return segment_views(frame_count, clip_len, num_views)
    if sampling == "window":
        return window_views(frame_count, clip_len, num_views, stride=stride)
    if sampling == "dfer-clip":
        if int(num_views) != 1:
            raise ValueError(f"the dfer-clip preset tests one temporal view (as DFER-CLIP does), got {num_views}")
        return dfer_clip_indices(frame_count, clip_len, train=False)[None]
    if sampling == "mae-dfer":
        return mae_dfer_views(frame_count, clip_len, num_views)
    raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
