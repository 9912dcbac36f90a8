"""Community split lists (official, DFER-CLIP, MAE-DFER, S2D): tell the format, read lines into records, write lines.

Published codebases re-write the official split in their own formats:

=============  ==========================================  =============================
format         a line                                      class id order
=============  ==========================================  =============================
official       ``Scene/Emotion/NNNN Emotion``              (the class word itself)
dfer-clip      ``/prefix/Scene/Emotion/NNNN <frames> <id>``  DFEW (Happy=0 ... Fear=6)
mae-dfer       ``/prefix/Scene/Emotion/NNNN <id>``          DFEW
s2d            header ``path,id``, then ``Scene/Emotion/NNNN,<id>``  alphabetical (Angry=0)
=============  ==========================================  =============================

A clip is found by the trailing ``Scene/Emotion/NNNN`` of its path, whatever the
prefix; every line's class (word or id) must agree with that ``Emotion`` folder.
A DFER-CLIP frame count is kept aside and compared with the archive, never used.
Every line becomes a :class:`~ferv39k_hf.archive.annotations.ClipRecord` or a
:class:`~ferv39k_hf.archive.annotations.Problem` naming the file and line.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from ferv39k_hf.archive.annotations import AnnotationError, ClipRecord, Problem, decode_split_text, find_duplicates
from ferv39k_hf.errors import Ferv39kError
from ferv39k_hf.taxonomy import CLASS_WORDS, DFEW_ORDER, SCENES, SPLITS

FORMATS: Tuple[str, ...] = ("official", "dfer-clip", "mae-dfer", "s2d")

# Which class-id order each format's numbers use (section 3 and 7 of the dataset facts).
ID_ORDERS: Mapping[str, Tuple[str, Tuple[str, ...]]] = {
    "dfer-clip": ("DFEW", DFEW_ORDER),
    "mae-dfer": ("DFEW", DFEW_ORDER),
    "s2d": ("alphabetical", CLASS_WORDS),
}

# The file names each codebase reads its train and test lists from.
FILE_NAMES: Mapping[str, Tuple[str, str]] = {
    "official": ("train_All.csv", "test_All.csv"),
    "dfer-clip": ("FERV39K_train.txt", "FERV39K_test.txt"),
    "mae-dfer": ("train.csv", "test.csv"),
    "s2d": ("train.csv", "test.csv"),
}

SHAPES: Mapping[str, str] = {
    "official": "Scene/Emotion/NNNN Emotion",
    "dfer-clip": "PREFIX/Scene/Emotion/NNNN FRAMES ID",
    "mae-dfer": "PREFIX/Scene/Emotion/NNNN ID",
    "s2d": "Scene/Emotion/NNNN,ID after a 'path,id' header",
}

S2D_HEADER = "path,id"
_LINE_END = re.compile(r"\r\n|\r|\n")  # as annotations.py: never str.splitlines (it breaks at \x1c, U+0085, ...)
_NUMBER = re.compile(r"\d+")
_WORD = re.compile(r"[A-Za-z]+")
# The last three components of a path: Scene/Emotion/NNNN, separated by / or \, a trailing separator allowed.
_TAIL = re.compile(r"(?:^|[/\\])([^/\\\s]+)[/\\]([^/\\\s]+)[/\\](\d+)[/\\]?$")


class ListError(Ferv39kError, ValueError):
    """Split lists given wrongly (one without the other, the same file twice) or a list whose format cannot be told."""


@dataclass(frozen=True)
class ListLine:
    """The fields of one list line, in any format: the clip's path and what follows it."""

    path: str
    word: Optional[str] = None  # official: the class word
    class_id: Optional[int] = None  # dfer-clip, mae-dfer, s2d
    frames: Optional[int] = None  # dfer-clip: the frame count it claims


def split_line(text: str, fmt: str) -> Optional[ListLine]:
    """The fields of a stripped, non-blank line if it has ``fmt``'s shape, else None.

    Example:

    >>> split_line("/x/Crime/Angry/0063 24 3", "dfer-clip")
    ListLine(path='/x/Crime/Angry/0063', word=None, class_id=3, frames=24)
    >>> split_line("/x/Crime/Angry/0063 24 3", "mae-dfer") is None
    True
    """
    if fmt == "s2d":
        fields = text.rsplit(",", 1)
    else:
        fields = text.rsplit(None, 2 if fmt == "dfer-clip" else 1)
    if len(fields) != (3 if fmt == "dfer-clip" else 2):
        return None
    path, values = fields[0].strip(), fields[1:]
    if not _TAIL.search(path):
        return None
    if fmt == "official":
        return ListLine(path, word=values[0]) if _WORD.fullmatch(values[0]) else None
    if not all(_NUMBER.fullmatch(v.strip()) for v in values):
        return None
    if fmt == "dfer-clip":
        return ListLine(path, class_id=int(values[1]), frames=int(values[0]))
    return ListLine(path, class_id=int(values[0].strip()))


def _data_lines(text: str) -> List[Tuple[int, str]]:
    """(1-based line number, stripped text) of every non-blank line."""
    lines = []
    for number, raw in enumerate(_LINE_END.split(text), start=1):
        stripped = raw.strip()
        if stripped:
            lines.append((number, stripped))
    return lines


# S2D's header is "path,id"; any first line of two column names is taken as one (it cannot name a clip:
# a clip line holds Scene/Emotion/NNNN and a number).
_HEADER = re.compile(r"[A-Za-z_ ]+,[A-Za-z_ ]+")


def _is_header(lines: List[Tuple[int, str]], index: int) -> bool:
    return index == 0 and bool(_HEADER.fullmatch(lines[0][1]))


def detect_format(text: str, source: str) -> str:
    """The format of a list's text: the one that fits every line, or most of them.

    ListError naming ``source`` when no line fits a known format, when
    the content fits several equally well (an empty list fits all), or when
    no format fits most lines; its message says to pass ``--list-format``.
    Example:

    >>> detect_format("path,id\\nCrime/Angry/0063,0\\n", "train.csv")
    's2d'
    """
    lines = _data_lines(text)
    fits = {fmt: 0 for fmt in FORMATS}
    for index, (_, line) in enumerate(lines):
        if _is_header(lines, index):
            fits["s2d"] += 1
            continue
        for fmt in FORMATS:
            fits[fmt] += split_line(line, fmt) is not None
    best = max(fits.values())
    leaders = [fmt for fmt in FORMATS if fits[fmt] == best]
    clips = len(lines) - (1 if lines and _is_header(lines, 0) else 0)
    force = "pass --list-format " + "|".join(FORMATS) + " (list_format=) to say which"

    def fail(reason: str) -> ListError:
        return ListError(f"{source}: {reason}; {force}")

    if clips == 0:
        raise fail(f"no clip lines, so the format cannot be told from the content (it fits {', '.join(leaders)})")
    if best == 0:
        first = lines[0]
        shapes = "; ".join(f"{fmt}: '{shape}'" for fmt, shape in SHAPES.items())
        raise fail(f"not a split list in a known format: line {first[0]} {first[1][:80]!r} fits none of ({shapes})")
    if len(leaders) > 1:
        raise fail(f"the content fits more than one format ({', '.join(leaders)}: {best} of {len(lines)} lines each)")
    if 2 * best <= len(lines):
        raise fail(f"no format fits most lines ({leaders[0]} fits {best} of {len(lines)})")
    return leaders[0]


def _clip_of(path: str) -> Tuple[str, str, str]:
    scene, emotion, number = _TAIL.search(path).groups()
    return scene, emotion, number


def parse_list_text(text: str, fmt: str, *, split: str,
                    source: str) -> Tuple[List[ClipRecord], List[Problem], Dict[str, Tuple[int, int]]]:
    """Every line of one list in format ``fmt``: records, problems, and DFER-CLIP's claimed frame counts.

    Returns ``(records, problems, frames)`` where ``frames`` maps a clip id to
    ``(claimed frame count, line)`` (dfer-clip only). A line whose class
    disagrees with its clip's folder is a problem naming both words.
    Example:

    >>> records, problems, _ = parse_list_text("x/Crime/Angry/0063 3\\nx/Crime/Angry/0064 1\\n", "mae-dfer",
    ...                                        split="test", source="test.csv")
    >>> [r.clip_id for r in records]
    ['Crime/Angry/0063']
    >>> print(problems[0])
    test.csv:2: clip Crime/Angry/0064: class id 1 is 'Sad' in DFEW order (mae-dfer), but the clip's folder says 'Angry'
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown list format {fmt!r}; choose one of {', '.join(FORMATS)}")
    records: List[ClipRecord] = []
    problems: List[Problem] = []
    frames: Dict[str, Tuple[int, int]] = {}
    lines = _data_lines(text)
    for index, (number, line) in enumerate(lines):
        if fmt == "s2d" and _is_header(lines, index):
            continue
        record, problem, fields = _parse_one(line, fmt, split=split, source=source, number=number)
        if problem is not None:
            problems.append(problem)
            continue
        records.append(record)
        if fields.frames is not None:
            frames.setdefault(record.clip_id, (fields.frames, number))
    return records, problems, frames


def _parse_one(line: str, fmt: str, *, split: str, source: str, number: int):
    def bad(reason: str, clip_id: Optional[str] = None):
        return None, Problem(clip_id, split, number, reason, source), None

    fields = split_line(line, fmt)
    if fields is None:
        return bad(f"expected '{SHAPES[fmt]}' ({fmt} format), found {line[:120]!r}")
    scene, emotion, clip_number = _clip_of(fields.path)
    clip_id = f"{scene}/{emotion}/{clip_number}"
    if scene not in SCENES:
        return bad(f"unknown scene {scene!r} (not one of the 22 official scenes)", clip_id)
    if emotion not in CLASS_WORDS:
        return bad(f"unknown class {emotion!r} in the clip path", clip_id)
    if fields.word is not None and fields.word != emotion:
        return bad(f"label {fields.word!r} disagrees with the clip's folder {emotion!r}", clip_id)
    if fields.class_id is not None:
        order_name, order = ID_ORDERS[fmt]
        if fields.class_id >= len(order):
            return bad(f"class id {fields.class_id} is not one of 0..{len(order) - 1}", clip_id)
        word = order[fields.class_id]
        if word != emotion:
            return bad(f"class id {fields.class_id} is {word!r} in {order_name} order ({fmt}), "
                       f"but the clip's folder says {emotion!r}", clip_id)
    return ClipRecord(clip_id, scene, emotion, split, source, number), None, fields


# -- the list files a build reads -------------------------------------------------------

@dataclass(frozen=True)
class ListFile:
    """One list file as read: its split, where it is, its format and its content's SHA-256."""

    split: str
    path: str  # absolute
    fmt: str
    sha256: str
    text: str = field(repr=False)
    detected: bool = True  # False when --list-format named the format

    def describe(self) -> Dict[str, str]:
        """What the card and the build report record: split, file name, format and SHA-256."""
        return {"split": self.split, "file": os.path.basename(self.path), "format": self.fmt, "sha256": self.sha256}


@dataclass(frozen=True)
class SplitLists:
    """The train and test lists that replace the official split files of a build.

    Example::

        lists = open_lists("FERV39K_train.txt", "FERV39K_test.txt")   # formats told from the content
        records, problems = lists.read(on_error="skip")
    """

    files: Tuple[ListFile, ...]

    def read(self, on_error: str = "raise") -> Tuple[List[ClipRecord], List[Problem]]:
        """Every line of the train then the test list, as records and problems (duplicates included).

        With ``on_error="raise"`` the first problem raises an AnnotationError naming file and line.
        """
        records, problems, _ = self._parse()
        kept, duplicate_problems = find_duplicates(records)
        problems = problems + duplicate_problems
        problems.sort(key=lambda p: (SPLITS.index(p.split) if p.split in SPLITS else 9, p.line or 0))
        if problems and on_error == "raise":
            raise AnnotationError(problems[0])
        return kept, problems

    def claimed_frames(self) -> Dict[str, Tuple[int, str, str, int]]:
        """clip id -> (frame count the list claims, split, file, line), for dfer-clip lists."""
        _, _, claimed = self._parse()
        return claimed

    def _parse(self):
        records: List[ClipRecord] = []
        problems: List[Problem] = []
        claimed: Dict[str, Tuple[int, str, str, int]] = {}
        for f in self.files:
            recs, probs, frames = parse_list_text(f.text, f.fmt, split=f.split, source=f.path)
            records += recs
            problems += probs
            for clip_id, (count, line) in frames.items():
                claimed.setdefault(clip_id, (count, f.split, f.path, line))
        return records, problems, claimed

    def describe(self) -> List[Dict[str, str]]:
        return [f.describe() for f in self.files]

    def identity(self) -> str:
        """What a cache key must follow: each list's split, format and content hash."""
        return "|".join(f"{f.split}:{f.fmt}:{f.sha256}" for f in self.files)


def open_lists(train_list: Optional[str], test_list: Optional[str],
               list_format: Optional[str] = None) -> Optional[SplitLists]:
    """Read the two list files and tell (or take) their formats; None when neither is given.

    ``list_format`` (``official``, ``dfer-clip``, ``mae-dfer``, ``s2d`` or None
    to detect it per file from the content) forces one format for both files.
    Files larger than a split file may be (64 MiB) are refused unread.
    Example: ``open_lists("train.csv", "test.csv", "s2d")``.
    """
    from ferv39k_hf.fileio import MAX_SPLIT_FILE_BYTES, read_file

    if train_list is None and test_list is None:
        if list_format is not None:
            raise ListError("--list-format needs --train-list and --test-list")
        return None
    if train_list is None or test_list is None:
        raise ListError("--train-list and --test-list go together: give both lists (train and test)")
    if list_format is not None and list_format not in FORMATS:
        raise ListError(f"unknown list format {list_format!r}; choose one of {', '.join(FORMATS)}")
    files = []
    for split, given in zip(SPLITS, (train_list, test_list)):
        path = os.path.abspath(os.path.expanduser(os.fspath(given)))
        data = read_file(path, MAX_SPLIT_FILE_BYTES)
        text = decode_split_text(data, path)
        fmt = list_format or detect_format(text, path)
        files.append(ListFile(split, path, fmt, hashlib.sha256(data).hexdigest(), text, list_format is None))
    if os.path.realpath(files[0].path) == os.path.realpath(files[1].path):
        raise ListError(f"--train-list and --test-list are the same file ({files[0].path})")
    return SplitLists(tuple(files))


# -- writing ---------------------------------------------------------------------------

def render_lines(fmt: str, rows: Sequence[Tuple[str, ClipRecord, int]]) -> str:
    """A list file's text: ``rows`` of (path written, record, frame count) in format ``fmt``, one a line.

    Example (Angry is 3 in DFEW order, 0 in alphabetical order):

    >>> record = ClipRecord("Crime/Angry/0063", "Crime", "Angry", "test", "test_All.csv", 1)
    >>> render_lines("dfer-clip", [("/d/Crime/Angry/0063", record, 24)])
    '/d/Crime/Angry/0063 24 3\\n'
    >>> render_lines("s2d", [("Crime/Angry/0063", record, 24)])
    'path,id\\nCrime/Angry/0063,0\\n'
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown list format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out = [S2D_HEADER] if fmt == "s2d" else []
    order = ID_ORDERS.get(fmt, (None, ()))[1]
    for path, record, frames in rows:
        if fmt == "official":
            out.append(f"{path} {record.emotion}")
        elif fmt == "dfer-clip":
            out.append(f"{path} {frames} {order.index(record.emotion)}")
        elif fmt == "mae-dfer":
            out.append(f"{path} {order.index(record.emotion)}")
        else:
            out.append(f"{path},{order.index(record.emotion)}")
    return "".join(line + "\n" for line in out)


def add_list_options(parser) -> None:
    """The --train-list, --test-list and --list-format options of ``build`` and ``verify``."""
    parser.add_argument("--train-list", metavar="FILE", default=None,
                        help="read the train split from FILE instead of train_All.csv: the official format or a "
                             "DFER-CLIP, MAE-DFER or S2D list (told from the content; path prefixes are ignored, "
                             "every line's class must agree with its clip's folder). Needs --test-list")
    parser.add_argument("--test-list", metavar="FILE", default=None,
                        help="read the test split from FILE instead of test_All.csv (see --train-list)")
    parser.add_argument("--list-format", choices=FORMATS, default=None,
                        help="the format of both lists, when it cannot be told from their content "
                             "(dfer-clip and mae-dfer ids are in DFEW order, s2d ids alphabetical)")
