"""One zip's members filed under their clips at discovery, with one small record per clip, not per member.

The central directory comes from :mod:`.zipdir` in chunks; the path rules of
:mod:`ferv39k_hf.archive.ziparchive` place each member (a clip's frame, a clip's mp4, a
split file, or nothing), and members that must never be read are listed as
unsafe. A clip keeps its member names as one string and their numbers as one
array, so a zip of a million frames costs tens of megabytes, not hundreds.
"""

from __future__ import annotations

import os
import re
import stat
from array import array
from collections import Counter
from dataclasses import dataclass, field
from itertools import groupby, repeat
from operator import itemgetter, methodcaller
from typing import Any, Dict, List, NamedTuple, Optional, Set, Tuple

import numpy as np

from ferv39k_hf.archive.ziparchive import (
    PART_KINDS,
    SplitKey,
    components,
    drop_stale_handle,
    folder_kind,
    is_frame,
    is_hidden,
    is_video,
    split_file_key,
)
from ferv39k_hf.archive.zipdir import DUPLICATE_NAME, FIELDS, DirectoryChunk, ZipDirectoryError, read_directory
from ferv39k_hf.errors import LayoutError

_DRIVE_LETTER = re.compile(r"^[A-Za-z]:")
_RPARTITION_SLASH = methodcaller("rpartition", "/")


class ZipClip(NamedTuple):
    """The members of one clip folder (or one mp4) inside one zip, in directory order.

    Compact at a million members: ``basenames`` is one string per clip (the
    member names below ``prefix``, which hold no "/", joined by "/"), and
    ``info`` an array of shape ``(members, FIELDS)``, uint32 (uint64 in zips over 4 GiB).
    """

    container: str  # absolute path of the zip
    prefix: str  # member name of the folder holding the files, with its trailing separator
    basenames: str  # the clip's frames, or its one mp4, joined by "/"; "" when the folder holds none
    info: np.ndarray  # FIELDS numbers per member, in the order of the names

    @property
    def names(self) -> Tuple[str, ...]:
        """The member basenames, in order."""
        return tuple(self.basenames.split("/")) if self.basenames else ()

    def position(self, basename: str) -> int:
        """Where ``basename`` is among :attr:`names` (its first copy), or -1."""
        if not basename or "/" in basename:
            return -1
        at = f"/{self.basenames}/".find(f"/{basename}/")
        return -1 if at < 0 else self.basenames.count("/", 0, at)

    def member_info(self, index: int) -> Tuple[int, ...]:
        """The FIELDS numbers of member ``index``, as Python ints."""
        return tuple(self.info[index].tolist())


def unsafe_reason(name: str, external_attr: int) -> Optional[str]:
    """Why a member must never be read or written, or None for an ordinary member."""
    if stat.S_ISLNK(external_attr >> 16):
        return "symbolic link entry"
    if name.startswith(("/", "\\")):
        return "absolute path"
    if name[1:2] == ":" and _DRIVE_LETTER.match(name):
        return "drive letter in the path"
    if ".." in name and ".." in name.replace("\\", "/").split("/"):
        return "'..' component in the path"  # without one, a relative path cannot climb out
    return None


@dataclass
class ZipIndex:
    """What one zip holds, by the path rules."""

    clips: Dict[str, Dict[str, List[ZipClip]]] = field(default_factory=dict)  # kind -> clip id -> clips
    places: Dict[str, List[str]] = field(default_factory=dict)  # kind -> "zip!folder" where the part is
    splits: List[Tuple[SplitKey, str, Tuple[int, ...]]] = field(default_factory=list)  # key, name, info
    unsafe: List[Tuple[str, str]] = field(default_factory=list)  # name, reason


class _Folder(NamedTuple):
    """Where a member folder sits in the archive; computed once per folder, not per member."""

    kind: Optional[str]  # the part it is in (faces, scenes, videos), or None
    below: Tuple[str, ...]  # its components below the part folder
    clip_id: str  # "Scene/Emotion/NNNN" when it is a clip folder or inside one, else ""
    clip_folder: str  # that clip folder's member path, normalised
    place: str  # the part folder's member path, normalised


def _folder(stem: str, folder: str) -> Optional[_Folder]:
    """The last part-folder component decides; the zip's own name counts as a folder above all. None: hidden."""
    parts = [p for p in folder.split("/") if p not in ("", ".")] if "\\" not in folder else components(folder)
    if "/." in "/" + "/".join(parts) or "__MACOSX" in parts:  # a hidden component (is_hidden), at C speed
        return None
    names = [stem] + parts
    for at in range(len(names) - 1, -1, -1):
        kind = folder_kind(names[at])
        if kind:
            break
    else:
        return _Folder(None, (), "", "", "")
    below = tuple(names[at + 1:])
    kind = kind if kind in PART_KINDS else None
    clip_id = "/".join(below[:3]) if len(below) >= 3 else ""
    clip_folder = "/".join(parts[:len(parts) - len(below) + 3]) if clip_id else ""
    return _Folder(kind, below, clip_id, clip_folder, "/".join(parts[:at]))


def index_zip(path: str) -> ZipIndex:
    """Read one zip's central directory into per-clip entries, split files and unsafe members."""
    drop_stale_handle(path)
    collector = _Collector(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        try:
            for chunk in read_directory(fd, os.fstat(fd).st_size):
                collector.add(chunk)
        finally:
            os.close(fd)
    except (OSError, ZipDirectoryError) as err:
        raise LayoutError(f"{path}: cannot read the zip file ({err})") from None
    return collector.finish()


class _Collector:
    """Files a zip's members under their clips, chunk by chunk, keeping one small record per clip.

    Frames in clip folders, nearly all members, take a short path: members come in
    runs that share a folder, the folder is classified once per run, and a run of
    frames is checked and kept with a few string operations for the whole run.
    Every other member, and every member of a chunk whose names hold a backslash,
    a colon or "..", or that holds a link, goes through :meth:`_member`, which
    applies every rule one member at a time.
    """

    def __init__(self, container: str):
        self.container = container
        self.stem = os.path.splitext(os.path.basename(container))[0]
        self.index = ZipIndex()
        self._places: Dict[str, Set[str]] = {kind: set() for kind in PART_KINDS}
        self._folders: Dict[str, Optional[_Folder]] = {}
        self._frame_folders: Dict[str, Optional[Tuple[Tuple[str, str, str], str]]] = {}  # -> (clip key, place)
        self._clip_numbers: Dict[Tuple[str, str, str], int] = {}  # (kind, clip id, where) -> number
        # number -> [kind, clip id, prefix, holds files, its member names as "/"-joined runs]
        self._clips: List[List[Any]] = []
        self._member_clip = array("q")  # per member kept: its clip's number
        self._rows: List[np.ndarray] = []  # per chunk: the numbers of its members kept

    def add(self, chunk: DirectoryChunk) -> None:
        names, attrs, numbers = chunk
        kept = array("q")
        text = "\n".join(names)
        careful = "\\" in text or ":" in text or ".." in text or text.startswith("/") or "\n/" in text
        if careful or bool((((attrs >> 16) & 0o170000) == 0o120000).any()):  # a link: S_ISLNK
            for j, name in enumerate(names):
                self._member(name, int(attrs[j]), numbers, j, kept)
        else:
            at = 0
            for folder, run in groupby(map(_RPARTITION_SLASH, names), key=itemgetter(0)):
                bases = [parts[2] for parts in run]
                self._run(folder, bases, at, chunk, kept)
                at += len(bases)
        picked = numbers[np.frombuffer(kept, np.int64)] if kept else numbers[:0]
        # 32 bits where they suffice (all but zips over 4 GiB): halves the index; concatenate widens as needed
        self._rows.append(picked.astype(np.uint32) if not picked.size or int(picked.max()) < 2 ** 32 else picked)

    def _run(self, folder: str, bases: List[str], at: int, chunk: DirectoryChunk, kept: array) -> None:
        """Members ``at`` onwards of ``chunk``, all in ``folder``, with these basenames."""
        frames = self._frame_folders[folder] if folder in self._frame_folders else self._frame_folder(folder)
        first = 0
        if frames is not None and bases[0] == "":  # the clip folder's own entry: it notes the clip
            key, place = frames
            self._clip(key, place, key[2] + "/", False)
            first = 1
        count = len(bases) - first
        if frames is not None and count:
            joined = "/".join(bases[first:] if first else bases)
            lower = joined.lower() + "/"  # no basename holds a "/", so each ".jpg/" ends one
            if lower[0] != "." and "/." not in lower and lower.count(".jpg/") + lower.count(".jpeg/") == count:
                number = self._clip(frames[0], frames[1], folder + "/", True)
                self._clips[number][4].append(joined)
                self._member_clip.extend(repeat(number, count))
                kept.extend(range(at + first, at + len(bases)))
                return
        for j in range(at + first, at + len(bases)):
            self._member(chunk.names[j], int(chunk.external_attr[j]), chunk.numbers, j, kept)

    def _where(self, folder: str) -> Optional[_Folder]:
        folder = folder.rstrip("/")  # a folder's own entry ends in "/": the same folder
        where = self._folders.get(folder, False)
        if where is False:
            where = self._folders[folder] = _folder(self.stem, folder)
        return where

    def _frame_folder(self, folder: str) -> Optional[Tuple[Tuple[str, str, str], str]]:
        """(clip key, place) when ``folder`` is a clip folder of frames, else None."""
        where = self._where(folder)
        frames = None
        if where is not None and where.kind in ("faces", "scenes") and len(where.below) == 3:
            frames = (where.kind, where.clip_id, where.clip_folder), where.place
        self._frame_folders[folder] = frames
        return frames

    def _clip(self, key: Tuple[str, str, str], place: str, prefix: str, is_file: bool) -> int:
        """The number of clip ``key``, noted now if new; a file's own prefix is what reads need."""
        number = self._clip_numbers.get(key)
        if number is None:
            number = self._clip_numbers[key] = len(self._clips)
            self._clips.append([key[0], key[1], prefix, is_file, []])
        elif is_file and not self._clips[number][3]:
            self._clips[number][2:4] = [prefix, True]
        self._places[key[0]].add(place)
        return number

    def _member(self, name: str, attr: int, numbers: np.ndarray, j: int, kept: array) -> None:
        """Any member, by every rule: unsafe, hidden, split file, clip frame or mp4, clip folder."""
        reason = unsafe_reason(name, attr)
        if reason is not None:
            self.index.unsafe.append((name, reason))
            return
        normal = name.replace("\\", "/") if "\\" in name else name
        folder, _, base = (normal, "", "") if normal.endswith("/") else normal.rpartition("/")
        where = self._where(folder)
        if where is None or is_hidden(base):
            return
        key = split_file_key(base) if base else None
        if key is not None:
            self.index.splits.append((key, name, tuple(numbers[j].tolist())))
        if where.kind is None:
            return
        prefix = name[:len(name) - len(base)]
        if where.kind == "videos":
            if len(where.below) != 2 or not is_video(base):
                return
            clip_id = f"{where.below[0]}/{where.below[1]}/{os.path.splitext(base)[0]}"
            number = self._clip(("videos", clip_id, name), where.place, prefix, True)
        elif not where.clip_id:
            return
        elif len(where.below) == 3 and is_frame(base):
            number = self._clip((where.kind, where.clip_id, where.clip_folder), where.place, prefix, True)
        else:  # the clip folder exists, with no frame in this member
            self._clip((where.kind, where.clip_id, where.clip_folder), where.place, where.clip_folder + "/", False)
            return
        self._clips[number][4].append(base)
        self._member_clip.append(number)
        kept.append(j)

    def finish(self) -> ZipIndex:
        """The index: each clip's members together, in directory order, duplicates marked."""
        clip_of = np.frombuffer(self._member_clip, np.int64)
        rows = np.concatenate(self._rows) if self._rows else np.empty((0, FIELDS), np.uint32)
        self._rows = []
        if len(clip_of) and bool((clip_of[1:] < clip_of[:-1]).any()):  # a clip's members apart in the zip
            order = np.argsort(clip_of, kind="stable")  # keeps each clip's members in directory order
            rows, clip_of = rows[order], clip_of[order]
        bounds = np.searchsorted(clip_of, np.arange(len(self._clips) + 1)).tolist()
        for number, (kind, clip_id, prefix, _, runs) in enumerate(self._clips):
            basenames, info = "/".join(runs), rows[bounds[number]:bounds[number + 1]]
            own = basenames.split("/") if basenames else []
            if len(set(own)) != len(own):  # the same name twice: no copy can be trusted
                counts = Counter(own)
                info[[i for i, name in enumerate(own) if counts[name] > 1], 5] |= DUPLICATE_NAME
            clip = ZipClip(self.container, prefix, basenames, info)
            self.index.clips.setdefault(kind, {}).setdefault(clip_id, []).append(clip)
        for kind, places in self._places.items():
            if places:
                self.index.places[kind] = [f"{self.container}!{place}" for place in sorted(places)]
        return self.index
