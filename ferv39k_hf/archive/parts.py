"""The parts of an archive as discovery found them: a part's clips and their files, split sources, unsafe entries."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from ferv39k_hf import fileio
from ferv39k_hf.archive import ziparchive
from ferv39k_hf.archive.files import ByteSink, FileRef
from ferv39k_hf.archive.ziparchive import VIDEO_SUFFIX, components, is_frame, sort_frame_names
from ferv39k_hf.archive.zipindex import ZipClip
from ferv39k_hf.errors import LayoutError
from ferv39k_hf.taxonomy import PART_FOLDERS

__all__ = ["Part", "SplitSource", "UnsafeEntry", "frame_entry_problem", "frame_path_problem", "is_inside"]


@dataclass(frozen=True)
class SplitSource:
    """Where a split file was found."""

    split: str  # "train" or "test"
    display: str  # the file as shown to people
    ref: FileRef


@dataclass(frozen=True)
class UnsafeEntry:
    """A zip member or link that is never read or written."""

    container: Optional[str]  # the zip, or None for an entry on disk
    name: str
    reason: str
    kind: str = "unsafe-entry"  # or "bad-frame": a clip folder's entry that is not a frame file

    def __str__(self) -> str:
        where = f"{self.container}!{self.name}" if self.container else self.name
        return f"{where}: {self.reason}"


def is_inside(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or lies below it."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


NOT_A_FILE = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def frame_entry_problem(entry: os.DirEntry, root_real: str) -> Optional[UnsafeEntry]:
    """Why a clip folder's entry named like a frame is not one to read, or None for a regular file (or a link
    to one inside the root). Nothing named like a frame is passed over without a word."""
    if not entry.is_symlink() and entry.is_file():  # the listing's file type: no stat per frame
        return None
    return frame_path_problem(entry.path, root_real)


def frame_path_problem(path: str, root_real: str) -> Optional[UnsafeEntry]:
    """:func:`frame_entry_problem` for a path (one listed earlier, checked again when it is read)."""
    link = os.path.islink(path)
    if link:
        target = os.path.realpath(path)
        if not is_inside(target, root_real):
            return UnsafeEntry(None, path, f"symbolic link to {target}, outside the root")
    try:
        mode = os.stat(path).st_mode  # follows a link: its target's type
    except OSError as err:
        what = "dangling symbolic link" if link else "entry that cannot be read"
        return UnsafeEntry(None, path, f"{what} ({err.strerror}), not a frame file", "bad-frame")
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in NOT_A_FILE if test(mode)), "not a regular file")
    return UnsafeEntry(None, path, f"{kind}, not a frame file", "bad-frame")


class Part:
    """One archive part: faces, scenes or videos, from any number of folders and zips."""

    def __init__(self, kind: str, root_real: str):
        self.kind = kind
        self.folder = PART_FOLDERS[kind]
        self.max_bytes = fileio.MAX_VIDEO_BYTES if kind == "videos" else fileio.MAX_FRAME_BYTES
        self.roots: List[str] = []  # where the part was found, as shown to people
        self._folders: List[str] = []  # part folders on disk (holding scene folders)
        self._on_disk: Dict[str, List[Tuple[int, str]]] = {}  # clip id -> (folder index, entry name)
        self._in_zips: Dict[str, List[ZipClip]] = {}
        self._root_real = root_real
        self.unlistable: List[Tuple[str, str]] = []  # (folder, why) of folders in the part that could not be listed

    def __repr__(self) -> str:
        return f"Part({self.kind!r}, roots={self.roots!r})"

    def clip_ids(self) -> List[str]:
        """Sorted "Scene/Emotion/NNNN" of every clip present, unknown scene or class names included."""
        return sorted(set(self._on_disk) | set(self._in_zips))

    def clip_locations(self, clip_id: str) -> List[str]:
        """Every place the clip was found (more than one when a folder or zip repeats it)."""
        places = [os.path.join(self._folders[i], *clip_id.split("/")[:2], name)
                  for i, name in self._on_disk.get(clip_id, ())]
        for clip in self._in_zips.get(clip_id, ()):
            inner = clip.prefix + clip.names[0] if self.kind == "videos" else clip.prefix.rstrip("/\\")
            places.append(f"{clip.container}!{inner}")
        return places

    def clip_location(self, clip_id: str) -> str:
        """Where the clip is, or where it was looked for, for messages."""
        places = self.clip_locations(clip_id)
        if places:
            return places[0]
        missing = clip_id + (VIDEO_SUFFIX if self.kind == "videos" else "")
        if not self.roots:
            return missing
        root = self.roots[0]
        return root + missing if root.endswith(("!", "/")) else f"{root}/{missing}"

    def why_missing(self, clip_id: str) -> str:
        """"", or why a clip that is not found may be there after all: a folder above it could not be listed."""
        scene, emotion = clip_id.split("/")[:2]
        for folder, why in self.unlistable:
            if folder.replace(os.sep, "/").endswith((f"/{scene}", f"/{scene}/{emotion}")):
                return f"; the folder {folder} cannot be listed ({why})"
        return ""

    def scan_clip(self, clip_id: str) -> Tuple[List[FileRef], List[UnsafeEntry]]:
        """The clip's frames, natural-sorted, and every entry named like a frame that is not one to read: links
        out of the root, folders, FIFOs, devices, dangling links, an unlistable clip folder."""
        if self.kind == "videos":
            raise LayoutError(f"{self.folder} holds mp4 files, not frame folders: use video({clip_id!r})")
        found: Dict[str, FileRef] = {}  # basename -> first copy found
        unsafe: List[UnsafeEntry] = []
        for index, name in self._on_disk.get(clip_id, ()):
            folder = os.path.join(self._folders[index], *clip_id.split("/")[:2], name)
            self._scan_folder(folder, found, unsafe)
        for clip in self._in_zips.get(clip_id, ()):
            sizes, crcs = clip.info[:, 2].tolist(), clip.info[:, 3].tolist()  # Python ints: they are hashed
            for base, size, crc in zip(clip.names, sizes, crcs):
                if base not in found:
                    found[base] = FileRef(clip.container, clip.prefix + base, size, crc)
        frames = [found[base] for base in sort_frame_names(list(found))]
        return frames, unsafe

    def _scan_folder(self, folder: str, found: Dict[str, FileRef], unsafe: List[UnsafeEntry]) -> None:
        try:
            listing = os.scandir(folder)
        except (FileNotFoundError, NotADirectoryError):
            return  # gone since discovery: the clip reads as missing frames
        except OSError as err:  # the clip's own problem, not the archive's: reported with the clip
            unsafe.append(UnsafeEntry(None, folder, f"clip folder cannot be listed ({err.strerror})", "bad-frame"))
            return
        with listing:
            for entry in listing:
                if not is_frame(entry.name) or entry.name in found:
                    continue
                problem = frame_entry_problem(entry, self._root_real)
                if problem is None:
                    found[entry.name] = FileRef(None, entry.path)
                else:
                    unsafe.append(problem)

    def frames(self, clip_id: str) -> List[FileRef]:
        """The clip folder's *.jpg files, natural-sorted; [] if the clip is missing or empty."""
        return self.scan_clip(clip_id)[0]

    def video(self, clip_id: str) -> Optional[FileRef]:
        """The clip's mp4 (videos part), or None if it is missing."""
        if self.kind != "videos":
            raise LayoutError(f"{self.folder} holds frame folders, not mp4 files: use frames({clip_id!r})")
        for index, name in self._on_disk.get(clip_id, ()):
            path = os.path.join(self._folders[index], *clip_id.split("/")[:2], name)
            try:
                return FileRef(None, path, os.stat(path).st_size)
            except OSError:
                continue
        for clip in self._in_zips.get(clip_id, ()):
            _, _, size, crc, _, _ = clip.member_info(0)
            return FileRef(clip.container, clip.prefix + clip.names[0], size, crc)
        return None

    def clip_files(self, clip_id: str) -> List[FileRef]:
        """The files a row of the clip is read from: its frames, or its mp4; [] if it is missing."""
        if self.kind == "videos":
            ref = self.video(clip_id)
            return [] if ref is None else [ref]
        return self.frames(clip_id)

    def relative_path(self, ref: FileRef) -> str:
        """"Scene/Emotion/NNNN/00.jpg" (or "Scene/Emotion/NNNN.mp4"): the path below the part folder."""
        depth = 3 if self.kind == "videos" else 4
        return "/".join(components(ref.name)[-depth:])

    def read(self, ref: FileRef) -> bytes:
        """The bytes of one file listed by frames() or video(), never more than ``max_bytes``."""
        if ref.container is None:
            return fileio.read_file(ref.name, self.max_bytes)
        clip, index = self._zip_member(ref)
        return ziparchive.read_member(ref.container, ref.name, clip.member_info(index), self.max_bytes)

    def read_into(self, ref: FileRef, sink: ByteSink) -> None:
        """Append the bytes of one file listed by frames() or video() to ``sink``; the same checks as read()."""
        if ref.container is not None:
            sink.append(self.read(ref))
            return
        start = sink.end
        try:
            fd, size = fileio.open_regular(ref.name)
            try:
                fileio.check_file_size(ref.name, size, self.max_bytes)
                if sink.fill_from(fd, self.max_bytes + 1) != size:
                    raise LayoutError(f"{ref.name}: the file changed size while it was read")
            finally:
                os.close(fd)
        except LayoutError:
            sink.end = start
            raise
        except OSError as err:
            sink.end = start
            raise fileio.unreadable(ref.name, err) from None

    def _zip_member(self, ref: FileRef) -> Tuple[ZipClip, int]:
        parts = self.relative_path(ref).split("/")
        clip_id = "/".join(parts[:2] + [os.path.splitext(parts[-1])[0]] if self.kind == "videos" else parts[:3])
        for clip in self._in_zips.get(clip_id, ()):
            if clip.container == ref.container and ref.name.startswith(clip.prefix):
                index = clip.position(ref.name[len(clip.prefix):])
                if index >= 0:
                    return clip, index
        raise LayoutError(f"{ref.display}: not a {self.folder} member found by discovery; it is not read")
