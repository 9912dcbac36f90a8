"""Decode only the chosen frames of a clip: JPEG frame lists and mp4 videos.

A face-crop or scene clip is a list of frames (JPEG bytes, PIL images, or paths
for a ``--frames reference`` build); JPEG bytes are decoded by simplejpeg when it
is installed (libjpeg-turbo, the same pixels as Pillow, faster) and by Pillow
otherwise, straight into a reusable buffer, optionally downscaled in the DCT.

An mp4 clip is read with PyAV (which bundles its own FFmpeg). FERV39k's clips are
a few dozen frames long, so seeking buys nothing: the decoder runs forward from
the first frame, converts to RGB only the frames that were asked for, and stops
after the last of them.
"""

from __future__ import annotations

import io
import threading
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from ferv39k_hf.clips.batchmem import reuse_enabled
from ferv39k_hf.fileio import (
    MAX_FRAME_BYTES,
    VideoSource,
    count_frames,
    describe_source,
    open_video,
    read_file,
    video_errors,
)

__all__ = [
    "read_video_frames",
    "count_frames",
    "decode_image",
    "simplejpeg_available",
    "FrameListClip",
    "Mp4Clip",
    "Scratch",
    "row_sources",
]


def read_video_frames(source: VideoSource, indices: Iterable[int]) -> np.ndarray:
    """Frames ``indices`` of a video as a uint8 array (len(indices), H, W, 3), RGB.

    ``source`` is the file's bytes or its path. Indices may repeat and come in any
    order (a padded clip repeats its last index); each distinct frame is decoded
    and converted once. An index past the last decodable frame gives the last
    frame, so a container whose frame count over-reports still yields a clip.
    """
    wanted = np.asarray(list(indices), dtype=np.int64)
    if wanted.size == 0:
        return np.zeros((0, 0, 0, 3), dtype=np.uint8)
    if wanted.min() < 0:
        raise ValueError(f"{describe_source(source)}: negative frame index in {wanted.tolist()}")
    needed = np.unique(wanted)
    decoded = {}
    last_frame = None
    try:
        with open_video(source) as container:
            if not container.streams.video:
                raise ValueError(f"{describe_source(source)}: no video stream")
            stream = container.streams.video[0]
            stop = int(needed[-1])
            needed_set = set(needed.tolist())
            for position, frame in enumerate(container.decode(stream)):
                if position in needed_set:
                    decoded[position] = frame.to_ndarray(format="rgb24")
                last_frame = frame
                if position >= stop:
                    break
            if last_frame is None:
                raise ValueError(f"{describe_source(source)}: the video stream has no decodable frame")
            missing = [i for i in needed.tolist() if i not in decoded]
            if missing:
                tail = last_frame.to_ndarray(format="rgb24")
                decoded.update((i, tail) for i in missing)
    except video_errors() as err:
        raise ValueError(f"{describe_source(source)}: cannot decode video: {err}") from err
    return np.stack([decoded[int(i)] for i in wanted])


# --- frame lists (faces, scenes) ---------------------------------------------------------------


try:  # optional libjpeg-turbo decoder: faster than Pillow, same pixels
    import simplejpeg as _simplejpeg
except ImportError:  # pragma: no cover - depends on the environment
    _simplejpeg = None


def simplejpeg_available() -> bool:
    """Whether the optional simplejpeg decoder is installed (``pip install 'ferv39k-hf[fast]'``)."""
    return _simplejpeg is not None


def _is_jpeg(data: bytes) -> bool:
    return data[:2] == b"\xff\xd8"


def decode_image(
    data: bytes,
    reduce: int = 1,
    use_simplejpeg: bool = True,
    name: str = "<bytes>",
    out: Optional[np.ndarray] = None,
) -> np.ndarray:
    """An encoded image as uint8 (H, W, 3) RGB, decoded into ``out`` when its shape fits.

    ``reduce`` (1, 2, 4, 8) lets the JPEG decoder downscale by that factor in the
    DCT, far cheaper than decoding in full and resizing. ``name`` goes into errors.
    """
    if use_simplejpeg and _is_jpeg(data):
        try:
            height, width = _simplejpeg.decode_jpeg_header(data)[:2]
            shape = (-(-height // reduce), -(-width // reduce), 3)
            buffer = out if out is not None and out.shape == shape else None
            return _simplejpeg.decode_jpeg(
                data, colorspace="RGB", min_height=shape[0], min_width=shape[1], buffer=buffer
            )
        except ValueError:
            pass  # CMYK, unusual markers: Pillow decides
    try:
        image = Image.open(io.BytesIO(data))
        if reduce > 1:  # Pillow picks the largest scale that keeps at least this size: ceil(size / reduce)
            image.draft("RGB", (image.width // reduce, image.height // reduce))
        return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    except (OSError, ValueError) as err:
        raise ValueError(f"frame {name}: cannot decode image: {err}") from err


def image_size(data: bytes, use_simplejpeg: bool, name: str) -> Tuple[int, int]:
    """(height, width) from the image header alone."""
    if use_simplejpeg and _is_jpeg(data):
        try:
            return tuple(_simplejpeg.decode_jpeg_header(data)[:2])
        except ValueError:
            pass
    try:
        width, height = Image.open(io.BytesIO(data)).size
    except (OSError, ValueError) as err:
        raise ValueError(f"frame {name}: cannot read image header: {err}") from err
    return height, width


def frame_bytes(entry: Any) -> Tuple[Optional[bytes], str]:
    """(encoded bytes or None for a PIL image, a name for messages) of one frame entry."""
    if isinstance(entry, Image.Image):
        return None, getattr(entry, "filename", "") or "<PIL image>"
    if isinstance(entry, dict):
        data, path = entry.get("bytes"), entry.get("path")
        if data is not None:
            return bytes(data), path or "<bytes>"
        if path:
            try:
                return read_file(path, MAX_FRAME_BYTES), path
            except OSError as err:  # LayoutError (a file far too large) is one
                raise ValueError(f"frame {path}: cannot read file: {err}") from err
    raise ValueError(f"a frame must be a PIL image or a {{'bytes', 'path'}} dict, got {type(entry).__name__}")


def _fit(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """``array`` resized to (height, width) if it differs (frames of one clip differ in size: rare)."""
    if array.shape[:2] == (height, width):
        return array
    return np.asarray(Image.fromarray(array).resize((width, height), Image.BILINEAR))


class Scratch:
    """Decode memory reused from clip to clip, one array per name and thread.

    An array from :meth:`get` is valid until the next :meth:`get` of that name in
    the same thread: a caller must be done with it by then, and code that keeps
    decoded frames longer (across clips) must not take them from here. Reuse
    matters: a clip's frames are megabytes, beyond what malloc recycles, and every
    first touch of fresh pages costs a page fault. ``reuse=False`` (or the
    environment switch of :mod:`ferv39k_hf.clips.batchmem`) gives fresh memory every time.
    """

    def __init__(self, reuse: bool = True):
        self.reuse = reuse
        self._local = threading.local()  # per thread: two threads never share an array

    def __getstate__(self) -> Dict[str, Any]:
        return {"reuse": self.reuse}  # memory stays in its process

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__init__(state["reuse"])

    def get(self, name: str, shape: Tuple[int, ...], dtype: Any) -> np.ndarray:
        """A C-contiguous array of ``shape`` and ``dtype``, valid until the next ``get(name, ...)`` here."""
        dtype = np.dtype(dtype)
        if not (self.reuse and reuse_enabled()):
            return np.empty(shape, dtype=dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        arrays = self._local.__dict__
        flat = arrays.get(name)
        if flat is None or flat.nbytes < nbytes:
            flat = arrays[name] = np.empty(max(nbytes, 1), dtype=np.uint8)
        return flat[:nbytes].view(dtype).reshape(shape)


class FrameListClip:
    """A row of the faces/scenes configs: a list of frame entries."""

    def __init__(self, entries: Sequence[Any], use_simplejpeg: bool, clip: str):
        if len(entries) == 0:
            raise ValueError(f"clip {clip}: the row has no frames")
        self.entries, self.use_simplejpeg, self.clip = entries, use_simplejpeg, clip
        self.frame_count = len(entries)
        self._bytes: Dict[int, Tuple[Optional[bytes], str]] = {}

    def _get(self, index: int) -> Tuple[Optional[bytes], str]:
        if index not in self._bytes:
            self._bytes[index] = frame_bytes(self.entries[index])
        return self._bytes[index]

    def probe(self, index: int) -> Tuple[Tuple[int, int], bool]:
        """((height, width) of frame ``index``, whether the decoder can downscale it)."""
        data, name = self._get(index)
        if data is None:
            width, height = self.entries[index].size
            return (height, width), False
        return image_size(data, self.use_simplejpeg, name), _is_jpeg(data)

    def decode(self, indices: np.ndarray, reduce: int, scratch: Optional[Scratch] = None,
               out: Optional[np.ndarray] = None) -> np.ndarray:
        """Frames ``indices`` as one uint8 (N, H, W, 3) array at the first frame's size (divided by ``reduce``),
        decoded into ``out`` when given (it must have that shape), else into ``scratch``'s "frames" array
        (valid until that scratch's next request of it) or, without scratch, into new memory."""
        (height, width), scalable = self.probe(int(indices[0]))
        reduce = reduce if scalable else 1
        shape = (len(indices), -(-height // reduce), -(-width // reduce), 3)
        if out is not None and out.shape != shape:
            raise ValueError(f"clip {self.clip}: frames of shape {shape} do not fit a buffer of {out.shape}")
        if out is None:
            out = scratch.get("frames", shape, np.uint8) if scratch is not None else np.empty(shape, np.uint8)
        frames = out
        # the common case first, with no per-frame header parse: JPEG bytes of the clip's size, decoded
        # in place by simplejpeg (anything else, or any error, takes the general path below)
        decode_jpeg = _simplejpeg.decode_jpeg if self.use_simplejpeg and reduce == 1 else None
        for position, index in enumerate(indices.tolist()):
            target = frames[position]
            if decode_jpeg is not None:
                entry = self.entries[index]
                data = entry.get("bytes") if isinstance(entry, dict) else None
                if data is not None:
                    try:
                        if decode_jpeg(data, colorspace="RGB", buffer=target).shape == target.shape:
                            continue
                    except (TypeError, ValueError):  # not a JPEG, another size, CMYK: decided below
                        pass
            data, name = self._get(index)
            if data is None:
                image = self.entries[index]
                array = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
            else:
                array = decode_image(data, reduce, self.use_simplejpeg, name, target)
            if array.ctypes.data != target.ctypes.data:  # not decoded in place
                frames[position] = _fit(array, frames.shape[1], frames.shape[2])
        return frames


class Mp4Clip:
    """A row of the videos config: mp4 bytes (or path) and its frame count."""

    def __init__(self, video: Any, frame_count: Optional[int], clip: str):
        if isinstance(video, dict):
            video = video.get("bytes") if video.get("bytes") is not None else video.get("path")
        if video is None:
            raise ValueError(f"clip {clip}: the row's video has neither bytes nor path")
        self.video, self.clip = video, clip
        self.frame_count = int(frame_count) if frame_count else count_frames(video)

    def probe(self, index: int) -> Tuple[None, bool]:
        return None, False

    def decode(self, indices: np.ndarray, reduce: int, scratch: Optional[Scratch] = None) -> np.ndarray:
        """Frames ``indices`` at full size, in new memory (video frames are not DCT-scaled here)."""
        return read_video_frames(self.video, indices)


def row_sources(batch: Dict[str, List[Any]], use_simplejpeg: bool) -> List[Any]:
    """The clips of a batch of rows: a FrameListClip per row of the faces or scenes configs, an Mp4Clip per
    row of the videos config."""
    ids = batch.get("clip_id")
    if "frames" in batch:
        frames = batch["frames"]
        return [FrameListClip(f, use_simplejpeg, ids[i] if ids else f"#{i}") for i, f in enumerate(frames)]
    if "video" in batch:
        counts = batch.get("num_frames") or [None] * len(batch["video"])
        return [Mp4Clip(v, counts[i], ids[i] if ids else f"#{i}") for i, v in enumerate(batch["video"])]
    raise ValueError(f"a batch needs a 'frames' or a 'video' column; got columns {sorted(batch)}")
