"""Files of an archive: a file's identity, size-bounded reads, and the buffer a clip's frames are read into."""

from __future__ import annotations

import mmap
import os
import stat
from dataclasses import dataclass
from typing import Any, Optional, Tuple

from ferv39k_hf.errors import LayoutError

__all__ = ["ByteSink", "FileRef", "check_file_size", "open_regular", "read_file"]


@dataclass(frozen=True)
class FileRef:
    """One file of the archive."""

    container: Optional[str]  # absolute path of the zip holding it, or None for a plain file
    name: str  # absolute file path, or the member name inside the zip
    # The size when listing gave it for free (zip members); a clip folder's
    # listing does not stat every frame, so a plain file's size is looked up when asked.
    known_size: Optional[int] = None
    crc: Optional[int] = None  # a zip member's CRC-32, from the central directory

    @property
    def size(self) -> int:
        if self.known_size is not None:
            return self.known_size
        try:
            return os.stat(self.name).st_size
        except OSError as err:
            raise _unreadable(self.name, err) from None

    @property
    def display(self) -> str:
        return f"{self.container}!{self.name}" if self.container else self.name

    def identity(self) -> Tuple[Any, ...]:
        """What changes when the content may have, without reading it: a zip member's size and CRC-32;
        a plain file's size, mtime and ctime in ns (unzip and ``cp -p`` restore an old mtime, never a ctime)."""
        if self.container is not None:
            return self.known_size, self.crc
        try:
            info = os.stat(self.name)
        except OSError as err:  # gone or unreadable: the build names the file when it reads it
            return "unreadable", err.errno
        return info.st_size, info.st_mtime_ns, info.st_ctime_ns


def _unreadable(path: str, err: OSError) -> LayoutError:
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
        raise _unreadable(path, err) from None
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
        raise _unreadable(path, err) from None
    if len(data) != size:
        raise LayoutError(f"{path}: the file {'grew' if len(data) > size else 'shrank'} while it was read")
    return data


class ByteSink:
    """Files read one after another into one reusable buffer, without a copy per file.

    ``data[:end]`` holds what was appended since the last ``clear()``. The
    buffer doubles when full and is otherwise reused, so reading a file costs
    its read system calls and no fresh memory; Arrow can wrap ``data``
    without copying it (drop such wrappers before the next ``clear()``).
    ``data`` is private anonymous memory: a page is only mapped when first written,
    so a large capacity costs nothing until it is used.
    """

    def __init__(self, capacity: int = 1 << 26):
        self.data = _anonymous_memory(max(capacity, 1))
        self._view = memoryview(self.data)
        self.end = 0

    def clear(self) -> None:
        self.end = 0

    def _grow(self) -> None:
        # A new buffer rather than a resize: Arrow may still wrap the old one.
        data = _anonymous_memory(2 * len(self.data))
        data[:self.end] = self._view[:self.end]
        self._view.release()
        self.data, self._view = data, memoryview(data)

    def append(self, data: bytes) -> None:
        while self.end + len(data) > len(self.data):
            self._grow()
        self._view[self.end:self.end + len(data)] = data
        self.end += len(data)

    def fill_from(self, fd: int, most: int) -> int:
        """Append what is left to read from ``fd``, but at most ``most`` bytes; how many were appended."""
        start = end = self.end
        try:
            while end - start < most:
                if end == len(self.data):
                    self.end = end
                    self._grow()
                read = os.readv(fd, (self._view[end:min(len(self.data), start + most)],))
                if not read:
                    break
                end += read
        finally:
            self.end = end
        return end - start

    def view(self, start: int, end: int) -> memoryview:
        return self._view[start:end]


def _anonymous_memory(size: int) -> Any:
    """``size`` writable bytes whose pages are mapped on first write (a bytearray where mmap lacks the flag)."""
    if hasattr(mmap, "MAP_PRIVATE"):
        return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)
    return bytearray(size)
