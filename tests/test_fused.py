"""The C kernel (ferv39k_hf.clips.ckernel): torch's antialiased bilinear resize, the flip and the
normalisation in one pass, checked against torch in float64, and its place in VideoClipTransform."""

import platform
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_transforms import clip_bytes, frames_batch

from ferv39k_hf.clips import geometry
from ferv39k_hf.clips.geometry import IMAGENET_MEAN, IMAGENET_STD
from ferv39k_hf.clips.transforms import VideoClipTransform

ONE_GREY_LEVEL = 1.0 / (255.0 * min(IMAGENET_STD)) + 1e-5
SCALE = tuple(1.0 / (255.0 * s) for s in IMAGENET_STD)
BIAS = tuple(-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD))


def test_the_extension_is_built_where_a_c_compiler_is():
    if not (shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")):
        pytest.skip("no C compiler here: the install falls back to the torch path")
    assert geometry.fused_kernel_available(), "setup.py builds ferv39k_hf.clips.ckernel wherever a C compiler is found"


fused = pytest.importorskip("ferv39k_hf.clips.ckernel")


def reference(frames, indices, box, flip, size):
    """torch's antialiased bilinear resize of the crop in float64, then flip and normalisation."""
    x0, y0, x1, y1 = box
    crop = torch.from_numpy(frames[indices, y0:y1, x0:x1]).permute(0, 3, 1, 2).double()
    resized = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    if flip:
        resized = resized.flip(3)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)
    return ((resized / 255.0 - mean) / std).permute(0, 2, 3, 1)


def run(frames, indices, box, flip, size):
    out = np.full((len(indices), size, size, 3), np.nan, dtype=np.float32)
    fused.crop_resize_normalise(frames, frames.shape[:3], indices, box, flip, size, SCALE, BIAS, out)
    return out


@pytest.mark.parametrize("box,size", [
    ((5, 3, 41, 45), 64),     # upsampling, not square
    ((0, 0, 64, 48), 64),     # the whole frame, wider than tall
    ((2, 1, 62, 47), 23),     # downsampling by 2.6 and 2, odd output
    ((10, 10, 58, 34), 24),   # downsampling one way (2x), none the other
    ((7, 9, 8, 40), 16),      # one pixel wide
    ((0, 0, 64, 48), 200),    # large upsampling
    ((20, 20, 52, 44), 1),    # one output pixel
])
@pytest.mark.parametrize("flip", [False, True])
def test_matches_torch_antialiased_bilinear_in_float64(box, size, flip):
    frames = np.random.default_rng(0).integers(0, 256, (4, 48, 64, 3), dtype=np.uint8)
    indices = [2, 0, 3, 2]  # repeats and any order
    got = run(frames, indices, box, flip, size)
    expected = reference(frames, indices, box, flip, size).numpy()
    assert np.isfinite(got).all(), "every output value is written"
    np.testing.assert_allclose(got, expected, atol=2e-5, rtol=0)


def random_case(rng, max_side, max_size):
    """Three random frames of up to ``max_side`` pixels a side, a box inside them and an output size."""
    height, width = (int(v) for v in rng.integers(1, max_side, 2))
    frames = rng.integers(0, 256, (3, height, width, 3), dtype=np.uint8)
    x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
    box = (x0, y0, int(rng.integers(x0 + 1, width + 1)), int(rng.integers(y0 + 1, height + 1)))
    return frames, box, int(rng.integers(1, max_size))


def test_random_frame_sizes_boxes_and_output_sizes():
    """Many shapes the parametrised cases miss, from 1-pixel frames up, each against torch in float64."""
    rng = np.random.default_rng(7)
    for trial in range(60):
        frames, box, size = random_case(rng, max_side=50, max_size=80)
        flip, indices = bool(trial % 2), rng.integers(0, 3, int(rng.integers(1, 4))).tolist()
        got = run(frames, indices, box, flip, size)
        expected = reference(frames, indices, box, flip, size).numpy()
        np.testing.assert_allclose(got, expected, atol=2e-5, rtol=0, err_msg=f"{frames.shape} {box} -> {size}")


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as info:
            return next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), [])
    except OSError:
        return None


@pytest.fixture
def portable_pass():
    """The kernel with its AVX2 horizontal pass switched off for one test."""
    fused.simd(False)
    yield
    fused.simd(True)


def test_the_avx2_pass_runs_where_the_processor_has_it():
    flags = _cpu_flags()
    if platform.machine() not in ("x86_64", "AMD64") or flags is None:
        pytest.skip("the AVX2 pass exists on x86-64 only; no /proc/cpuinfo to compare with here")
    assert fused.simd() == ("avx2" in flags and "fma" in flags)
    try:
        assert fused.simd(False) is False
    finally:
        fused.simd(True)
    assert fused.simd() == ("avx2" in flags and "fma" in flags)


def test_the_avx2_and_portable_passes_give_the_same_values():
    """The AVX2 passes (8 output floats at a time) and the portable ones (a pixel at a time) on the same
    random crops: training-like enlargements, shrinking by up to 4x or more (beyond ~2.5x the AVX2
    horizontal pass hands the call to the portable one), output sizes from 1 up, with and without the flip."""
    rng = np.random.default_rng(11)
    for trial in range(80):
        frames, box, size = random_case(rng, max_side=240, max_size=240)
        size = size if trial % 4 else 224
        flip, indices = bool(trial % 2), [2, 0, 1]
        got = run(frames, indices, box, flip, size)
        fused.simd(False)
        try:
            portable = run(frames, indices, box, flip, size)
        finally:
            fused.simd(True)
        assert np.isfinite(got).all() and np.isfinite(portable).all()
        np.testing.assert_allclose(got, portable, atol=2e-6, rtol=0, err_msg=f"{frames.shape} {box} -> {size}")


def test_large_outputs_stored_past_the_caches_give_the_same_values():
    """A call that writes 8 MiB or more stores past the caches on the AVX2 path where its rows are 16-byte
    aligned: the same values as the portable pass, for an enlargement, shrinking, the uncropped frame and
    the flip, into aligned and unaligned memory, and at a size whose rows are not aligned (226)."""
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, (4, 240, 250, 3), dtype=np.uint8)
    indices = [0, 1, 2, 3] * 4  # 16 frames: 9.6 MB of output at 224
    cases = (((10, 12, 200, 210), 224, True), ((0, 0, 224, 224), 224, False), ((5, 7, 229, 231), 224, True),
             ((0, 0, 250, 240), 224, False), ((3, 5, 230, 235), 226, True))
    for box, size, flip in cases:
        fused.simd(False)
        try:
            portable = run(frames, indices, box, flip, size)
        finally:
            fused.simd(True)
        count = len(indices) * size * size * 3
        memory = np.full(count + 8, np.nan, dtype=np.float32)
        aligned = (-(memory.ctypes.data % 16) // 4) % 4
        for start in (aligned, aligned + 1):
            memory[:] = np.nan
            out = memory[start : start + count].reshape(len(indices), size, size, 3)
            assert out.nbytes >= 8 << 20
            fused.crop_resize_normalise(frames, frames.shape[:3], indices, box, flip, size, SCALE, BIAS, out)
            np.testing.assert_allclose(out, portable, atol=2e-6, rtol=0, err_msg=f"{box} -> {size}, at {start}")
            assert np.isnan(memory[:start]).all() and np.isnan(memory[start + count :]).all(), "nothing outside"


@pytest.mark.usefixtures("portable_pass")
def test_the_portable_pass_matches_torch_too():
    rng = np.random.default_rng(5)
    frames = rng.integers(0, 256, (2, 48, 64, 3), dtype=np.uint8)
    for box, size in (((5, 3, 41, 45), 64), ((2, 1, 62, 47), 23), ((0, 0, 64, 48), 200), ((7, 9, 8, 40), 16)):
        for flip in (False, True):
            np.testing.assert_allclose(run(frames, [1, 0], box, flip, size),
                                       reference(frames, [1, 0], box, flip, size).numpy(), atol=2e-5, rtol=0)


def test_identity_crop_is_exactly_the_normalised_pixels():
    frames = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    got = run(frames, [1, 0], (0, 0, 32, 32), False, 32)
    expected = frames[[1, 0]].astype(np.float32) * np.float32(SCALE) + np.float32(BIAS)
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)


def test_bad_arguments_are_refused_with_their_reason():
    frames = np.zeros((2, 8, 10, 3), dtype=np.uint8)
    out = np.zeros((1, 4, 4, 3), dtype=np.float32)

    def call(**overrides):
        args = dict(frames=frames, shape=(2, 8, 10), indices=[0], box=(0, 0, 10, 8), flip=False, size=4,
                    scale=SCALE, bias=BIAS, out=out)
        args.update(overrides)
        fused.crop_resize_normalise(*args.values())

    with pytest.raises(ValueError, match="do not make"):
        call(shape=(2, 8, 11))
    with pytest.raises(ValueError, match="outside 8x10 frames"):
        call(box=(0, 0, 11, 8))
    with pytest.raises(ValueError, match="is empty"):
        call(box=(3, 0, 3, 8))
    with pytest.raises(ValueError, match="need 192"):
        call(out=np.zeros((2, 4, 4, 3), dtype=np.float32))
    with pytest.raises(IndexError, match="frame index 2 out of range for 2 frames"):
        call(indices=[2])
    with pytest.raises((ValueError, BufferError, TypeError)):
        call(frames=np.zeros((2, 8, 20, 3), dtype=np.uint8)[:, :, ::2])  # not contiguous
    with pytest.raises(TypeError):
        call(out=out.astype(np.float64).tobytes())  # read-only


def test_the_transform_uses_it_and_agrees_with_the_torch_path():
    batch = frames_batch([clip_bytes(20, seed=1), clip_bytes(7, seed=2), clip_bytes(16, seed=3)])
    for common in (dict(train=True, seed=3, flip_prob=0.5), dict(train=False, temporal_views=2, spatial_views=2)):
        for size in (40, 64, 96):
            kernel = VideoClipTransform(8, size, fused=True, **common)
            assert kernel.fused and "fused=True" in repr(kernel)
            got = kernel(batch)["pixel_values"]
            expected = VideoClipTransform(8, size, fused=False, **common)(batch)["pixel_values"]
            assert got.shape == expected.shape and got.stride() == expected.stride()
            assert (got - expected).abs().max() <= ONE_GREY_LEVEL, (common, size)


def test_without_the_extension_the_torch_path_runs(monkeypatch):
    batch = frames_batch([clip_bytes(12, seed=4)])
    expected = VideoClipTransform(8, 40, seed=0, fused=False)(batch)["pixel_values"]
    monkeypatch.setattr(geometry, "_kernel", None)
    assert not geometry.fused_kernel_available()
    fallback = VideoClipTransform(8, 40, seed=0)
    assert not fallback.fused
    assert torch.equal(fallback(batch)["pixel_values"], expected)
    with pytest.raises(ImportError, match="C compiler"):
        VideoClipTransform(fused=True)


def test_fused_needs_channels_last():
    with pytest.raises(ValueError, match="channels_last=True"):
        VideoClipTransform(fused=True, channels_last=False)
    assert not VideoClipTransform(channels_last=False).fused
