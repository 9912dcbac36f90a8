"""Ground floor: bounded reads of files, the byte limits of each kind of file, and a video's frame count."""

from __future__ import annotations

import io
import os
import stat
from typing import Tuple, Union

from ferv39k_hf.errors import LayoutError

__all__ = [
    "MAX_FRAME_BYTES",
    "MAX_SPLIT_FILE_BYTES",
    "MAX_VIDEO_BYTES",
    "VideoSource",
    "check_file_size",
    "count_frames",
    "describe_source",
    "open_regular",
    "open_video",
    "read_file",
    "unreadable",
    "video_errors",
]

# The most bytes one file may hold before it counts as damaged or hostile (a zip bomb declares or
# inflates to gigabytes): a face crop is about 10 KB, a scene frame under 1 MB, a clip's mp4 a few MB,
# a split file about 1 MB. Reads check the declared size first and never go past it.
MAX_FRAME_BYTES = 64 << 20
MAX_VIDEO_BYTES = 512 << 20
MAX_SPLIT_FILE_BYTES = 64 << 20

VideoSource = Union[bytes, bytearray, memoryview, str, "os.PathLike[str]"]


def unreadable(path: str, err: OSError) -> LayoutError:
    """The LayoutError for a file that cannot be read, naming it and why."""
    return LayoutError(f"{path}: cannot read the file ({err.strerror})")


def check_file_size(path: str, size: int, limit: int) -> None:
    """LayoutError naming ``path`` when ``size`` is more than ``limit``."""
    if size > limit:
        raise LayoutError(f"{path}: {size:,} bytes, more than a file of this kind can hold ({limit:,}): "
                          "damaged, or not what its name says")


def open_regular(path: str) -> Tuple[int, int]:
    """``(fd, size)`` of a regular file opened for reading; LayoutError naming ``path`` for anything else.

    O_NONBLOCK: a FIFO put where a file was listed must not hang the read (it changes nothing for files)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as err:
        raise unreadable(path, err) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise LayoutError(f"{path}: not a regular file (it changed since it was listed, or is a device or FIFO)")
    return fd, info.st_size


def read_file(path: str, limit: int) -> bytes:
    """The bytes of a plain file, refused before reading when it holds more than ``limit``."""
    fd, size = open_regular(path)
    try:
        with open(fd, "rb") as handle:
            check_file_size(path, size, limit)
            data = handle.read(size + 1)  # read(n) allocates n bytes first: never the limit itself
    except LayoutError:  # the size check's own message (a LayoutError is an OSError too)
        raise
    except OSError as err:
        raise unreadable(path, err) from None
    if len(data) != size:
        raise LayoutError(f"{path}: the file {'grew' if len(data) > size else 'shrank'} while it was read")
    return data


# --- videos -----------------------------------------------------------------------------------


def _import_av():
    try:
        import av
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("reading mp4 clips needs PyAV: pip install 'ferv39k-hf[video]'") from err
    return av


def describe_source(source: VideoSource) -> str:
    """A video's path, or its size when it is bytes: what messages call it."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes of video>"
    return os.fspath(source)


def open_video(source: VideoSource):
    """A PyAV container reading ``source`` (the file's bytes or its path)."""
    av = _import_av()
    if isinstance(source, (bytes, bytearray, memoryview)):
        return av.open(io.BytesIO(bytes(source)), mode="r")
    return av.open(os.fspath(source), mode="r")


def video_errors():
    """The exception types PyAV raises for a file it cannot read."""
    av = _import_av()
    return (av.error.FFmpegError,) if hasattr(av, "error") else (OSError,)


def count_frames(source: VideoSource, decode: bool = False) -> int:
    """Number of frames of a video.

    By default the container's frame count, or the number of video packets when
    the container does not record one (no decoding). ``decode=True`` decodes the
    stream and counts frames, which is exact for any file.
    """
    try:
        with open_video(source) as container:
            if not container.streams.video:
                raise ValueError(f"{describe_source(source)}: no video stream")
            stream = container.streams.video[0]
            if decode:
                return sum(1 for _ in container.decode(stream))
            if stream.frames:
                return int(stream.frames)
            return sum(1 for packet in container.demux(stream) if packet.size)
    except video_errors() as err:
        raise ValueError(f"{describe_source(source)}: cannot read video: {err}") from err
