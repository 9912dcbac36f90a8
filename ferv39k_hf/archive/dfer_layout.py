"""Find the parts of a DFEW or MAFW archive under any root: frame folders, mp4s, fold lists, label files.

Every file under the root is placed by the last components of its path, in
folders and in zips alike (a zip's name counts as a folder above its members),
so an extra top folder, zipped parts and the spellings the releases and the
codebases disagree on all give the same clips. Frames are any ``*.jpg``,
``*.jpeg`` or ``*.png`` in a clip folder named by its number, natural-sorted.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

from ferv39k_hf import fileio
from ferv39k_hf.archive import ziparchive
from ferv39k_hf.archive.files import ByteSink, FileRef
from ferv39k_hf.archive.parts import UnsafeEntry, frame_path_problem
from ferv39k_hf.archive.ziparchive import folder_kind, is_hidden, natural_key
from ferv39k_hf.archive.zipdir import ZipDirectoryError, read_directory
from ferv39k_hf.archive.zipindex import unsafe_reason
from ferv39k_hf.dfer_taxonomy import facts
from ferv39k_hf.errors import LayoutError
from ferv39k_hf.fileio import read_file

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_DIGITS = re.compile(r"^\d+$")
# Frame folders, by the name of the nearest folder above the clip folders: (dataset, source).
_SOURCES: Tuple[Tuple[re.Pattern, str, str], ...] = (
    (re.compile(r"^clip_224x224_16f", re.I), "dfew", "clip_224x224_16f"),
    (re.compile(r"^(clip_224x224|jpg_256)", re.I), "dfew", "clip_224x224"),
    (re.compile(r"^frames_crop_align_224$", re.I), "mafw", "frames_crop_align_224"),
    (re.compile(r"^faces$", re.I), "mafw", "faces"),
    (re.compile(r"^frames$", re.I), "mafw", "frames"),
)
# DFEW: EmoLabel_DataSplit/train(single-labeled)/set_1.csv; the README spells it single_labeled.
_DFEW_SPLIT_FOLDER = re.compile(r"^(train|test)[\W_]*single[-_ ]?labell?ed[\W_]*$", re.I)
_DFEW_SET_FILE = re.compile(r"^set_?(\d+)\.csv$", re.I)
# MAFW: <list root>/{single,compound}/{no_caption,with_caption,...}/set_K/{train,test}.txt
_MAFW_SET_FOLDER = re.compile(r"^set_?(\d+)$", re.I)
_MAFW_LIST_FILE = re.compile(r"^(train|test)\.txt$", re.I)
_MAFW_LABEL_FILES = {"single_label.txt": "single", "multi_label.txt": "compound"}
# Which frame folder each config reads, most preferred first.
CONFIG_SOURCES: Dict[str, Tuple[str, ...]] = {
    "clip_224x224": ("clip_224x224",), "clip_224x224_16f": ("clip_224x224_16f",),
    "single": ("faces", "frames_crop_align_224", "frames"), "compound": ("faces", "frames_crop_align_224", "frames"),
    "videos": ("videos",),
}
_MAX_TEXT_BYTES = fileio.MAX_SPLIT_FILE_BYTES


def clip_number(text: str) -> Optional[str]:
    """A clip number as the folders spell it (5 digits, zero-padded), or None when ``text`` is not one."""
    text = text.strip()
    return f"{int(text):05d}" if _DIGITS.match(text) else None


@dataclass(frozen=True)
class ListFile:
    """A fold list or label file found by discovery."""

    kind: str  # "fold" or "labels"
    labelset: str  # "single" or "compound"
    split: Optional[str]  # "train"/"test" for a fold list
    fold: Optional[int]
    variant: str  # MAFW's caption folder (no_caption, with_caption, ...); "" for DFEW
    ref: FileRef

    @property
    def display(self) -> str:
        return self.ref.display


class DferPart:
    """The clips of one frame folder (or the mp4s): what ClipReader reads a config from."""

    def __init__(self, kind: str, layout: "DferLayout"):
        self.kind = kind  # a source: clip_224x224, faces, frames, ..., or videos
        self.max_bytes = fileio.MAX_VIDEO_BYTES if kind == "videos" else fileio.MAX_FRAME_BYTES
        self.clips: Dict[str, Dict[str, FileRef]] = {}  # clip id -> file name -> first copy found
        self.places: Dict[str, str] = {}  # clip id -> the clip folder (or mp4) as shown to people
        self._layout = layout

    def clip_ids(self) -> List[str]:
        return sorted(self.clips)

    def frames(self, clip_id: str) -> List[FileRef]:
        """The clip's frames in natural order (1.jpg, 2.jpg, 10.jpg); [] if the clip is absent."""
        found = self.clips.get(clip_id, {})
        return [found[name] for name in sorted(found, key=natural_key)]

    def video(self, clip_id: str) -> Optional[FileRef]:
        found = self.clips.get(clip_id, {})
        return next(iter(found.values()), None)

    def clip_files(self, clip_id: str) -> List[FileRef]:
        return self.frames(clip_id) if self.kind != "videos" else [r for r in [self.video(clip_id)] if r]

    def scan_clip(self, clip_id: str) -> Tuple[List[FileRef], List[UnsafeEntry]]:
        """The clip's frames in natural order, and each entry named like a frame that is not a file to read
        (a folder, FIFO, device, dangling link or link out of the root), checked again now: what is read is
        what was checked, as for FERV39k."""
        frames: List[FileRef] = []
        unsafe: List[UnsafeEntry] = []
        for ref in self.frames(clip_id):
            problem = None if ref.container is not None else frame_path_problem(ref.name, self._layout.root_real)
            if problem is None:
                frames.append(ref)
            else:
                unsafe.append(problem)
        return frames, unsafe

    def why_missing(self, clip_id: str) -> str:
        return ""

    def clip_location(self, clip_id: str) -> str:
        return self.places.get(clip_id, f"{self.kind}/{clip_id}")

    def relative_path(self, ref: FileRef) -> str:
        """``NNNNN.mp4`` or ``NNNNN/frame.jpg``: the path below the frame folder."""
        parts = ziparchive.components(ref.name)
        return "/".join(parts[-1:] if self.kind == "videos" else parts[-2:])

    def read(self, ref: FileRef) -> bytes:
        return self._layout.read_bytes(ref, self.max_bytes)

    def read_into(self, ref: FileRef, sink: ByteSink) -> None:
        sink.append(self.read(ref))


@dataclass
class DferLayout:
    """Everything found under one DFEW or MAFW root."""

    dataset: str
    root: Path
    parts: Dict[str, DferPart] = field(default_factory=dict)
    lists: List[ListFile] = field(default_factory=list)
    unsafe: List[str] = field(default_factory=list)
    members: Dict[Tuple[str, str], Tuple[int, ...]] = field(default_factory=dict, repr=False)

    @functools.cached_property
    def root_real(self) -> str:
        """The root with every link resolved: a frame's link must stay inside it."""
        return os.path.realpath(self.root)

    def part(self, config: str) -> DferPart:
        """The frame folder (or mp4s) a config reads; LayoutError naming the root when none was found."""
        for source in CONFIG_SOURCES.get(config, (config,)):
            if source in self.parts:
                return self.parts[source]
        found = ", ".join(sorted(self.parts)) or "none"
        raise LayoutError(f"{self.root}: no {' or '.join(CONFIG_SOURCES.get(config, (config,)))} folder of "
                          f"{self.dataset.upper()} clips found for config {config!r} (found: {found})")

    def read_bytes(self, ref: FileRef, limit: int) -> bytes:
        if ref.container is None:
            return read_file(ref.name, limit)
        info = self.members.get((ref.container, ref.name))
        if info is None:
            raise LayoutError(f"{ref.display}: not a member found by discovery; it is not read")
        return ziparchive.read_member(ref.container, ref.name, info, limit)

    def read_text(self, ref: FileRef) -> Tuple[str, str]:
        """A list file's text and the encoding it was read with: UTF-8 (BOM allowed), else GBK."""
        data = self.read_bytes(ref, _MAX_TEXT_BYTES)
        for encoding in ("utf-8-sig", "gbk"):
            try:
                return data.decode(encoding), "utf-8" if encoding == "utf-8-sig" else encoding
            except UnicodeDecodeError:
                continue
        raise LayoutError(f"{ref.display}: neither UTF-8 nor GBK text")

    def fold_lists(self, labelset: str = "single") -> Dict[Tuple[str, int], ListFile]:
        """(split, fold) -> list file, preferring MAFW's no_caption variant; one per key."""
        chosen: Dict[Tuple[str, int], ListFile] = {}
        rank = {"": 0, "no_caption": 0, "with_caption": 1}
        for item in sorted(self.lists, key=lambda f: (rank.get(f.variant.lower(), 2), f.variant, f.display)):
            if item.kind == "fold" and item.labelset == labelset:
                chosen.setdefault((item.split, item.fold), item)
        return chosen

    def label_file(self, labelset: str) -> Optional[ListFile]:
        return next((f for f in self.lists if f.kind == "labels" and f.labelset == labelset), None)


def _place_file(layout: DferLayout, parts: Tuple[str, ...], ref: FileRef) -> None:
    """Put one file where its path says: a frame, an mp4, a fold list or a label file (else ignore it)."""
    name = parts[-1]
    lower = name.lower()
    if lower.endswith(IMAGE_SUFFIXES) and len(parts) >= 3 and _DIGITS.match(parts[-2]):
        for folder in reversed(parts[:-2]):
            source = _source_of(folder)
            if source is not None:
                if source[0] == layout.dataset:
                    _add_clip(layout, source[1], clip_number(parts[-2]), name, ref)
                return
    elif lower.endswith(".mp4") and _DIGITS.match(os.path.splitext(name)[0]):
        _add_clip(layout, "videos", clip_number(os.path.splitext(name)[0]), name, ref)
    elif layout.dataset == "dfew" and len(parts) >= 2 and _DFEW_SET_FILE.match(name):
        split = _DFEW_SPLIT_FOLDER.match(parts[-2])
        if split:
            fold = int(_DFEW_SET_FILE.match(name).group(1))
            layout.lists.append(ListFile("fold", "single", split.group(1).lower(), fold, "", ref))
    elif layout.dataset == "mafw" and len(parts) >= 2 and _MAFW_LIST_FILE.match(name):
        fold = _MAFW_SET_FOLDER.match(parts[-2])
        if fold:  # <root>/{single,compound}/<caption variant>/set_K/, or any folders above set_K
            above = [p.lower() for p in parts[:-2]]
            labelset = "compound" if "compound" in above else "single"
            variant = parts[-3] if len(parts) >= 3 and "caption" in parts[-3].lower() else ""
            layout.lists.append(ListFile("fold", labelset, lower[:-4], int(fold.group(1)), variant, ref))
    elif layout.dataset == "mafw" and lower in _MAFW_LABEL_FILES:
        layout.lists.append(ListFile("labels", _MAFW_LABEL_FILES[lower], None, None, "", ref))


def _source_of(folder: str) -> Optional[Tuple[str, str]]:
    for pattern, dataset, source in _SOURCES:
        if pattern.match(folder):
            return dataset, source
    return None


def _add_clip(layout: DferLayout, source: str, clip_id: str, name: str, ref: FileRef) -> None:
    part = layout.parts.get(source)
    if part is None:
        part = layout.parts[source] = DferPart(source, layout)
    files = part.clips.setdefault(clip_id, {})
    if name not in files:  # a second copy of the same clip (a zip beside its unpacked folder) adds nothing
        files[name] = ref
        shown = ref.display.rpartition("/")[0] if source != "videos" else ref.display
        part.places.setdefault(clip_id, shown)


def walk_files(root: str, unsafe: List[str],
               members: Dict[Tuple[str, str], Tuple[int, ...]]) -> Iterator[Tuple[Tuple[str, ...], FileRef]]:
    """Every file under ``root`` as (path components, FileRef), zips' members included, hidden ones left out."""
    real_root = os.path.realpath(root)
    zips = [root] if os.path.isfile(root) else []
    for folder, dirs, files in os.walk(root) if not zips else ():
        dirs[:] = sorted(d for d in dirs if not is_hidden(d))
        rel = os.path.relpath(folder, root)
        base = () if rel == "." else tuple(Path(rel).parts)
        # a folder named like a frame is listed as a frame, so reading it names it ("not a regular file")
        files = files + [d for d in dirs if d.lower().endswith(IMAGE_SUFFIXES)]
        dirs[:] = [d for d in dirs if not d.lower().endswith(IMAGE_SUFFIXES)]
        for name in sorted(files):
            path = os.path.join(folder, name)
            if is_hidden(name):
                continue
            # a frame linked out of the root is listed, and refused by name with its clip when read (scan_clip)
            if os.path.islink(path) and not os.path.realpath(path).startswith(real_root + os.sep) \
                    and not name.lower().endswith(IMAGE_SUFFIXES):
                unsafe.append(f"{path}: symbolic link to {os.path.realpath(path)}, outside the root")
                continue
            if name.lower().endswith(".zip"):
                zips.append(path)
            else:
                yield base + (name,), FileRef(None, path)
    for path in zips:
        rel = os.path.relpath(path, root) if path != root else os.path.basename(path)
        stem = tuple(Path(rel).parts[:-1]) + (os.path.splitext(os.path.basename(path))[0],)
        yield from _zip_files(path, stem, unsafe, members)


def _zip_files(path: str, stem: Tuple[str, ...], unsafe: List[str],
               members: Dict[Tuple[str, str], Tuple[int, ...]]) -> Iterator[Tuple[Tuple[str, ...], FileRef]]:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        try:
            chunks = list(read_directory(fd, os.fstat(fd).st_size))
        finally:
            os.close(fd)
    except (OSError, ZipDirectoryError) as err:
        raise LayoutError(f"{path}: cannot read the zip file ({err})") from None
    for chunk in chunks:
        for j, name in enumerate(chunk.names):
            reason = unsafe_reason(name, int(chunk.external_attr[j]))
            if reason is not None:
                unsafe.append(f"{path}!{name}: {reason}")
                continue
            parts = tuple(ziparchive.components(name))
            if name.endswith(("/", "\\")) or not parts or any(is_hidden(p) for p in parts):
                continue
            info = tuple(chunk.numbers[j].tolist())
            members[(path, name)] = info
            yield stem + parts, FileRef(path, name, info[2], info[3])


def detect_dataset(root: str) -> Optional[str]:
    """"ferv39k", "dfew" or "mafw" by the names of folders and files under ``root``; None when none fits.

    Looks at folder names (never inside a clip folder) and the first names of each zip.
    """
    path = os.path.abspath(os.path.expanduser(os.fspath(root)))
    if not os.path.exists(path):
        raise LayoutError(f"{path}: the archive root does not exist")
    for name in _names_under(path):
        found = _marker(name)
        if found:
            return found
    return None


_MARKERS = (
    (re.compile(r"^(emolabel_datasplit|clip_224x224.*|jpg_256)$", re.I), "dfew"),
    (re.compile(r"^set_?\d+\.csv$", re.I), "dfew"),  # DFEW's fold files; MAFW's are set_K folders
    (re.compile(r"^(train & test set|train_test_set|no_caption|with_caption|.*_caption_new|compound|"
                r"frames_crop_align_224|single_label\.txt|multi_label\.txt|set_?\d+)$", re.I), "mafw"),
)


def _marker(name: str) -> Optional[str]:
    if folder_kind(name) or name.lower() in ("train_all.csv", "test_all.csv"):
        return "ferv39k"
    for pattern, dataset in _MARKERS:
        if pattern.match(name):
            return dataset
    if _DFEW_SPLIT_FOLDER.match(name):
        return "dfew"
    return None


def _names_under(path: str) -> Iterator[str]:
    zips = [path] if os.path.isfile(path) else []
    for folder, dirs, files in os.walk(path) if not zips else ():
        dirs[:] = sorted(d for d in dirs if not is_hidden(d) and not _DIGITS.match(d))
        yield from dirs
        for name in sorted(files):
            if name.lower().endswith(".zip"):
                zips.append(os.path.join(folder, name))
                yield os.path.splitext(name)[0]
            else:
                yield name
    for zip_path in zips:
        try:
            fd = os.open(zip_path, os.O_RDONLY)
            try:
                chunk = next(read_directory(fd, os.fstat(fd).st_size), None)
            finally:
                os.close(fd)
        except (OSError, ZipDirectoryError):
            continue  # discovery names the damaged zip
        for name in chunk.names if chunk else ():
            yield from (p for p in ziparchive.components(name) if not _DIGITS.match(p))


def find_dfer_layout(root: str, dataset: str) -> DferLayout:
    """Discover a DFEW or MAFW archive's frame folders, mp4s, fold lists and label files under ``root``.

    Raises LayoutError naming the root when it holds no clips or no fold list of the dataset.
    """
    info = facts(dataset)
    path = os.path.abspath(os.path.expanduser(os.fspath(root)))
    if not os.path.exists(path):
        raise LayoutError(f"{path}: the archive root does not exist")
    layout = DferLayout(dataset, Path(path))
    for parts, ref in walk_files(path, layout.unsafe, layout.members):
        _place_file(layout, parts, ref)
    if not layout.parts:
        raise LayoutError(f"{path}: no {info.title} clips found (looked for clip folders under "
                          f"{_folder_names(dataset)} and NNNNN.mp4 files, in folders and zips at any depth)")
    if not any(f.kind == "fold" for f in layout.lists):
        where = ("EmoLabel_DataSplit/train(single-labeled)/set_K.csv" if dataset == "dfew"
                 else "single/no_caption/set_K/train.txt (under 'Train & Test Set', Train_Test_Set, split or anno)")
        raise LayoutError(f"{path}: no {info.title} fold list found (looked for {where})")
    return layout


def _folder_names(dataset: str) -> str:
    return ", ".join(sorted({source for _, d, source in _SOURCES if d == dataset}))
