"""mp4 clips through PyAV: chosen frames decode to the right pictures, and decoding stops early."""

import io

import numpy as np
import pytest

av = pytest.importorskip("av")

from ferv39k_hf.clips import video  # noqa: E402
from ferv39k_hf.clips.geometry import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from ferv39k_hf.clips.sampling import segment_indices  # noqa: E402
from ferv39k_hf.clips.transforms import VideoClipTransform  # noqa: E402

NUM_FRAMES = 30
SIZE = 64


def brightness(index: int) -> int:
    return 16 + 7 * index  # 16 .. 219: distinct after lossy coding


def encode_mp4(num_frames: int = NUM_FRAMES) -> bytes:
    """A tiny mp4 whose frame i is solid grey of brightness(i)."""
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=25)
        stream.width = stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "1"} if codec == "libx264" else {"qscale": "1"}
        for i in range(num_frames):
            picture = np.full((SIZE, SIZE, 3), brightness(i), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def mp4_bytes():
    return encode_mp4()


def frame_numbers(frames: np.ndarray) -> list:
    """Recover each frame's index from its mean brightness."""
    means = frames.reshape(len(frames), -1).mean(axis=1)
    return [int(round((m - 16) / 7)) for m in means]


def test_chosen_frames_decode_to_the_right_pictures(mp4_bytes, tmp_path):
    indices = [0, 3, 4, 17, 29]
    frames = video.read_video_frames(mp4_bytes, indices)
    assert frames.shape == (5, SIZE, SIZE, 3) and frames.dtype == np.uint8
    assert frame_numbers(frames) == indices
    path = tmp_path / "clip.mp4"
    path.write_bytes(mp4_bytes)
    assert np.array_equal(video.read_video_frames(str(path), indices), frames)
    assert np.array_equal(video.read_video_frames(path, indices), frames)


def test_repeated_and_unordered_indices(mp4_bytes):
    frames = video.read_video_frames(mp4_bytes, [9, 2, 9, 9, 2])
    assert frame_numbers(frames) == [9, 2, 9, 9, 2]
    assert video.read_video_frames(mp4_bytes, []).shape[0] == 0
    with pytest.raises(ValueError, match="negative"):
        video.read_video_frames(mp4_bytes, [-1])


def test_index_past_the_end_gives_the_last_frame(mp4_bytes):
    assert frame_numbers(video.read_video_frames(mp4_bytes, [28, 40])) == [28, 29]


def test_decoding_stops_after_the_last_needed_frame(mp4_bytes, monkeypatch):
    yielded = []
    real_open = video.open_video

    class CountingContainer:
        def __init__(self, container):
            self.container = container
            self.streams = container.streams

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.container.close()

        def decode(self, stream):
            for frame in self.container.decode(stream):
                yielded.append(frame)
                yield frame

    monkeypatch.setattr(video, "open_video", lambda source: CountingContainer(real_open(source)))
    frames = video.read_video_frames(mp4_bytes, [1, 5])
    assert frame_numbers(frames) == [1, 5]
    assert len(yielded) == 6, "frames after index 5 are never decoded"


def test_count_frames(mp4_bytes):
    assert video.count_frames(mp4_bytes) == NUM_FRAMES
    assert video.count_frames(mp4_bytes, decode=True) == NUM_FRAMES


def test_damaged_video_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="bytes of video"):
        video.read_video_frames(b"not an mp4 at all" * 10, [0])
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="bad.mp4"):
        video.count_frames(bad)


def frame_indices_from_pixels(pixel_values) -> list:
    """Invert the normalisation of channel 0 of solid grey frames back to frame numbers."""
    red = pixel_values[:, 0].mean(dim=(1, 2)).numpy() * IMAGENET_STD[0] + IMAGENET_MEAN[0]
    return [int(round((255 * value - 16) / 7)) for value in red]


def test_videos_rows_sample_the_right_frames(mp4_bytes):
    batch = {
        "clip_id": ["Crime/Angry/0000", "Crime/Angry/0001"],
        "video": [{"bytes": mp4_bytes, "path": "Crime/Angry/0000.mp4"}, {"bytes": mp4_bytes, "path": "x.mp4"}],
        "num_frames": [NUM_FRAMES, None],  # None: the transform counts the frames itself
        "label": [0, 4],
    }
    out = VideoClipTransform(num_frames=16, size=32, train=False)(batch)
    assert out["pixel_values"].shape == (2, 16, 3, 32, 32)
    assert out["labels"].tolist() == [0, 4]
    expected = segment_indices(NUM_FRAMES, 16, train=False).tolist()
    for clip in out["pixel_values"]:
        assert frame_indices_from_pixels(clip) == expected
    windows = VideoClipTransform(num_frames=8, size=32, train=False, sampling="window")(batch)
    assert frame_indices_from_pixels(windows["pixel_values"][0]) == list(range(11, 19))


def test_videos_rows_from_a_path_and_in_training(mp4_bytes, tmp_path):
    path = tmp_path / "clip.mp4"
    path.write_bytes(mp4_bytes)
    batch = {"video": [{"bytes": None, "path": str(path)}], "num_frames": [NUM_FRAMES], "label": [2]}
    out = VideoClipTransform(num_frames=8, size=32, train=True, seed=3)(batch)
    indices = frame_indices_from_pixels(out["pixel_values"][0])
    assert len(indices) == 8 and indices == sorted(indices) and 0 <= indices[0] and indices[-1] < NUM_FRAMES
    edges = (np.arange(9) * NUM_FRAMES) // 8
    assert all(edges[i] <= index < edges[i + 1] for i, index in enumerate(indices)), "one frame per segment"


# --- JPEG frames ----------------------------------------------------------------------------------


def jpeg_bytes(height=48, width=64, seed=0) -> bytes:
    from PIL import Image

    picture = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@pytest.mark.parametrize("use_simplejpeg", [False, True])
def test_decode_image_matches_pillow_and_scales(use_simplejpeg):
    from PIL import Image

    if use_simplejpeg and not video.simplejpeg_available():
        pytest.skip("simplejpeg not installed")
    data = jpeg_bytes()
    reference = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert np.array_equal(video.decode_image(data, use_simplejpeg=use_simplejpeg), reference)
    half = video.decode_image(data, reduce=2, use_simplejpeg=use_simplejpeg)
    assert half.shape == (24, 32, 3)
    assert np.abs(half.astype(int) - reference[::2, ::2].astype(int)).mean() < 60  # a downscale, not garbage
    out = np.empty((48, 64, 3), np.uint8)
    decoded = video.decode_image(data, use_simplejpeg=use_simplejpeg, out=out)
    assert np.array_equal(decoded, reference)


def test_decode_image_errors_name_the_frame():
    with pytest.raises(ValueError, match="Crime/Angry/0001/03.jpg"):
        video.decode_image(b"\xff\xd8garbage", name="Crime/Angry/0001/03.jpg")


def test_scratch_is_reused_per_name_and_thread_and_never_when_switched_off(monkeypatch):
    import threading

    scratch = video.Scratch()
    first = scratch.get("x", (4, 4), np.float32)
    assert first.shape == (4, 4) and first.dtype == np.float32 and first.flags.c_contiguous
    again = scratch.get("x", (3, 4), np.float32)
    assert np.shares_memory(first, again), "the contract: valid until the next request of its name"
    assert not np.shares_memory(again, scratch.get("y", (3, 4), np.float32)), "names never share"
    assert scratch.get("x", (2, 2), np.uint8).dtype == np.uint8
    other = []
    thread = threading.Thread(target=lambda: other.append(scratch.get("x", (4, 4), np.float32)))
    thread.start()
    thread.join()
    assert not np.shares_memory(other[0], scratch.get("x", (4, 4), np.float32)), "threads never share"
    assert not np.shares_memory(video.Scratch(reuse=False).get("x", (4,), np.uint8),
                                video.Scratch(reuse=False).get("x", (4,), np.uint8))
    off = video.Scratch()
    monkeypatch.setenv("FERV39K_HF_REUSE_MEMORY", "0")
    assert not np.shares_memory(off.get("x", (4,), np.uint8), off.get("x", (4,), np.uint8))
