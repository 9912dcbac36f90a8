"""A zip's central directory read into numpy arrays a few megabytes at a time, with no object per member.

``zipfile.ZipFile`` builds a ``ZipInfo`` (several hundred bytes) for every
member and holds the whole directory in memory: for FERV39k's 1.09 million
face crops that is about 20 s and 800 MB. Here the directory is read in
chunks; the fixed 46-byte headers of a chunk are found and decoded with
numpy, and its names are decoded with one call per chunk. The rules are
zipfile's: the end record found the same way (zip64 included), names cut at
the first NUL, UTF-8 when flag bit 11 is set and cp437 otherwise, offsets
shifted when the zip was appended to another file, zip64 sizes and offsets
taken from the extra field. A directory zipfile would refuse is refused here,
as a :class:`ZipDirectoryError` (one leniency: an extra field's structure is
checked only where zip64 numbers are read from it, since nothing else in it is
used), and a member whose offset or sizes cannot be right for the file is
marked :data:`BAD_ENTRY` (never read).
"""

from __future__ import annotations

import os
import struct
from typing import Iterator, List, NamedTuple, Tuple

import numpy as np

# The numbers kept per member, in this order (a row of ``DirectoryChunk.numbers``).
FIELDS = 6  # header_offset, compress_size, file_size, crc, compress_type, flag_bits
# Bits above the zip's own 16 flag bits, set while reading: such a member is damaged, never read.
BAD_ENTRY = 1 << 16  # offsets or sizes that cannot be right (a truncated or spliced zip)
DUPLICATE_NAME = 1 << 17  # the zip holds more than one member of this name (set by the caller)
UTF8_FLAG = 0x800
CHUNK_BYTES = 4 << 20  # directory bytes decoded at a time; a record is at most 46 + 3 * 65,535 bytes

_END = struct.Struct("<4s4H2LH")  # end of central directory, 22 bytes
_END64 = struct.Struct("<4sQ2H2L4Q")  # zip64 end of central directory, 56 bytes
_LOCATOR64 = struct.Struct("<4sLQL")  # zip64 end of central directory locator, 20 bytes
_CENTRAL = 46
_LENGTHS = struct.Struct("<3H")  # name, extra and comment lengths, at 28 in a central header
_SIGNATURE = b"PK\x01\x02"
_NO_SIZE = 0xFFFFFFFF


class ZipDirectoryError(ValueError):
    """The central directory cannot be read (zipfile would refuse the file too); the message says why."""


class DirectoryChunk(NamedTuple):
    """Consecutive members of a zip, in directory order.

    ``names``: the member names (``str``), as zipfile gives them. ``external_attr``:
    uint32, one per member. ``numbers``: uint64 array of shape ``(len(names), FIELDS)``;
    header offsets already include any bytes the zip was appended to, and a member
    marked ``BAD_ENTRY`` has zeros but for its flag bits.
    """

    names: List[str]
    external_attr: np.ndarray
    numbers: np.ndarray


def read_directory(fd: int, size: int) -> Iterator[DirectoryChunk]:
    """The central directory of the zip open as ``fd`` (``size`` bytes), chunk by chunk.

    Example::

        fd = os.open("faces.zip", os.O_RDONLY)
        names = [n for chunk in read_directory(fd, os.fstat(fd).st_size) for n in chunk.names]
    """
    start, length, concat = _locate(fd, size)
    done, chunk = 0, CHUNK_BYTES
    while done < length:
        want = min(chunk, length - done)
        buf = os.pread(fd, want, start + done)
        if len(buf) != want:
            raise ZipDirectoryError("Truncated central directory")
        last = done + want == length
        positions, used = _records(buf, last)
        if not len(positions):
            if last:
                raise ZipDirectoryError("Truncated central directory")
            chunk *= 2  # a record longer than the chunk: read more at once
            continue
        yield _decode(buf, positions, concat, size)
        done, chunk = done + used, CHUNK_BYTES


def _locate(fd: int, size: int) -> Tuple[int, int, int]:
    """(directory start, directory length, bytes before the zip), found as zipfile finds them."""
    tail = os.pread(fd, min(size, (1 << 16) + _END.size), max(0, size - (1 << 16) - _END.size))
    at = len(tail) - _END.size
    if not (at >= 0 and tail[at:at + 4] == b"PK\x05\x06" and tail[-2:] == b"\0\0"):
        at = tail.rfind(b"PK\x05\x06")  # a zip comment follows the end record
        if at < 0 or at + _END.size > len(tail):
            raise ZipDirectoryError("File is not a zip file")
    end = _END.unpack_from(tail, at)
    location = size - len(tail) + at
    length, offset, zip64 = end[5], end[6], False
    if location >= _LOCATOR64.size:
        locator = _LOCATOR64.unpack(os.pread(fd, _LOCATOR64.size, location - _LOCATOR64.size))
        if locator[0] == b"PK\x06\x07":
            if locator[1] != 0 or locator[3] > 1:
                raise ZipDirectoryError("zipfiles that span multiple disks are not supported")
            where = location - _LOCATOR64.size - _END64.size
            if where < 0:
                raise ZipDirectoryError("File is not a zip file")
            record = os.pread(fd, _END64.size, where)
            if record[:4] == b"PK\x06\x06":
                fields = _END64.unpack(record)
                length, offset, zip64 = fields[8], fields[9], True
    concat = location - length - offset - (_END64.size + _LOCATOR64.size if zip64 else 0)
    if offset + concat < 0:
        raise ZipDirectoryError("Bad offset for central directory")
    return offset + concat, length, concat


def _records(buf: bytes, last: bool) -> Tuple[np.ndarray, int]:
    """Start positions of the whole records in ``buf``, and where the first one not whole begins."""
    data = np.frombuffer(buf, np.uint8)
    if len(data) >= _CENTRAL:
        # Every place the signature occurs; when each one's record ends exactly where the next
        # begins, they are the records (a name that holds the signature breaks the chain).
        found = np.flatnonzero((data[:-3] == 0x50) & (data[1:-2] == 0x4B) & (data[2:-1] == 1) & (data[3:] == 2))
        found = found[found + _CENTRAL <= len(data)]
        if len(found) and found[0] == 0:
            ends = found + _CENTRAL + _u16(data, found + 28) + _u16(data, found + 30) + _u16(data, found + 32)
            if np.array_equal(ends[:-1], found[1:]):
                whole = int(np.searchsorted(ends, len(data), side="right"))
                used = int(ends[whole - 1]) if whole else 0
                if whole and (not last or used == len(data)):
                    return found[:whole], used
    return _walk(buf, last)


def _walk(buf: bytes, last: bool) -> Tuple[np.ndarray, int]:
    """What _records finds, one record after another; raises zipfile's errors at the first bad one."""
    positions, at = [], 0
    while at + _CENTRAL <= len(buf):
        if buf[at:at + 4] != _SIGNATURE:
            raise ZipDirectoryError("Bad magic number for central directory")
        end = at + _CENTRAL + sum(_LENGTHS.unpack_from(buf, at + 28))
        if end > len(buf):
            break
        positions.append(at)
        at = end
    if last and at != len(buf):
        raise ZipDirectoryError("Truncated central directory")
    return np.array(positions, np.int64), at


def _u16(data: np.ndarray, at: np.ndarray) -> np.ndarray:
    return data[at].astype(np.int64) | data[at + 1].astype(np.int64) << 8


def _u32(data: np.ndarray, at: np.ndarray) -> np.ndarray:
    return _u16(data, at) | _u16(data, at + 2) << 16


def _decode(buf: bytes, at: np.ndarray, concat: int, size: int) -> DirectoryChunk:
    data = np.frombuffer(buf, np.uint8)
    flags = _u16(data, at + 8)
    name_lengths, extra_lengths = _u16(data, at + 28), _u16(data, at + 30)
    numbers = np.empty((len(at), FIELDS), np.uint64)
    for column, (offset, read) in enumerate([(42, _u32), (20, _u32), (24, _u32), (16, _u32), (10, _u16)]):
        numbers[:, column] = read(data, at + offset)
    numbers[:, 5] = flags
    for i in np.flatnonzero((numbers[:, :3] == _NO_SIZE).any(axis=1)).tolist():
        numbers[i, :3] = _zip64_numbers(buf, int(at[i]) + _CENTRAL + int(name_lengths[i]), int(extra_lengths[i]),
                                        numbers[i, :3].tolist())
    _mark_bad(numbers, concat, size)
    names = _names(buf, at + _CENTRAL, name_lengths, flags)
    return DirectoryChunk(names, _u32(data, at + 38).astype(np.uint32), numbers)


def _zip64_numbers(buf: bytes, start: int, length: int, numbers: List[int]) -> List[int]:
    """header_offset, compress_size, file_size with zip64 values from the extra field, as zipfile reads them."""
    offset, compressed, size = numbers
    extra = buf[start:start + length]
    while len(extra) >= 4:
        kind, n = struct.unpack_from("<HH", extra)
        if n + 4 > len(extra):
            raise ZipDirectoryError(f"Corrupt extra field {kind:04x} (size={n})")
        if kind == 1:
            values, fields = extra[4:n + 4], []
            wanted = [name for name, value in (("File size", size), ("Compress size", compressed),
                                               ("Header offset", offset)) if value == _NO_SIZE]
            for name in wanted:
                if len(values) < 8:
                    raise ZipDirectoryError(f"Corrupt zip64 extra field. {name} not found.")
                fields.append(struct.unpack_from("<Q", values)[0])
                values = values[8:]
            found = dict(zip(wanted, fields))
            size, compressed = found.get("File size", size), found.get("Compress size", compressed)
            offset = found.get("Header offset", offset)
        extra = extra[n + 4:]
    return [offset, compressed, size]


def _mark_bad(numbers: np.ndarray, concat: int, size: int) -> None:
    """Shift header offsets by ``concat``; mark BAD_ENTRY where an offset or size cannot be right."""
    offsets = numbers[:, 0]
    bad = (numbers[:, :3] >= np.uint64(1 << 63)).any(axis=1)
    if concat < 0:
        bad |= offsets < np.uint64(-concat)
    offsets = np.where(bad, np.uint64(0), offsets)
    offsets = offsets - np.uint64(-concat) if concat < 0 else offsets + np.uint64(concat)
    # offsets and sizes are below 2**63 now, so their sum cannot wrap
    bad |= offsets + numbers[:, 1] > np.uint64(size)
    numbers[:, 0] = offsets
    numbers[bad, :5] = 0
    numbers[bad, 5] = (numbers[bad, 5] & np.uint64(0xFFFF)) | np.uint64(BAD_ENTRY)


def _names(buf: bytes, starts: np.ndarray, lengths: np.ndarray, flags: np.ndarray) -> List[str]:
    """The members' names: one decode and one split per chunk when the names hold no newline or NUL."""
    utf8 = (flags & UTF8_FLAG) != 0
    starts, ends = starts.tolist(), (starts + lengths).tolist()
    raw = list(map(buf.__getitem__, map(slice, starts, ends)))
    if utf8.all() or not utf8.any():
        joined = b"\n".join(raw)
        if joined.count(b"\n") == len(raw) - 1 and b"\0" not in joined:
            return _decode_name(joined, bool(utf8.any())).split("\n")
    # a NUL ends a name, as in zipfile
    return [_decode_name(name, is_utf8).split("\0", 1)[0] for name, is_utf8 in zip(raw, utf8.tolist())]


def _decode_name(raw: bytes, utf8: bool) -> str:
    try:
        return raw.decode("utf-8" if utf8 else "cp437")
    except UnicodeDecodeError as err:
        raise ZipDirectoryError(f"a member name is not valid UTF-8 ({err.reason})") from None
