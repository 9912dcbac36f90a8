"""Temporal samplers: lengths, bounds, padding, test-time centres, determinism, coverage of random draws."""

import subprocess
import sys

import numpy as np
import pytest

from ferv39k_hf.clips.sampling import (
    pad_indices,
    sample_indices,
    sample_views,
    segment_indices,
    segment_views,
    window_indices,
    window_views,
)

LENGTHS = list(range(1, 50)) + [63, 100, 257]
CLIP_LENS = (1, 4, 8, 16)


def rng(seed=0):
    return np.random.default_rng(seed)


@pytest.mark.parametrize("sampler", [segment_indices, window_indices])
@pytest.mark.parametrize("train", [True, False])
def test_length_bounds_dtype_and_order(sampler, train):
    generator = rng()
    for n in LENGTHS:
        for t in CLIP_LENS:
            indices = sampler(n, t, train, generator)
            assert indices.shape == (t,) and indices.dtype == np.int64
            assert indices.min() >= 0 and indices.max() < n
            assert np.all(np.diff(indices) >= 0), "frames stay in temporal order"
            if n >= t:
                assert len(set(indices.tolist())) == t, f"n={n} t={t}: no frame repeats when the clip is long enough"


@pytest.mark.parametrize("sampler", [segment_indices, window_indices])
@pytest.mark.parametrize("train", [True, False])
def test_short_clips_repeat_their_last_frame(sampler, train):
    for n in range(1, 16):
        indices = sampler(n, 16, train, rng())
        assert indices.tolist() == list(range(n)) + [n - 1] * (16 - n)


def test_pad_indices_repeats_last_and_cuts():
    assert pad_indices(np.array([3, 5]), 5).tolist() == [3, 5, 5, 5, 5]
    assert pad_indices(np.array([1, 2, 3]), 2).tolist() == [1, 2]
    with pytest.raises(ValueError):
        pad_indices(np.array([], dtype=np.int64), 3)


def test_segment_test_takes_each_segment_centre():
    for n in range(16, 80):
        indices = segment_indices(n, 16, train=False)
        for i, index in enumerate(indices):
            centre = (i + 0.5) * n / 16
            assert index == int(np.floor(centre))
            assert i * n // 16 <= index < (i + 1) * n / 16, "inside its own segment"
    assert segment_indices(32, 16, train=False).tolist() == list(range(1, 32, 2))


def test_window_test_is_centred_and_consecutive():
    assert window_indices(28, 16, train=False).tolist() == list(range(6, 22))
    assert window_indices(16, 16, train=False).tolist() == list(range(16))
    assert window_indices(40, 8, train=False, stride=2).tolist() == list(range(12, 28, 2))
    for n in range(16, 60):
        indices = window_indices(n, 16, train=False)
        before, after = indices[0], n - 1 - indices[-1]
        assert abs(before - after) <= 1 and np.all(np.diff(indices) == 1)


def test_training_draws_are_deterministic_for_a_seed_and_vary_across_seeds():
    for sampler in (segment_indices, window_indices):
        first = [sampler(40, 16, True, rng(7)).tolist() for _ in range(3)]
        assert first[0] == first[1] == first[2]
        draws = {tuple(sampler(40, 16, True, rng(seed))) for seed in range(20)}
        assert len(draws) > 5


def test_segment_training_covers_every_frame_of_every_segment():
    n, t = 37, 8
    generator = rng(1)
    draws = np.stack([segment_indices(n, t, True, generator) for _ in range(4000)])
    edges = (np.arange(t + 1) * n) // t
    for i in range(t):
        seen, counts = np.unique(draws[:, i], return_counts=True)
        assert seen.tolist() == list(range(edges[i], edges[i + 1])), f"segment {i} hits exactly its own frames"
        expected = len(draws) / len(seen)
        assert np.all(np.abs(counts - expected) < 0.25 * expected), "uniform within the segment"


def test_window_training_start_is_uniform_over_all_positions():
    n, t = 30, 16
    generator = rng(2)
    starts = np.array([window_indices(n, t, True, generator)[0] for _ in range(3000)])
    seen, counts = np.unique(starts, return_counts=True)
    assert seen.tolist() == list(range(n - t + 1))
    assert counts.min() > 0.6 * counts.mean()


def test_training_requires_a_generator_and_inputs_are_checked():
    with pytest.raises(ValueError, match="rng"):
        segment_indices(30, 16, train=True)
    with pytest.raises(ValueError, match="rng"):
        window_indices(30, 16, train=True)
    with pytest.raises(ValueError, match="at least one frame"):
        segment_indices(0, 16, train=False)
    with pytest.raises(ValueError, match="clip_len"):
        window_indices(10, 0, train=False)
    with pytest.raises(ValueError, match="stride"):
        window_indices(10, 4, train=False, stride=0)
    with pytest.raises(ValueError, match="sampling"):
        sample_indices("uniform", 10, 4, train=False)


def test_segment_views():
    views = segment_views(28, 16, 1)
    assert views.shape == (1, 16)
    assert views[0].tolist() == segment_indices(28, 16, train=False).tolist()
    for n in (16, 28, 47, 100):
        views = segment_views(n, 16, 2)
        assert views.shape == (2, 16) and views.min() >= 0 and views.max() < n
        for i in range(16):
            assert np.all((i * n // 16 <= views[:, i]) & (views[:, i] < (i + 1) * n / 16))
        if n >= 32:
            assert np.all(views[0] < views[1]), "the two views interleave inside every segment"
    assert segment_views(5, 16, 3).tolist() == [list(range(5)) + [4] * 11] * 3


def test_window_views_span_the_clip():
    views = window_views(40, 16, 2)
    assert views.tolist() == [list(range(16)), list(range(24, 40))]
    assert window_views(40, 16, 1).tolist() == [window_indices(40, 16, train=False).tolist()]
    three = window_views(40, 16, 3)
    assert three[:, 0].tolist() == [0, 12, 24]
    assert window_views(10, 16, 2).tolist() == [list(range(10)) + [9] * 6] * 2
    with pytest.raises(ValueError):
        window_views(40, 16, 0)


def test_dispatchers_match_the_samplers():
    assert sample_indices("segment", 30, 16, False).tolist() == segment_indices(30, 16, False).tolist()
    assert sample_indices("window", 30, 16, True, rng(3)).tolist() == window_indices(30, 16, True, rng(3)).tolist()
    assert sample_views("window", 30, 8, 2, stride=2).tolist() == window_views(30, 8, 2, stride=2).tolist()
    assert sample_views("segment", 30, 8, 2).tolist() == segment_views(30, 8, 2).tolist()


def test_sampling_needs_numpy_only():
    code = "import sys, ferv39k_hf.clips.sampling; print('torch' in sys.modules, 'PIL' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
