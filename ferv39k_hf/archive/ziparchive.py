"""Zip files read in place, and the path rules that place a file in the archive.

A drive download of FERV39k may stay zipped. Its face crops alone are about a
million members; a ``zipfile.ZipFile`` keeps a ``ZipInfo`` object per member
(hundreds of bytes each) in every process that opens it. So the central
directory is read once, at discovery (:mod:`ferv39k_hf.archive.zipindex`), into
one small record per clip (its names as one string, its numbers as one array),
and a member is read later with one ``os.pread`` of its local header and data,
from a file descriptor cached per process. Nothing is ever extracted or written.

The path rules (part folder names, split file names, frame order) live here
because folders and zips share them, and so do the reads of one member.
"""

from __future__ import annotations

import os
import re
import struct
import threading
import zipfile
import zlib
from functools import lru_cache
from typing import Dict, List, Optional, Tuple

from ferv39k_hf.archive.zipdir import BAD_ENTRY, DUPLICATE_NAME, FIELDS  # noqa: F401  (the numbers read_member takes)
from ferv39k_hf.errors import LayoutError
from ferv39k_hf.fileio import MAX_FRAME_BYTES
from ferv39k_hf.taxonomy import CONFIG_NAMES, PART_FOLDERS, SCENES

PART_KINDS = CONFIG_NAMES  # the parts that hold clips
FRAME_SUFFIXES = (".jpg", ".jpeg")
VIDEO_SUFFIX = ".mp4"
_KIND_OF_FOLDER = {name: kind for kind, name in PART_FOLDERS.items()}
_DRIVE_SUFFIX = re.compile(r"(?:-\d+| \(\d+\))$")  # "-002" from drive exports, " (1)" from browsers
_SPLIT_NAME = re.compile(r"^(train|test)_(\w+)\.csv$", re.IGNORECASE)
_SCENE_BY_LOWER = {scene.lower(): scene for scene in SCENES}
_SEPARATORS = re.compile(r"[/\\]")
_DIGITS = re.compile(r"(\d+)")

SplitKey = Tuple[str, Optional[str]]  # ("train", None) for train_All.csv, ("test", "Crime") for test_Crime.csv


@lru_cache(maxsize=8192)
def folder_kind(name: str) -> Optional[str]:
    """The part ("faces", ..., "setups") a folder name denotes, drive suffix allowed; else None."""
    return _KIND_OF_FOLDER.get(name) or _KIND_OF_FOLDER.get(_DRIVE_SUFFIX.sub("", name))


def split_file_key(basename: str) -> Optional[SplitKey]:
    """The split file a name denotes (train_All.csv, test_Crime.csv), else None."""
    match = _SPLIT_NAME.match(basename)
    if match is None:
        return None
    split, which = match.group(1).lower(), match.group(2).lower()
    if which == "all":
        return split, None
    scene = _SCENE_BY_LOWER.get(which)
    return (split, scene) if scene else None


def natural_key(name: str) -> Tuple[list, str]:
    """Sort key that orders digit runs by value: 2.jpg before 10.jpg."""
    chunks = _DIGITS.split(name)
    return [int(c) if i % 2 else c.lower() for i, c in enumerate(chunks)], name


_PADDED_FRAME = re.compile(r"^\d+\.jpe?g$", re.IGNORECASE)


def sort_frame_names(names: List[str]) -> List[str]:
    """Frame names in natural order; zero-padded digit names (the archive's) sort as plain strings."""
    if names and len({len(n) for n in names}) == 1 and all(_PADDED_FRAME.match(n) for n in names):
        return sorted(names)  # same order as natural_key, at a fraction of the cost
    return sorted(names, key=natural_key)


def is_hidden(name: str) -> bool:
    """Dot files and folders, and the __MACOSX folder macOS adds to zips."""
    return name.startswith(".") or name == "__MACOSX"


def components(name: str) -> List[str]:
    """A path's components; backslashes count as separators, "" and "." are dropped."""
    return [c for c in _SEPARATORS.split(name) if c not in ("", ".")]


def is_frame(name: str) -> bool:
    return name.lower().endswith(FRAME_SUFFIXES) and not is_hidden(name)


def is_video(name: str) -> bool:
    return name.lower().endswith(VIDEO_SUFFIX) and not is_hidden(name)


# One member's numbers (FIELDS of them: header_offset, compress_size, file_size, crc, compress_type,
# flag_bits) and the flags BAD_ENTRY and DUPLICATE_NAME (bits above the zip's own 16) come from zipdir.

_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # zipfile's sizeFileHeader layout, 30 bytes
_LOCAL_SIGNATURE = b"PK\x03\x04"


# Per-process handles: a descriptor or ZipFile inherited over fork belongs to the
# parent, so the cache is keyed by pid and each process opens its own.
_HANDLES: Dict[Tuple[int, str], int] = {}
_ZIPFILES: Dict[Tuple[int, str], zipfile.ZipFile] = {}
_LOCK = threading.Lock()


def _descriptor(container: str) -> int:
    key = (os.getpid(), container)
    fd = _HANDLES.get(key)
    if fd is None:
        with _LOCK:
            fd = _HANDLES.get(key)
            if fd is None:
                try:
                    fd = os.open(container, os.O_RDONLY | getattr(os, "O_BINARY", 0))
                except OSError as err:
                    raise LayoutError(f"{container}: cannot open the zip file ({err})") from None
                _HANDLES[key] = fd
    return fd


def _pread(fd: int, size: int, offset: int) -> bytes:
    if hasattr(os, "pread"):
        return os.pread(fd, size, offset)
    with _LOCK:  # no pread (Windows): seek and read under the lock
        os.lseek(fd, offset, os.SEEK_SET)
        return os.read(fd, size)


def _read_with_zipfile(container: str, name: str, most: int) -> bytes:
    """Slow path for compression methods other than stored and deflate: at most ``most`` bytes."""
    key = (os.getpid(), container)
    where = f"{container}!{name}"
    with _LOCK:
        try:
            archive = _ZIPFILES.get(key)
            if archive is None:
                archive = _ZIPFILES[key] = zipfile.ZipFile(container)
            with archive.open(name) as member:
                return member.read(most)
        except Exception as err:  # zipfile, bz2 and lzma raise many types for damaged data
            raise LayoutError(f"{where}: cannot read the member ({type(err).__name__}: {err})") from None


def read_member(container: str, name: str, info: Tuple[int, ...], limit: int = MAX_FRAME_BYTES) -> bytes:
    """The bytes of one member, checked against its stored size and CRC, never more than ``limit``."""
    offset, compress_size, file_size, crc, compress_type, flag_bits = info
    where = f"{container}!{name}"
    if flag_bits & BAD_ENTRY:
        raise LayoutError(f"{where}: its entry in the zip directory is damaged (offset or size out of the file)")
    if flag_bits & DUPLICATE_NAME:
        raise LayoutError(f"{where}: the zip holds more than one member of this name (damaged or hostile zip)")
    if flag_bits & 0x1:
        raise LayoutError(f"{where}: the member is encrypted")
    if file_size > limit or compress_size > limit + (limit >> 4):
        raise LayoutError(f"{where}: declares {file_size:,} bytes ({compress_size:,} compressed), more than a file "
                          f"of this kind can hold ({limit:,}): a damaged or hostile zip")
    if compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        data = _read_with_zipfile(container, name, file_size + 1)
    else:
        fd = _descriptor(container)
        header = _pread(fd, _LOCAL_HEADER.size, offset)
        if len(header) != _LOCAL_HEADER.size or header[:4] != _LOCAL_SIGNATURE:
            raise LayoutError(f"{where}: bad local header (damaged or truncated zip)")
        fields = _LOCAL_HEADER.unpack(header)
        start = offset + _LOCAL_HEADER.size + fields[10] + fields[11]
        raw = _pread(fd, compress_size, start)
        if len(raw) != compress_size:
            raise LayoutError(f"{where}: member data is truncated")
        if compress_type == zipfile.ZIP_STORED:
            data = raw
        else:
            data = _inflate(raw, file_size, where)
    if len(data) != file_size or zlib.crc32(data) != crc:
        raise LayoutError(f"{where}: size or CRC does not match the zip directory (damaged member)")
    return data


def _inflate(raw: bytes, file_size: int, where: str) -> bytes:
    """Deflated ``raw`` inflated to at most one byte past its declared ``file_size``: a member that
    inflates further is damaged, however far it would go."""
    inflater = zlib.decompressobj(-15)
    try:
        data = inflater.decompress(raw, file_size + 1)
    except zlib.error as err:
        raise LayoutError(f"{where}: cannot inflate the member ({err})") from None
    if len(data) > file_size:
        raise LayoutError(f"{where}: inflates past its declared {file_size:,} bytes (damaged or hostile zip)")
    if not inflater.eof:
        raise LayoutError(f"{where}: the compressed data ends early (damaged or truncated zip)")
    return data


def drop_stale_handle(container: str) -> None:
    """Close this process's cached handle of ``container`` if the zip was replaced or rewritten since it was opened.

    Reads through it would find the new central directory's offsets and CRCs wrong. An unchanged
    zip keeps its handle, so a discovery never closes one that another thread is reading from.
    """
    key = (os.getpid(), container)
    archive = _ZIPFILES.get(key)
    held = [fd for fd in (_HANDLES.get(key), archive.fp.fileno() if archive and archive.fp else None) if fd is not None]
    if not held:
        return
    try:
        now = _identity(os.stat(container))
    except OSError:
        now = None  # gone: index_zip reports it
    if any(_identity(os.fstat(fd)) != now for fd in held):
        close_handles(container)


def _identity(info: os.stat_result) -> Tuple[int, ...]:
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns


def close_handles(container: Optional[str] = None) -> None:
    """Close this process's cached handles of ``container`` (default: every zip); they reopen on the next read."""
    pid = os.getpid()
    with _LOCK:
        for key in [k for k in _HANDLES if k[0] == pid and container in (None, k[1])]:
            os.close(_HANDLES.pop(key))
        for key in [k for k in _ZIPFILES if k[0] == pid and container in (None, k[1])]:
            _ZIPFILES.pop(key).close()
