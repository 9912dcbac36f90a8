"""Reading one clip from the archive, with the checks every build runs.

The cheap checks look at a JPEG's start and end markers and an mp4's first
box; ``deep`` decodes every frame. The same functions serve the builder, the
Parquet export and ``ferv39k-hf verify``.
"""

from __future__ import annotations

import io
import os
import posixpath
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

from ferv39k_hf.archive.annotations import ClipRecord
from ferv39k_hf.archive.files import ByteSink, FileRef
from ferv39k_hf.archive.layout import Layout, Part
from ferv39k_hf.errors import LayoutError
from ferv39k_hf.fileio import check_file_size, count_frames, open_regular

_JPEG_START = b"\xff\xd8\xff"
_JPEG_END = b"\xff\xd9"
_PNG_START, _PNG_END = b"\x89PNG\r\n\x1a\n", b"IEND"
# Encoders may pad after the end marker; look for it near the end only.
_JPEG_TAIL = 64


class ClipDamaged(Exception):
    """A clip that cannot become a sound row; the message says why."""


def jpeg_problem(head: bytes, tail: bytes) -> Optional[str]:
    """Why a JPEG (or PNG: DFEW/MAFW frame folders may hold them) with these first and last bytes is not complete."""
    if head.startswith(_PNG_START):
        return None if _PNG_END in tail[-_JPEG_TAIL:] else "truncated PNG (no IEND chunk)"
    if not head.startswith(_JPEG_START):
        return "not a JPEG (no start-of-image marker)"
    if _JPEG_END not in tail[-_JPEG_TAIL:]:
        return "truncated JPEG (no end-of-image marker)"
    return None


def jpeg_decode_problem(data: bytes) -> Optional[str]:
    """Why a full decode of this JPEG fails, or None."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except Exception as err:  # PIL raises many types for damaged data
        return f"JPEG does not decode ({type(err).__name__}: {err})"
    return None


def mp4_problem(head: bytes) -> Optional[str]:
    """Why a file with this start is not an mp4/mov container, or None."""
    if len(head) < 12 or head[4:8] not in (b"ftyp", b"moov", b"mdat", b"free", b"wide"):
        return "not an mp4 file (no ftyp box)"
    return None


def _read_head_tail(ref: FileRef, limit: int) -> tuple:
    """First and last bytes of a plain file without reading all of it; LayoutError if it holds over ``limit``."""
    fd, size = open_regular(ref.name)
    with open(fd, "rb") as handle:
        check_file_size(ref.name, size, limit)
        head = handle.read(16)
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(0, size - _JPEG_TAIL))
        tail = handle.read()
    return head, tail


def frame_problem(part: Part, ref: FileRef, deep: bool = False, data: Optional[Any] = None) -> Optional[str]:
    """Why this frame is not a complete JPEG, or None.

    ``data``: the frame's bytes (or a memoryview of them) when the caller has them already. Otherwise a
    plain file's cheap check reads only its first and last bytes; zip members
    and ``deep`` (a full decode) read the whole frame.
    """
    try:
        if data is None and ref.container is None and not deep:
            head, tail = _read_head_tail(ref, part.max_bytes)
        else:
            data = part.read(ref) if data is None else data
            head, tail = bytes(data[:16]), bytes(data[-_JPEG_TAIL:])  # data may be a memoryview
    except (LayoutError, OSError) as err:  # a damaged zip member (CRC, size, truncation) or an unreadable file
        return str(err)
    problem = jpeg_problem(head, tail)
    if problem is None and deep:
        problem = jpeg_decode_problem(data)
    return problem


_NUMBERED_FRAME = re.compile(r"^(\d+)\.jpe?g$", re.IGNORECASE)


def numbering_gap(names: Sequence[str]) -> Optional[str]:
    """What a clip's frame names lack when they are numbers with a gap ("frame numbers skip 05, 07 ..."), or None.

    The archive numbers a clip's frames consecutively, so a gap means a frame was lost (deleted, or never
    unpacked). Names that are not all plain numbers say nothing either way."""
    numbers = set()
    for name in names:
        match = _NUMBERED_FRAME.match(posixpath.basename(name))
        if match is None:
            return None
        numbers.add(int(match.group(1)))
    if not numbers:
        return None
    first, last = min(numbers), max(numbers)
    if last - first + 1 == len(numbers):
        return None
    missing = [n for n in range(first, last + 1) if n not in numbers]
    width = len(_NUMBERED_FRAME.match(posixpath.basename(names[0])).group(1))
    shown = ", ".join(f"{n:0{width}d}" for n in missing[:5])
    shown += f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    return (f"frame numbers skip {shown} ({len(numbers)} frames numbered {first:0{width}d} to {last:0{width}d}): "
            "a frame may have been lost")


class FrameBatch:
    """The frames of consecutive clips, packed: their bytes one after another in
    one reusable :class:`~ferv39k_hf.archive.files.ByteSink`, with each frame's end
    offset and path. What :meth:`ClipReader.read_into` fills and the Parquet
    export hands to Arrow without copying."""

    def __init__(self) -> None:
        self.sink = ByteSink()
        self.ends: List[int] = []  # frame i is sink.data[ends[i - 1] (or 0):ends[i]]
        self.paths: List[str] = []  # "Scene/Emotion/NNNN/00.jpg"

    def __len__(self) -> int:
        return len(self.ends)

    def clear(self) -> None:
        self.truncate(0)

    def truncate(self, frames: int) -> None:
        """Keep the first ``frames`` frames only."""
        del self.ends[frames:], self.paths[frames:]
        self.sink.end = self.ends[-1] if self.ends else 0


@dataclass
class ClipReader:
    """Reads clips of one part (faces, scenes or videos) as example fields.

    ``frames="copy"`` returns the archive's bytes; ``frames="reference"``
    returns absolute paths only (an unpacked archive is required).
    """

    layout: Layout
    kind: str = "faces"
    frames: str = "copy"
    deep: bool = False

    def __post_init__(self) -> None:
        if self.frames not in ("copy", "reference"):
            raise ValueError(f"frames must be 'copy' or 'reference', got {self.frames!r}")
        self.part = self.layout.part(self.kind)

    def read(self, record: ClipRecord) -> Dict[str, Any]:
        """``{"num_frames", "frames"}`` or ``{"num_frames", "video"}``; ClipDamaged if unsound."""
        if self.kind == "videos":
            return self._read_video(record)
        return self._read_frames(record)

    def _read_frames(self, record: ClipRecord) -> Dict[str, Any]:
        refs = self.frame_refs(record)
        frames = [self._read_frame(ref, f"{record.clip_id}/{posixpath.basename(ref.name)}") for ref in refs]
        return {"num_frames": len(frames), "frames": frames}

    def frame_refs(self, record: ClipRecord) -> List[FileRef]:
        """The clip's frames as listed, or ClipDamaged naming the first entry that is not a frame to read
        (the listing verify checks: nothing named like a frame is passed over without a word)."""
        refs, problems = self.part.scan_clip(record.clip_id)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise ClipDamaged(f"{problems[0]}{more}")
        if not refs:
            raise ClipDamaged(f"clip folder missing or empty ({self.part.clip_location(record.clip_id)})"
                              + self.part.why_missing(record.clip_id))
        return refs

    def read_into(self, record: ClipRecord, batch: FrameBatch) -> int:
        """Append the clip's frames to ``batch``; the number of frames, or ClipDamaged, leaving ``batch`` as it was.

        The frames and checks of :meth:`read`, for ``frames="copy"`` of the
        faces and scenes parts, without a bytes object per frame.
        """
        if self.kind == "videos" or self.frames != "copy":
            raise ValueError("read_into reads copied frames of the faces and scenes parts only")
        refs = self.frame_refs(record)
        first, sink, read_into = len(batch.ends), batch.sink, self.part.read_into
        try:
            for ref in refs:
                rel = f"{record.clip_id}/{ref.name.rpartition('/')[2]}"
                start = sink.end
                try:
                    read_into(ref, sink)
                except LayoutError as err:  # a damaged zip member (CRC, size, truncation) or an unreadable file
                    raise ClipDamaged(str(err)) from None
                end = sink.end
                problem = frame_problem(self.part, ref, self.deep, sink.view(start, end))
                if problem:
                    raise ClipDamaged(f"frame {rel}: {problem}")
                batch.ends.append(end)
                batch.paths.append(rel)
        except BaseException:
            batch.truncate(first)
            raise
        return len(refs)

    def _read_frame(self, ref: FileRef, rel: str) -> Dict[str, Any]:
        if self.frames == "reference":
            if ref.container is not None:
                raise ClipDamaged(
                    f"--frames reference needs an unpacked archive, but {rel} is inside {ref.container}"
                )
            data = None
        else:
            data = self._read_bytes(ref)
        problem = frame_problem(self.part, ref, self.deep, data)
        if problem:
            raise ClipDamaged(f"frame {rel}: {problem}")
        if data is None:
            return {"bytes": None, "path": os.path.abspath(ref.name)}
        return {"bytes": data, "path": rel}

    def _read_bytes(self, ref: FileRef) -> bytes:
        try:
            return self.part.read(ref)
        except LayoutError as err:  # a damaged zip member (CRC, size, truncation) or an unreadable file
            raise ClipDamaged(str(err)) from None

    def _read_video(self, record: ClipRecord) -> Dict[str, Any]:
        ref = self.part.video(record.clip_id)
        if ref is None:
            raise ClipDamaged(f"video missing ({self.part.clip_location(record.clip_id)})")
        data = self._read_bytes(ref)
        problem = mp4_problem(data[:16])
        if problem:
            raise ClipDamaged(f"video {self.part.relative_path(ref)}: {problem}")
        try:
            num_frames = count_frames(data)
        except Exception as err:  # PyAV raises its own error types for broken streams
            raise ClipDamaged(f"video {self.part.relative_path(ref)}: does not decode ({err})") from None
        if self.frames == "reference":
            if ref.container is not None:
                raise ClipDamaged(f"--frames reference needs an unpacked archive, but the video is in {ref.container}")
            return {"num_frames": num_frames, "video": {"bytes": None, "path": os.path.abspath(ref.name)}}
        return {"num_frames": num_frames, "video": {"bytes": data, "path": self.part.relative_path(ref)}}

