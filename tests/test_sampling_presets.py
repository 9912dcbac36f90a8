"""The dfer-clip and mae-dfer presets, index for index against tables worked out from the codebases' loaders.

The expected tables below are written from the formulas of ferv39k-facts section 8
(DFER-CLIP's ``_get_train_indices``/``_get_test_indices`` with ``duration=1``;
MAE-DFER's ``VideoClsDatasetFrame.load_video`` and its 2x2 test), in exact integer or
fraction arithmetic, not by calling the package; a few rows are spelled out by hand.
"""

import math
from fractions import Fraction

import numpy as np
import pytest

from ferv39k_hf.clips.sampling import (
    SAMPLINGS,
    dfer_clip_indices,
    mae_dfer_indices,
    mae_dfer_views,
    sample_indices,
    sample_views,
)

T = 16
LENGTHS = range(1, 61)


def padded(n, length=T):
    """All n frames, then the last repeated up to ``length``."""
    return list(range(n)) + [n - 1] * (length - n)


# --- expected tables, independent of the implementation ---------------------------------------------


def dfer_clip_test_expected(n):
    if n <= T:
        return padded(n)
    # int(tick / 2 + tick * i), tick = n / T, is floor((2i + 1) * n / 2T) in exact arithmetic
    return [math.floor(Fraction((2 * i + 1) * n, 2 * T)) for i in range(T)]


def dfer_clip_train_support(n):
    """Per position, every frame DFER-CLIP's training can pick."""
    a = n // T
    if a == 0:
        return [{frame} for frame in padded(n)]
    return [set(range(i * a, i * a + a)) for i in range(T)]


def mae_dfer_train_starts(n):
    """Window starts MAE-DFER's training can draw (n > T): end uniform in [T, n), start = end - T."""
    return set(range(0, n - T)) if n > T else None


def mae_dfer_test_expected(n):
    frames = padded(n, max(n, T))
    last = len(frames) - T  # temporal_step with 2 views; 0 when the clip is padded
    return [frames[0:T], frames[last:last + T]]


DFER_CLIP_TEST_ROWS = {
    1: [0] * 16,
    5: [0, 1, 2, 3] + [4] * 12,
    16: list(range(16)),
    17: [0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16],
    20: [0, 1, 3, 4, 5, 6, 8, 9, 10, 11, 13, 14, 15, 16, 18, 19],
    31: [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30],
    32: [1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31],
    47: [1, 4, 7, 10, 13, 16, 19, 22, 24, 27, 30, 33, 36, 39, 42, 45],
    60: [1, 5, 9, 13, 16, 20, 24, 28, 31, 35, 39, 43, 46, 50, 54, 58],
}

MAE_DFER_TEST_ROWS = {  # (first view, second view)
    1: ([0] * 16, [0] * 16),
    5: ([0, 1, 2, 3] + [4] * 12, [0, 1, 2, 3] + [4] * 12),
    16: (list(range(16)), list(range(16))),
    17: (list(range(16)), list(range(1, 17))),
    20: (list(range(16)), list(range(4, 20))),
    31: (list(range(16)), list(range(15, 31))),
    32: (list(range(16)), list(range(16, 32))),
    47: (list(range(16)), list(range(31, 47))),
    60: (list(range(16)), list(range(44, 60))),
}


class EdgeGenerator:
    """A stand-in for numpy's Generator that returns the lowest (or highest) value every draw can take."""

    def __init__(self, highest):
        self.highest, self.calls = highest, 0

    def integers(self, low, high=None, size=None):
        self.calls += 1
        low, high = (0, low) if high is None else (low, high)
        value = np.asarray(high) - 1 if self.highest else np.asarray(low)
        return np.broadcast_to(value, size).copy() if size is not None else int(value)


class NoDraws:
    def integers(self, *args, **kwargs):
        raise AssertionError("this clip length must not draw")


# --- DFER-CLIP ----------------------------------------------------------------------------------------


def test_dfer_clip_test_indices_for_every_length():
    for n in LENGTHS:
        assert dfer_clip_indices(n, T, train=False).tolist() == dfer_clip_test_expected(n), f"n={n}"
        assert sample_indices("dfer-clip", n, T, train=False).tolist() == dfer_clip_test_expected(n)
        assert sample_views("dfer-clip", n, T, 1).tolist() == [dfer_clip_test_expected(n)]
    for n, row in DFER_CLIP_TEST_ROWS.items():
        assert dfer_clip_indices(n, T, train=False).tolist() == row, f"hand-written row n={n}"
        assert dfer_clip_test_expected(n) == row


def test_dfer_clip_training_support_for_every_length():
    generator = np.random.default_rng(0)
    for n in LENGTHS:
        support = dfer_clip_train_support(n)
        lowest = dfer_clip_indices(n, T, True, EdgeGenerator(highest=False)).tolist()
        highest = dfer_clip_indices(n, T, True, EdgeGenerator(highest=True)).tolist()
        assert lowest == [min(s) for s in support] and highest == [max(s) for s in support], f"n={n}"
        draws = np.stack([sample_indices("dfer-clip", n, T, True, generator) for _ in range(150)])
        assert draws.dtype == np.int64 and draws.shape == (150, T)
        for i in range(T):
            assert set(draws[:, i].tolist()) == support[i], f"n={n} position {i}"


def test_dfer_clip_trains_on_the_first_16_frames_for_17_to_31():
    generator = np.random.default_rng(1)
    for n in range(16, 32):
        for _ in range(20):
            assert dfer_clip_indices(n, T, True, generator).tolist() == list(range(16)), f"n={n}"
    # 32 frames: pairs; the tail past T * (n // T) is never drawn
    draws = np.stack([dfer_clip_indices(47, T, True, generator) for _ in range(300)])
    assert draws.max() == 31 and draws.min() == 0


def test_dfer_clip_short_clips_draw_nothing():
    for n in range(1, T):
        assert dfer_clip_indices(n, T, True, NoDraws()).tolist() == padded(n)


def test_dfer_clip_has_one_test_view():
    with pytest.raises(ValueError, match="one temporal view"):
        sample_views("dfer-clip", 40, T, 2)


# --- MAE-DFER -----------------------------------------------------------------------------------------


def test_mae_dfer_test_views_for_every_length():
    for n in LENGTHS:
        expected = mae_dfer_test_expected(n)
        assert mae_dfer_views(n, T, 2).tolist() == expected, f"n={n}"
        assert sample_views("mae-dfer", n, T, 2).tolist() == expected
        assert sample_indices("mae-dfer", n, T, train=False).tolist() == expected[0], "one view is view 0"
    for n, (first, second) in MAE_DFER_TEST_ROWS.items():
        assert mae_dfer_views(n, T, 2).tolist() == [first, second], f"hand-written row n={n}"


def test_mae_dfer_more_test_views_follow_its_step():
    # test_num_segment=3: starts int(k * (n - T) / 2)
    assert mae_dfer_views(25, T, 3)[:, 0].tolist() == [0, 4, 9]
    assert mae_dfer_views(25, T, 1).tolist() == [list(range(16))]
    with pytest.raises(ValueError):
        mae_dfer_views(25, T, 0)


def test_mae_dfer_training_windows_for_every_length():
    generator = np.random.default_rng(2)
    for n in LENGTHS:
        if n <= T:
            assert mae_dfer_indices(n, T, True, NoDraws()).tolist() == padded(n), f"n={n}"
            continue
        starts = mae_dfer_train_starts(n)
        lowest = mae_dfer_indices(n, T, True, EdgeGenerator(highest=False)).tolist()
        highest = mae_dfer_indices(n, T, True, EdgeGenerator(highest=True)).tolist()
        assert lowest == list(range(min(starts), min(starts) + T)), f"n={n}"
        assert highest == list(range(max(starts), max(starts) + T)), f"n={n}: the last window is n-17"
        seen = set()
        for _ in range(40 * len(starts)):
            window = sample_indices("mae-dfer", n, T, True, generator)
            assert np.all(np.diff(window) == 1), "consecutive frames"
            seen.add(int(window[0]))
        assert seen == starts, f"n={n}"
        assert n - 1 not in {s + T - 1 for s in seen}, "the window ending on the last frame is never drawn"


def test_mae_dfer_n_equal_17_is_always_the_first_16():
    assert mae_dfer_train_starts(17) == {0}
    generator = np.random.default_rng(3)
    assert all(mae_dfer_indices(17, T, True, generator).tolist() == list(range(16)) for _ in range(20))


def test_presets_are_named_samplings_and_need_a_generator_to_train():
    assert {"dfer-clip", "mae-dfer"} <= set(SAMPLINGS)
    with pytest.raises(ValueError, match="rng"):
        sample_indices("dfer-clip", 40, T, train=True)
    with pytest.raises(ValueError, match="rng"):
        sample_indices("mae-dfer", 40, T, train=True)
    with pytest.raises(ValueError, match="at least one frame"):
        sample_indices("mae-dfer", 0, T, train=False)


def test_where_the_package_samplers_agree_and_differ_as_documented():
    from ferv39k_hf.clips.sampling import segment_indices, window_indices, window_views

    for n in LENGTHS:
        # docs/sampling.md: segment's test indices are DFER-CLIP's, window's 2 views are MAE-DFER's
        assert segment_indices(n, T, train=False).tolist() == dfer_clip_test_expected(n)
        assert window_views(n, T, 2).tolist() == mae_dfer_test_expected(n)
    # ... but their training draws differ: segment reaches the tail and jitters 17..31-frame clips,
    # window draws the last window too
    generator = np.random.default_rng(4)
    segment_draws = np.stack([segment_indices(20, T, True, generator) for _ in range(300)])
    assert segment_draws.max() == 19 and len({tuple(d) for d in segment_draws}) > 1
    window_starts = {int(window_indices(20, T, True, generator)[0]) for _ in range(300)}
    assert window_starts == set(range(0, 5)) and mae_dfer_train_starts(20) == set(range(0, 4))


def test_docstring_examples_hold():
    import doctest

    import ferv39k_hf.clips.presets
    import ferv39k_hf.clips.sampling

    for module in (ferv39k_hf.clips.sampling, ferv39k_hf.clips.presets):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__
