"""Read chosen frames of an mp4 clip with PyAV (which bundles its own FFmpeg).

FERV39k's clips are a few dozen frames long, so seeking buys nothing: the
decoder runs forward from the first frame, converts to RGB only the frames that
were asked for, and stops after the last of them.
"""

from __future__ import annotations

import io
import os
from typing import Iterable, Union

import numpy as np

__all__ = ["read_video_frames", "count_frames", "VideoSource"]

VideoSource = Union[bytes, bytearray, memoryview, str, "os.PathLike[str]"]


def _import_av():
    try:
        import av
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("reading mp4 clips needs PyAV: pip install 'ferv39k-hf[video]'") from err
    return av


def _describe(source: VideoSource) -> str:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes of video>"
    return os.fspath(source)


def _open(source: VideoSource):
    av = _import_av()
    if isinstance(source, (bytes, bytearray, memoryview)):
        return av.open(io.BytesIO(bytes(source)), mode="r")
    return av.open(os.fspath(source), mode="r")


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
        raise ValueError(f"{_describe(source)}: negative frame index in {wanted.tolist()}")
    needed = np.unique(wanted)
    decoded = {}
    last_frame = None
    try:
        with _open(source) as container:
            if not container.streams.video:
                raise ValueError(f"{_describe(source)}: no video stream")
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
                raise ValueError(f"{_describe(source)}: the video stream has no decodable frame")
            missing = [i for i in needed.tolist() if i not in decoded]
            if missing:
                tail = last_frame.to_ndarray(format="rgb24")
                decoded.update((i, tail) for i in missing)
    except _av_errors() as err:
        raise ValueError(f"{_describe(source)}: cannot decode video: {err}") from err
    return np.stack([decoded[int(i)] for i in wanted])


def _av_errors():
    av = _import_av()
    return (av.error.FFmpegError,) if hasattr(av, "error") else (OSError,)


def count_frames(source: VideoSource, decode: bool = False) -> int:
    """Number of frames of a video.

    By default the container's frame count, or the number of video packets when
    the container does not record one (no decoding). ``decode=True`` decodes the
    stream and counts frames, which is exact for any file.
    """
    try:
        with _open(source) as container:
            if not container.streams.video:
                raise ValueError(f"{_describe(source)}: no video stream")
            stream = container.streams.video[0]
            if decode:
                return sum(1 for _ in container.decode(stream))
            if stream.frames:
                return int(stream.frames)
            return sum(1 for packet in container.demux(stream) if packet.size)
    except _av_errors() as err:
        raise ValueError(f"{_describe(source)}: cannot read video: {err}") from err
