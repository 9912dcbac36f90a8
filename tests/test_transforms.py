"""VideoClipTransform: shapes, normalisation, one geometry per clip, input forms, seeds, workers, views."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from ferv39k_hf.clips import video
from ferv39k_hf.clips.geometry import IMAGENET_MEAN, IMAGENET_STD, random_resized_box, short_side_boxes
from ferv39k_hf.clips.sampling import segment_indices, segment_views
from ferv39k_hf.clips.transforms import VideoClipTransform

DECODERS = ["pil"] + (["simplejpeg"] if video.simplejpeg_available() else [])


def jpeg(array: np.ndarray, quality: int = 92) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def textured(index: int, size: int = 64, seed: int = 0) -> np.ndarray:
    """A picture with no symmetry (so crops and flips show), brightness shifted by ``index``."""
    y, x = np.mgrid[0:size, 0:size]
    rng = np.random.default_rng(seed)
    picture = np.stack([x * 3, y * 3, (x * y) % 251], axis=-1) + rng.integers(0, 40, (size, size, 3))
    return np.clip(picture + 3 * index, 0, 255).astype(np.uint8)


def clip_bytes(num_frames: int, size: int = 64, seed: int = 0):
    return [jpeg(textured(i, size, seed)) for i in range(num_frames)]


def frames_batch(clips, labels=None, form="bytes", folder=None):
    """A batch in the dataset's row schema with frames as bytes dicts, PIL images or path-only dicts."""
    rows = []
    for c, frames in enumerate(clips):
        clip_id = f"Crime/Angry/{c:04d}"
        if form == "bytes":
            rows.append([{"bytes": b, "path": f"{clip_id}/{i:02d}.jpg"} for i, b in enumerate(frames)])
        elif form == "pil":
            rows.append([Image.open(io.BytesIO(b)) for b in frames])
        else:
            paths = []
            for i, b in enumerate(frames):
                path = folder / f"clip{c}_{i:02d}.jpg"
                path.write_bytes(b)
                paths.append({"bytes": None, "path": str(path)})
            rows.append(paths)
    labels = labels if labels is not None else list(range(len(clips)))
    return {"clip_id": [f"Crime/Angry/{c:04d}" for c in range(len(clips))], "frames": rows, "label": labels,
            "num_frames": [len(f) for f in clips]}


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("size", [64, 48, 32, 16])
def test_output_shape_dtype_and_labels(train, size):
    batch = frames_batch([clip_bytes(20), clip_bytes(7)], labels=[3, 6])
    out = VideoClipTransform(num_frames=8, size=size, train=train, seed=0)(batch)
    assert set(out) == {"pixel_values", "labels"}
    assert out["pixel_values"].shape == (2, 8, 3, size, size)
    assert out["pixel_values"].dtype == torch.float32
    assert out["pixel_values"].permute(0, 1, 3, 4, 2).is_contiguous(), "channels-last memory by default"
    assert out["labels"].dtype == torch.int64 and out["labels"].tolist() == [3, 6]
    planar = VideoClipTransform(num_frames=8, size=size, train=train, seed=0, channels_last=False)(batch)
    assert planar["pixel_values"].is_contiguous()
    torch_ops = VideoClipTransform(num_frames=8, size=size, train=train, seed=0, fused=False)(batch)
    assert torch.equal(planar["pixel_values"], torch_ops["pixel_values"]), "the layout changes no value"
    # the C kernel's float resize (tests/test_fused.py) is within a grey level of torch's
    assert (out["pixel_values"] - torch_ops["pixel_values"]).abs().max() <= 1.0 / (255.0 * min(IMAGENET_STD)) + 1e-5


@pytest.mark.parametrize("channels_last", [True, False])
def test_evaluation_at_the_frame_size_is_the_normalised_decoded_frames(channels_last):
    """At the frames' own size evaluation does no resizing: every value is (pixel / 255 - mean) / std
    of the decoded sampled frame, computed here independently in float64."""
    clips = [clip_bytes(20, seed=3), clip_bytes(11, seed=4)]
    out = VideoClipTransform(8, 64, train=False, channels_last=channels_last)(frames_batch(clips))["pixel_values"]
    mean, std = np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)
    for row, frames in enumerate(clips):
        for position, index in enumerate(segment_indices(len(frames), 8, train=False)):
            decoded = np.asarray(Image.open(io.BytesIO(frames[index])).convert("RGB"), dtype=np.float64)
            expected = ((decoded / 255.0 - mean) / std).transpose(2, 0, 1)
            np.testing.assert_allclose(out[row, position].numpy(), expected, atol=2e-6)


def tiny_videomae():
    """A random VideoMAE classifier for 4 frames of 32 pixels."""
    transformers = pytest.importorskip("transformers")
    config = transformers.VideoMAEConfig(image_size=32, patch_size=16, num_frames=4, tubelet_size=2, hidden_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                                         num_labels=7)
    torch.manual_seed(0)
    return transformers.VideoMAEForVideoClassification(config).eval()


def test_channels_last_batches_feed_a_video_model_like_contiguous_ones():
    """VideoMAE gives the same logits for the default (channels-last) batch as for its contiguous copy."""
    model = tiny_videomae()
    pixels = VideoClipTransform(4, 32, train=True, seed=0)(frames_batch([clip_bytes(9), clip_bytes(5)]))["pixel_values"]
    assert not pixels.is_contiguous()
    with torch.no_grad():
        logits = model(pixel_values=pixels).logits
        expected = model(pixel_values=pixels.contiguous()).logits
    torch.testing.assert_close(logits, expected)


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("train", [True, False])
def test_solid_colour_gives_the_normalised_value(decoder, train):
    colour = (200, 120, 40)
    data = jpeg(np.full((64, 64, 3), colour, dtype=np.uint8), quality=100)
    decoded = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))[0, 0]
    assert np.all(np.abs(decoded.astype(int) - colour) <= 2)
    out = VideoClipTransform(4, 32, train=train, seed=1, decoder=decoder)(frames_batch([[data] * 6]))
    pixels = out["pixel_values"][0]
    for c in range(3):
        expected = (decoded[c] / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
        assert torch.allclose(pixels[:, c], torch.full_like(pixels[:, c], expected), atol=1e-5)


def test_custom_mean_and_std():
    data = jpeg(np.full((32, 32, 3), 255, dtype=np.uint8), quality=100)
    out = VideoClipTransform(2, 16, train=False, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))(frames_batch([[data]]))
    assert torch.allclose(out["pixel_values"], torch.ones_like(out["pixel_values"]))
    with pytest.raises(ValueError):
        VideoClipTransform(mean=(0.5, 0.5), std=(1, 1, 1))


def test_training_crop_and_flip_are_the_same_for_every_frame():
    same_frames = [jpeg(textured(0))] * 12
    transform = VideoClipTransform(8, 32, train=True, seed=5)
    out = transform(frames_batch([same_frames] * 6))["pixel_values"]
    for clip in out:
        assert all(torch.equal(clip[0], frame) for frame in clip[1:]), "one crop/flip for the whole clip"
    distinct = {out[i, 0].sum().item() for i in range(6)}
    assert len(distinct) > 1, "clips get different crops"


def test_flip_mirrors_the_clip_and_the_crop_stays():
    batch = frames_batch([clip_bytes(10)])
    plain = VideoClipTransform(8, 32, train=True, seed=2, flip_prob=0.0)(batch)["pixel_values"]
    flipped = VideoClipTransform(8, 32, train=True, seed=2, flip_prob=1.0)(batch)["pixel_values"]
    assert torch.equal(flipped, plain.flip(-1))
    assert not torch.equal(plain, plain.flip(-1))


def test_bytes_pil_and_reference_inputs_agree(tmp_path):
    clips = [clip_bytes(20, size=64, seed=1), clip_bytes(9, size=64, seed=2)]
    for train in (False, True):
        for size in (64, 48):
            outs = [VideoClipTransform(8, size, train=train, seed=4)(frames_batch(clips, form=form, folder=tmp_path))
                    for form in ("bytes", "pil", "reference")]
            assert torch.equal(outs[0]["pixel_values"], outs[1]["pixel_values"])
            assert torch.equal(outs[0]["pixel_values"], outs[2]["pixel_values"])


@pytest.mark.skipif(len(DECODERS) < 2, reason="simplejpeg not installed")
def test_simplejpeg_and_pillow_decode_the_same_pixels():
    clips = [clip_bytes(12, size=64)]
    for size, dct in ((64, True), (40, True), (16, False)):
        outs = [VideoClipTransform(8, size, train=False, decoder=d, dct_scaling=dct)(frames_batch(clips))
                for d in DECODERS]
        assert torch.equal(outs[0]["pixel_values"], outs[1]["pixel_values"])


def test_dct_scaling_stays_close_to_full_decoding():
    clips = [clip_bytes(8, size=64)]
    fast = VideoClipTransform(4, 16, train=False)(frames_batch(clips))["pixel_values"]
    full = VideoClipTransform(4, 16, train=False, dct_scaling=False)(frames_batch(clips))["pixel_values"]
    assert (fast - full).abs().mean() < 0.1  # about 5/255 in pixel terms


def test_training_is_deterministic_for_a_seed():
    batch = frames_batch([clip_bytes(30)] * 3)
    a = VideoClipTransform(8, 32, train=True, seed=11)
    b = VideoClipTransform(8, 32, train=True, seed=11)
    first_a, first_b = a(batch)["pixel_values"], b(batch)["pixel_values"]
    assert torch.equal(first_a, first_b)
    assert torch.equal(a(batch)["pixel_values"], b(batch)["pixel_values"])
    assert not torch.equal(first_a, VideoClipTransform(8, 32, train=True, seed=12)(batch)["pixel_values"])
    epoch_one = VideoClipTransform(8, 32, train=True, seed=11)
    epoch_one.set_epoch(1)
    assert not torch.equal(first_a, epoch_one(batch)["pixel_values"])


def test_unseeded_training_follows_torch_seed():
    batch = frames_batch([clip_bytes(30)] * 2)
    transform = VideoClipTransform(8, 32, train=True)
    torch.manual_seed(0)
    first = transform(batch)["pixel_values"]
    torch.manual_seed(0)
    assert torch.equal(first, transform(batch)["pixel_values"])


def test_evaluation_is_deterministic_and_centred():
    clips = [clip_bytes(30)]
    transform = VideoClipTransform(8, 32, train=False)
    first = transform(frames_batch(clips))["pixel_values"]
    assert torch.equal(first, transform(frames_batch(clips))["pixel_values"])
    assert torch.equal(first, VideoClipTransform(8, 32, train=False, seed=99)(frames_batch(clips))["pixel_values"])
    # the centre frames of the 8 segments, resized whole (square frames): same as one frame at a time
    expected = segment_indices(30, 8, train=False)
    for t, index in enumerate(expected):
        single = VideoClipTransform(1, 32, train=False)(frames_batch([[clips[0][index]]]))["pixel_values"]
        assert torch.equal(first[0, t], single[0, 0])


def test_short_clips_repeat_their_last_frame():
    out = VideoClipTransform(8, 32, train=False)(frames_batch([clip_bytes(5)]))["pixel_values"][0]
    for t in range(5, 8):
        assert torch.equal(out[t], out[4])
    assert not torch.equal(out[3], out[4])


class _Rows(torch.utils.data.Dataset):
    """Identical rows; each item is a one-clip batch through the transform."""

    def __init__(self, transform, frames):
        self.transform, self.frames = transform, frames

    def __len__(self):
        return 8

    def __getitem__(self, index):
        return self.transform(frames_batch([self.frames]))["pixel_values"][0]


def _loader_batches(seed):
    frames = clip_bytes(24)
    dataset = _Rows(VideoClipTransform(4, 16, train=True, seed=seed), frames)
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=2)
    return list(loader)


def test_dataloader_workers_get_their_own_streams_and_runs_repeat():
    first = _loader_batches(seed=3)
    assert len(first) == 2  # batch 0 from worker 0, batch 1 from worker 1, same rows
    assert not torch.equal(first[0], first[1]), "workers do not repeat each other's random draws"
    again = _loader_batches(seed=3)
    assert all(torch.equal(a, b) for a, b in zip(first, again)), "the same seed gives the same batches"


def test_multi_view_shapes_order_and_clip_index():
    clips = [clip_bytes(40, size=64), clip_bytes(12, size=64)]
    batch = frames_batch(clips, labels=[1, 5])
    transform = VideoClipTransform(8, 32, train=False)
    out = transform.views(batch, temporal_views=2, spatial_views=2)
    assert out["pixel_values"].shape == (8, 8, 3, 32, 32)
    assert out["view_clip_index"].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert out["labels"].tolist() == [1, 1, 1, 1, 5, 5, 5, 5]
    views = segment_views(40, 8, 2)
    for v in range(2):
        for t in (0, 7):
            single = VideoClipTransform(1, 32, train=False)(frames_batch([[clips[0][views[v, t]]]]))
            assert torch.equal(out["pixel_values"][2 * v, t], single["pixel_values"][0, 0])
    assert not torch.equal(out["pixel_values"][0], out["pixel_values"][2]), "temporal views differ"
    assert torch.equal(out["pixel_values"][0], out["pixel_values"][1]), "square frames: VideoMAE's crops coincide"
    configured = VideoClipTransform(8, 32, train=False, temporal_views=2, spatial_views=2)(batch)
    assert torch.equal(configured["pixel_values"], out["pixel_values"])
    with pytest.raises(ValueError, match="evaluation"):
        VideoClipTransform(8, 32, train=True, temporal_views=2)


def test_spatial_views_spread_along_the_long_side():
    wide = [jpeg(textured(i, size=96)[:48]) for i in range(4)]  # 96 x 48 frames
    out = VideoClipTransform(2, 24, train=False).views(frames_batch([wide]), 1, 3)["pixel_values"]
    assert out.shape == (3, 2, 3, 24, 24)
    assert not torch.equal(out[0], out[2])
    assert short_side_boxes(48, 96, 3) == [(0, 0, 48, 48), (24, 0, 72, 48), (48, 0, 96, 48)]
    assert short_side_boxes(80, 40, 1) == [(0, 20, 40, 60)]


def test_random_resized_box_respects_scale_and_ratio():
    rng = np.random.default_rng(0)
    for _ in range(500):
        x0, y0, x1, y1 = random_resized_box(224, 224, rng, (0.6, 1.0), (3 / 4, 4 / 3))
        assert 0 <= x0 < x1 <= 224 and 0 <= y0 < y1 <= 224
        w, h = x1 - x0, y1 - y0
        assert 0.58 <= w * h / 224**2 <= 1.0 and 0.7 <= w / h <= 1.4


def test_bad_inputs_name_the_clip_or_frame():
    with pytest.raises(ValueError, match="Crime/Angry/0000: the row has no frames"):
        VideoClipTransform(4, 16)(frames_batch([[]]))
    broken = frames_batch([[b"\xff\xd8 not really a jpeg"]])
    with pytest.raises(ValueError, match="Crime/Angry/0000/00.jpg"):
        VideoClipTransform(4, 16, train=False)(broken)
    with pytest.raises(ValueError, match="'frames' or a 'video'"):
        VideoClipTransform(4, 16)({"label": [0]})
    with pytest.raises(ValueError, match="sampling"):
        VideoClipTransform(sampling="uniform")


def test_frames_of_different_sizes_in_one_clip():
    frames = [jpeg(textured(0, size=64)), jpeg(textured(1, size=48)), jpeg(textured(2, size=64))]
    out = VideoClipTransform(3, 32, train=False)(frames_batch([frames]))
    assert out["pixel_values"].shape == (1, 3, 3, 32, 32)


@pytest.mark.skipif(not video.simplejpeg_available(), reason="compares simplejpeg's in-place path with Pillow")
def test_odd_frames_leave_the_in_place_decode_and_get_the_same_pixels():
    """A frame smaller or larger than the clip's first, or not a JPEG, leaves simplejpeg's in-place path
    for the general one: the pixels are Pillow's, resized to the clip's frame size."""
    png = io.BytesIO()
    Image.fromarray(textured(4, size=64)).save(png, "PNG")
    frames = [jpeg(textured(0, size=64)), jpeg(textured(1, size=48)), jpeg(textured(2, size=80)),
              png.getvalue(), jpeg(textured(3, size=64))]
    batch = frames_batch([frames])
    fast = VideoClipTransform(5, 64, train=False, decoder="simplejpeg", fused=False)(batch)["pixel_values"]
    pil = VideoClipTransform(5, 64, train=False, decoder="pil", fused=False)(batch)["pixel_values"]
    assert torch.equal(fast, pil)
    for t in (1, 2):  # the odd sizes were resized, not left partly written
        assert not torch.equal(fast[0, t], fast[0, 0])
    for t in (0, 3, 4):  # frames of the clip's size are its pixels, normalised
        source = np.array(Image.open(io.BytesIO(frames[t])).convert("RGB"))
        expected = (torch.from_numpy(source).float() / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
        torch.testing.assert_close(fast[0, t].permute(1, 2, 0), expected, atol=1e-5, rtol=0)


def test_returned_batches_are_never_overwritten():
    transform = VideoClipTransform(4, 16, train=False)
    first = transform(frames_batch([clip_bytes(8, seed=1)]))["pixel_values"]
    kept = first.clone()
    transform(frames_batch([clip_bytes(8, seed=2)]))
    assert torch.equal(first, kept), "a batch still held by the caller keeps its values"
