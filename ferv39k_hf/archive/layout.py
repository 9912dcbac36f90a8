"""Find the parts of a FERV39k archive under any root: folders, zips, drive exports.

A file belongs to a part by its path: the last component named like the part
folder (``2_ClipsforFaceCrop``, or with a drive suffix ``2_ClipsforFaceCrop-002``),
then exactly ``Scene/Emotion/NNNN/<frame>.jpg`` (faces, scenes) or
``Scene/Emotion/NNNN.mp4`` (videos). So extra ``FERV39k/`` levels, drive export
folders and zips (read in place, never extracted) all give the same clips.

Unpacked folders are listed down to the clip folders only; a clip's frames are
listed when asked for. Zips are indexed per clip from their central directory.
A Layout holds no open files, so it pickles into worker processes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple, Union

from ferv39k_hf import fileio
from ferv39k_hf.archive import ziparchive
from ferv39k_hf.archive.annotations import decode_split_text
from ferv39k_hf.archive.files import FileRef
from ferv39k_hf.archive.parts import Part, SplitSource, UnsafeEntry, is_inside
from ferv39k_hf.archive.ziparchive import (
    PART_KINDS,
    SplitKey,
    components,
    folder_kind,
    is_hidden,
    is_video,
    natural_key,
    split_file_key,
)
from ferv39k_hf.archive.zipindex import index_zip
from ferv39k_hf.errors import LayoutError
from ferv39k_hf.taxonomy import PART_FOLDERS, SPLIT_FILE_NAMES

__all__ = ["Layout", "Part", "SplitSource", "UnsafeEntry", "find_layout", "folder_kind", "natural_key"]
_MAX_DEPTH = 16  # how deep to look for part folders below the root


@dataclass
class Layout:
    """Everything found under one archive root."""

    root: Path
    parts: Dict[str, Part]
    split_files: Dict[str, SplitSource]  # "train", "test"
    scene_split_files: Dict[Tuple[str, str], SplitSource]  # (split, scene), optional files
    unsafe: List[UnsafeEntry]
    _split_members: Dict[Tuple[str, str], Tuple[int, ...]] = field(default_factory=dict, repr=False)

    def part(self, kind: str) -> Part:
        if kind not in self.parts:
            folder = PART_FOLDERS.get(kind, kind)
            found = ", ".join(sorted(self.parts)) or "none"
            raise LayoutError(f"{self.root}: no {folder} ({kind}) part found, in folders or zips (found: {found})")
        return self.parts[kind]

    def read_split(self, split: str) -> str:
        """Decoded text of train_All.csv or test_All.csv."""
        if split not in self.split_files:
            raise LayoutError(f"{self.root}: no split file for {split!r} (have {sorted(self.split_files)})")
        return self.read_source(self.split_files[split])

    def read_source(self, source: SplitSource) -> str:
        """Decoded text of any split file (official or per-scene)."""
        return decode_split_text(self._read_bytes(source.ref), source.display)

    def _read_bytes(self, ref: FileRef) -> bytes:
        if ref.container is None:
            return fileio.read_file(ref.name, fileio.MAX_SPLIT_FILE_BYTES)
        info = self._split_members.get((ref.container, ref.name))
        if info is None:
            raise LayoutError(f"{ref.display}: not a split file found by discovery; it is not read")
        return ziparchive.read_member(ref.container, ref.name, info, fileio.MAX_SPLIT_FILE_BYTES)


class _Finder:
    """One discovery pass: walks folders, indexes zips, gathers split files."""

    def __init__(self, root: str):
        self.root = root
        self.root_real = os.path.realpath(root)
        self.parts = {kind: Part(kind, self.root_real) for kind in PART_KINDS}
        self.splits: Dict[SplitKey, List[FileRef]] = {}
        self.split_members: Dict[Tuple[str, str], Tuple[int, ...]] = {}
        self.unsafe: List[UnsafeEntry] = []
        self.zips: List[str] = []
        self._visited: Set[str] = set()

    def _first_visit(self, path: str) -> bool:
        real = os.path.realpath(path)  # links inside the root may loop or repeat a folder
        if real in self._visited:
            return False
        self._visited.add(real)
        return True

    def _entries(self, path: str, part: Optional[Part] = None) -> List[os.DirEntry]:
        """A folder's entries by name, without hidden ones or links out of the root.

        An unreadable folder is reported and passed over: elsewhere (lost+found at a mount point, say) it is
        not searched; inside a ``part`` its clips read as missing, each naming the folder (so that a build
        under --on-error skip lists them rather than stopping).
        """
        try:
            with os.scandir(path) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as err:
            if part is not None:
                part.unlistable.append((path, err.strerror or type(err).__name__))
            what = "the clips in it read as missing" if part is not None else "not searched"
            self.unsafe.append(UnsafeEntry(None, path, f"folder cannot be listed ({err.strerror}); {what}"))
            return []
        kept = []
        for entry in entries:
            if is_hidden(entry.name):
                continue
            if entry.is_symlink():
                target = os.path.realpath(entry.path)
                if not is_inside(target, self.root_real):
                    self.unsafe.append(UnsafeEntry(None, entry.path, f"symbolic link to {target}, outside the root"))
                    continue
            kept.append(entry)
        return kept

    def enter(self, path: str, depth: int) -> None:
        if depth > _MAX_DEPTH or not self._first_visit(path):
            return
        kind = folder_kind(os.path.basename(path))
        if kind in PART_KINDS:
            self._scan_part(kind, path, depth)
            return
        for entry in self._entries(path):
            if entry.is_dir():
                self.enter(entry.path, depth + 1)
            elif entry.is_file():
                self._note_file(entry)

    def _scan_part(self, kind: str, path: str, depth: int) -> None:
        """A part folder: scene / emotion / clip levels only, never the frames."""
        clips: List[Tuple[str, str]] = []
        nested = False
        for scene in self._entries(path, self.parts[kind]):
            if not scene.is_dir():
                if scene.is_file():
                    self._note_file(scene)
                continue
            if folder_kind(scene.name):
                nested = True
                self.enter(scene.path, depth + 1)
                continue
            for emotion in self._entries(scene.path, self.parts[kind]):
                if not emotion.is_dir():
                    continue
                if folder_kind(emotion.name):
                    nested = True
                    self.enter(emotion.path, depth + 2)
                    continue
                nested |= self._scan_emotion(kind, scene.name, emotion, clips, depth + 3)
        if clips or not nested:  # a folder that only wraps another part folder is not a part root
            part = self.parts[kind]
            index = len(part._folders)
            part._folders.append(path)
            part.roots.append(path)
            for clip_id, name in clips:
                part._on_disk.setdefault(clip_id, []).append((index, name))

    def _scan_emotion(self, kind: str, scene: str, emotion: os.DirEntry,
                      clips: List[Tuple[str, str]], depth: int) -> bool:
        """Add the clips of one emotion folder; True if it wraps another part folder."""
        nested = False
        for entry in self._entries(emotion.path, self.parts[kind]):
            if entry.is_dir() and folder_kind(entry.name):
                nested = True
                self.enter(entry.path, depth)
            elif kind == "videos":
                if is_video(entry.name) and entry.is_file():
                    clips.append((f"{scene}/{emotion.name}/{os.path.splitext(entry.name)[0]}", entry.name))
            elif entry.is_dir():
                clips.append((f"{scene}/{emotion.name}/{entry.name}", entry.name))
        return nested

    def _note_file(self, entry: os.DirEntry) -> None:
        if entry.name.lower().endswith(".zip"):
            if self._first_visit(entry.path):  # a link to a zip already seen adds nothing
                self.zips.append(entry.path)
            return
        key = split_file_key(entry.name)
        if key is not None:
            self.splits.setdefault(key, []).append(FileRef(None, entry.path, entry.stat().st_size))

    def add_zip(self, path: str) -> None:
        index = index_zip(path)
        self.unsafe.extend(UnsafeEntry(path, name, reason) for name, reason in index.unsafe)
        for key, name, info in index.splits:
            self.splits.setdefault(key, []).append(FileRef(path, name, info[2]))
            self.split_members[(path, name)] = info
        for kind, by_id in index.clips.items():
            part = self.parts[kind]
            part.roots.extend(index.places[kind])
            for clip_id, clips in by_id.items():
                part._in_zips.setdefault(clip_id, []).extend(clips)

    def split_sources(self) -> Tuple[Dict[SplitKey, SplitSource], Dict[Tuple[str, str], Tuple[int, ...]]]:
        """One source per split file; identical copies are fine, differing ones are an error."""
        layout = Layout(Path(self.root), {}, {}, {}, [], self.split_members)
        sources: Dict[SplitKey, SplitSource] = {}
        for key, refs in sorted(self.splits.items(), key=lambda item: (item[0][0], item[0][1] or "")):
            first = refs[0]
            if len(refs) > 1:
                data = layout._read_bytes(first)
                for other in refs[1:]:
                    if layout._read_bytes(other) != data:
                        name = components(first.name)[-1]
                        raise LayoutError(f"two different copies of {name}: {first.display} and "
                                          f"{other.display}; keep one")
            sources[key] = SplitSource(key[0], first.display, first)
        return sources, self.split_members


def find_layout(root: Union[str, os.PathLike]) -> Layout:
    """Discover the parts and split files under ``root`` (a folder or a zip), at any depth.

    Args:
        root: the archive root: a folder (unpacked, zipped parts, drive export
            folders, any nesting) or one zip file.

    Returns:
        A ``Layout``: ``root``, ``parts`` (kind -> ``Part``, for the kinds found
        among ``faces``, ``scenes``, ``videos``), ``split_files`` (``train`` and
        ``test``), ``scene_split_files`` and ``unsafe`` zip entries. Nothing is
        read beyond folder listings and zip central directories; it holds no open
        files, so it pickles into worker processes.

    Raises:
        ferv39k_hf.errors.LayoutError: the root does not exist, holds no part, or
            lacks ``train_All.csv`` or ``test_All.csv``; the message names the root.

    Example::

        layout = ferv39k_hf.find_layout("/data/FERV39k")
        sorted(layout.parts)               # e.g. ['faces', 'scenes', 'videos']
        layout.part("faces").clip_ids()[:1]
    """
    path = os.path.abspath(os.path.expanduser(os.fspath(root)))
    if not os.path.exists(path):
        raise LayoutError(f"{path}: the archive root does not exist")
    finder = _Finder(path)
    if os.path.isdir(path):
        finder.enter(path, 0)
    elif path.lower().endswith(".zip"):
        finder.zips.append(path)
    else:
        raise LayoutError(f"{path}: the archive root must be a folder or a zip file")
    for archive in finder.zips:
        finder.add_zip(archive)
    parts = {kind: part for kind, part in finder.parts.items() if part.roots}
    if not parts:
        folders = ", ".join(PART_FOLDERS[kind] for kind in PART_KINDS)
        raise LayoutError(f"{path}: no FERV39k part found (looked for folders {folders}, "
                          f"with or without drive suffixes such as -002, in folders and zip files at any depth)")
    sources, members = finder.split_sources()
    missing = [name for split, name in SPLIT_FILE_NAMES.items() if (split, None) not in sources]
    linked = [u for u in finder.unsafe if u.container is None and os.path.basename(u.name) in missing]
    if linked:  # found, but a link out of the root: say so rather than "not found"
        raise LayoutError(f"{linked[0]}: ferv39k-hf reads only files inside the archive root; copy the split "
                          "file into the archive (or link to a copy inside it)")
    if missing:
        raise LayoutError(f"{path}: no {' or '.join(missing)} found (searched every folder and zip file "
                          f"under the root for the split files {', '.join(SPLIT_FILE_NAMES.values())})")
    return Layout(
        root=Path(path),
        parts=parts,
        split_files={split: sources[(split, None)] for split in SPLIT_FILE_NAMES},
        scene_split_files={(split, scene): src for (split, scene), src in sources.items() if scene is not None},
        unsafe=finder.unsafe,
        _split_members=members,
    )
