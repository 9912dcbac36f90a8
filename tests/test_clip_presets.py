"""Presets in VideoClipTransform: defaults, the frames each view shows, crop rules, DFER-CLIP's rotation."""

import io

import numpy as np
import pytest
from PIL import Image

from ferv39k_hf.clips import transforms
from ferv39k_hf.clips.presets import CLIP_PRESETS, dfer_clip_box, get_preset, rotate_frames
from ferv39k_hf.clips.sampling import dfer_clip_indices, mae_dfer_views
from ferv39k_hf.clips.transforms import VideoClipTransform

PLAIN = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), decoder="pil")


def jpeg(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def grey_clip(num_frames, side=32):
    """Frame i is a flat grey of 4 + 6 i, so a pixel tells which frame it came from."""
    return [jpeg(np.full((side, side, 3), 4 + 6 * i, np.uint8)) for i in range(num_frames)]


def batch(clips):
    return {"frames": [[{"bytes": b, "path": f"c{c}/{i:02d}.jpg"} for i, b in enumerate(frames)]
                       for c, frames in enumerate(clips)],
            "label": [0] * len(clips), "clip_id": [f"Crime/Angry/{c:04d}" for c in range(len(clips))]}


def frame_ids(pixel_values):
    """(N, T, 3, S, S) un-normalised [0, 1] pixels of grey clips -> (N, T) frame indices."""
    grey = pixel_values.float().mean(dim=(2, 3, 4)).numpy() * 255
    return np.rint((grey - 4) / 6).astype(int)


def test_presets_set_size_views_and_augmentation_by_default():
    dfer_train, dfer_test = (VideoClipTransform(sampling="dfer-clip", train=t) for t in (True, False))
    assert dfer_train.size == dfer_test.size == 224 and dfer_train.rotation == 4.0
    assert (dfer_test.temporal_views, dfer_test.spatial_views) == (1, 1)
    assert dfer_train.scale == (0.08, 1.0) and dfer_train.ratio == (3 / 4, 4 / 3) and dfer_train.flip_prob == 0.5
    assert (dfer_train.mean, dfer_train.std) == ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)), "DFER-CLIP does not normalise"
    mae_train, mae_test = (VideoClipTransform(sampling="mae-dfer", train=t) for t in (True, False))
    assert mae_train.size == mae_test.size == 160 and mae_train.rotation == 0.0
    assert (mae_test.temporal_views, mae_test.spatial_views) == (2, 2)
    assert (mae_train.temporal_views, mae_train.spatial_views) == (1, 1)
    assert mae_train.scale == (0.08, 1.0) and mae_train.ratio == (0.75, 1.3333)
    assert (mae_train.mean, mae_train.std) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert VideoClipTransform(sampling="dfer-clip", mean=(0.5,) * 3, std=(0.25,) * 3).mean == (0.5,) * 3
    plain = VideoClipTransform(train=True)
    assert plain.size == 224 and plain.scale == (0.6, 1.0) and plain.rotation == 0.0 and plain.preset is None
    custom = VideoClipTransform(sampling="mae-dfer", train=False, size=32, temporal_views=1, spatial_views=1)
    assert (custom.size, custom.temporal_views, custom.spatial_views) == (32, 1, 1)
    with pytest.raises(ValueError, match="one temporal view"):
        VideoClipTransform(sampling="dfer-clip", train=False, temporal_views=2)
    with pytest.raises(ValueError, match="rotation"):
        VideoClipTransform(rotation=-1)
    assert get_preset("window") is None and set(CLIP_PRESETS) == {"dfer-clip", "mae-dfer"}


@pytest.mark.parametrize("n", [1, 5, 16, 17, 20, 31, 40])
def test_dfer_clip_transform_shows_the_codebase_frames(n):
    test = VideoClipTransform(sampling="dfer-clip", train=False, size=16, **PLAIN)
    out = test(batch([grey_clip(n)]))
    assert out["pixel_values"].shape == (1, 16, 3, 16, 16)
    assert frame_ids(out["pixel_values"])[0].tolist() == dfer_clip_indices(n, 16, train=False).tolist()
    train = VideoClipTransform(sampling="dfer-clip", train=True, size=16, seed=0, **PLAIN)
    ids = frame_ids(train(batch([grey_clip(n)] * 4))["pixel_values"])
    if 16 <= n < 32:
        assert ids.tolist() == [list(range(16))] * 4, "DFER-CLIP trains on the first 16 frames"


@pytest.mark.parametrize("n", [5, 16, 17, 20, 40])
def test_mae_dfer_transform_gives_two_temporal_by_two_identical_spatial_views(n):
    test = VideoClipTransform(sampling="mae-dfer", train=False, size=16, **PLAIN)
    out = test(batch([grey_clip(n, side=48), grey_clip(n, side=48)]))
    pixels = out["pixel_values"]
    assert pixels.shape == (8, 16, 3, 16, 16) and out["view_clip_index"].tolist() == [0] * 4 + [1] * 4
    views = mae_dfer_views(n, 16, 2).tolist()
    assert frame_ids(pixels)[:4].tolist() == [views[0], views[0], views[1], views[1]]
    assert np.array_equal(pixels[0].numpy(), pixels[1].numpy()), "the two spatial views are the same pixels"
    train = VideoClipTransform(sampling="mae-dfer", train=True, size=16, seed=1, **PLAIN)
    for window in frame_ids(train(batch([grey_clip(n)] * 6))["pixel_values"]):
        if n <= 16:
            assert window.tolist() == list(range(n)) + [n - 1] * (16 - n)
        else:
            assert np.all(np.diff(window) == 1) and 0 <= window[0] <= n - 17


def test_test_views_resize_the_whole_frame():
    # a frame twice as wide as high: both presets squash it whole (no centre crop)
    preset = get_preset("mae-dfer")
    assert preset.test_boxes(90, 180, 2) == [(0, 0, 180, 90)] * 2
    assert get_preset("dfer-clip").test_boxes(90, 180, 1) == [(0, 0, 180, 90)]


class Edges:
    """Every draw returns its lowest value (or the middle / highest one for uniform draws)."""

    def __init__(self, uniform="low", coin=0.9, integer="low"):
        self.uniform_at, self.coin, self.integer = uniform, coin, integer

    def uniform(self, low, high):
        return {"low": low, "mid": (low + high) / 2, "high": high}[self.uniform_at]

    def random(self):
        return self.coin

    def integers(self, low, high=None, size=None):
        low, high = (0, low) if high is None else (low, high)
        return low if self.integer == "low" else high - 1


def test_dfer_clip_box_follows_group_random_sized_crop():
    # smallest area (800 of 100x100) and aspect 3/4: 24 x 33, swapped when the coin is below 1/2
    assert dfer_clip_box(100, 100, Edges("low", coin=0.9)) == (0, 0, 24, 33)
    assert dfer_clip_box(100, 100, Edges("low", coin=0.1)) == (0, 0, 33, 24)
    # the aspect is uniform in [3/4, 4/3] (midpoint 1.0417: 75 x 72), not log-uniform (midpoint 1: 73 x 73)
    assert dfer_clip_box(100, 100, Edges("mid")) == (0, 0, 75, 72)
    # nothing fits: the short side's square at a random place along the long side
    assert dfer_clip_box(100, 200, Edges("high", integer="low")) == (0, 0, 100, 100)
    assert dfer_clip_box(100, 200, Edges("high", integer="high")) == (100, 0, 200, 100)
    generator = np.random.default_rng(0)
    boxes = np.array([dfer_clip_box(90, 120, generator) for _ in range(2000)])
    width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert boxes[:, :2].min() >= 0 and boxes[:, 2].max() <= 120 and boxes[:, 3].max() <= 90
    assert 0.3 < np.mean(width > height) < 0.7, "width and height swapped half the time"


def test_mae_dfer_box_is_drawn_on_the_160_square_and_stretched_to_the_frame():
    preset = get_preset("mae-dfer")
    # smallest area of 160x160 (2048) at aspect 0.75: 39 x 52 there, x1.4 and x0.7 on a 224-wide, 112-high frame
    assert preset.train_box(112, 224, Edges("low")) == (0, 0, 55, 36)
    assert preset.train_box(224, 224, Edges("low")) == (0, 0, 55, 73)
    assert preset.train_box(224, 224, Edges("high")) == (0, 0, 224, 224), "nothing fits: the whole square"


def test_rotate_frames_is_pils_rotate():
    frames = np.random.default_rng(0).integers(0, 256, (3, 20, 30, 3), dtype=np.uint8)
    rotated = rotate_frames(frames, 3.5)
    for frame, result in zip(frames, rotated):
        assert np.array_equal(result, np.asarray(Image.fromarray(frame).rotate(3.5)))
    assert not np.array_equal(rotated, frames)
    rotate_frames(frames, -2.0, out=frames)  # in place
    assert frames.shape == (3, 20, 30, 3)


def textured(index, side=48):
    y, x = np.mgrid[0:side, 0:side]
    return np.clip(np.stack([x * 5, y * 5, (x * y) % 251], axis=-1) + 3 * index, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("on_device", [False, True])
def test_dfer_clip_training_rotates_each_clip_by_one_angle_up_to_4_degrees(monkeypatch, on_device):
    angles = []

    def recording(frames, angle, out=None):
        angles.append(angle)
        return rotate_frames(frames, angle, out)

    monkeypatch.setattr(transforms, "rotate_frames", recording)
    clip = [jpeg(textured(i)) for i in range(16)]
    # the whole frame at its own size and no flip, so the output is the rotated frame itself
    train = VideoClipTransform(sampling="dfer-clip", train=True, size=48, seed=3, scale=(1.0, 1.0),
                               ratio=(1.0, 1.0), flip_prob=0.0, dct_scaling=False, on_device=on_device, **PLAIN)
    out = train(batch([clip] * 6))
    assert len(angles) == 6 and all(-4.0 <= a <= 4.0 for a in angles) and len(set(angles)) == 6
    decoded = np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in clip])
    for row, angle in enumerate(angles):
        expected = rotate_frames(decoded, angle)
        if on_device:
            assert np.array_equal(out["pixel_values"][row].numpy(), expected)
        else:
            got = out["pixel_values"][row].permute(0, 2, 3, 1).numpy() * 255
            assert np.abs(got - expected).max() <= 1.01, "the rotated frame, to within one grey level"
    angles.clear()
    VideoClipTransform(sampling="mae-dfer", train=True, size=16, seed=0, **PLAIN)(batch([clip]))
    VideoClipTransform(sampling="dfer-clip", train=False, size=16, **PLAIN)(batch([clip]))
    assert angles == [], "only DFER-CLIP's training rotates"
