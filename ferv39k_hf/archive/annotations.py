"""Split files -> clip records, checked line by line.

A split file line is ``Scene/Emotion/NNNN Emotion``: space-delimited, no
header. Every line either becomes a :class:`ClipRecord` or a :class:`Problem`
that names the file and line; nothing is dropped quietly.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Dict, Iterable, List, Optional, Tuple

from ferv39k_hf.errors import QUOTED_CHARS, Ferv39kError, quoted
from ferv39k_hf.taxonomy import CLASS_WORDS, SCENE_TO_SCENARIO, SCENES

_CLIP_NUMBER = re.compile(r"^\d+$")
# Lines end where an editor ends them: str.splitlines() also breaks at form feeds, \x1c-\x1e and
# U+0085, which would shift every later line number an error names.
_LINE_END = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class ClipRecord:
    """One clip as a split file lists it.

    Args:
        clip_id: ``"Scene/Emotion/NNNN"``, the dataset's unique key.
        scene: one of the 22 scenes, as the archive spells it.
        emotion: the class word (``"Angry"`` ... ``"Surprise"``).
        split: ``"train"`` or ``"test"``: the split file it came from.
        source: that split file, as shown to people.
        line: the 1-based line number in that file.

    Example:
        >>> record = ClipRecord("Crime/Angry/0063", "Crime", "Angry", "train", "train_All.csv", 12)
        >>> record.scenario, record.where
        ('Strong-Interactive Activities', 'train_All.csv:12')
    """

    clip_id: str  # "Scene/Emotion/NNNN", the dataset's unique key
    scene: str
    emotion: str  # class word
    split: str  # "train" or "test" (the split file it came from)
    source: str  # the split file, as shown to people
    line: int  # 1-based line number in that file

    @property
    def scenario(self) -> str:
        """The scenario of the clip's scene (one of ``SCENARIOS``)."""
        return SCENE_TO_SCENARIO[self.scene]

    @property
    def where(self) -> str:
        """``"split file:line"``, for messages."""
        return f"{self.source}:{self.line}"


@dataclass(frozen=True)
class Problem:
    """A split-file line, clip or file that did not become a sound row."""

    clip_id: Optional[str]
    split: Optional[str]
    line: Optional[int]
    reason: str
    source: Optional[str] = None

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.source and self.line else (self.source or "")
        who = f"clip {self.clip_id}" if self.clip_id else "line"
        return f"{where}: {who}: {self.reason}" if where else f"{who}: {self.reason}"


class AnnotationError(Ferv39kError, ValueError):
    """A split file line that cannot be trusted; the message names file and line."""

    def __init__(self, problem: Problem):
        super().__init__(str(problem))
        self.problem = problem


def decode_split_text(data: bytes, source: str) -> str:
    """Bytes of a split file -> text, tolerating a UTF-8 BOM; other encodings fail loudly."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise AnnotationError(Problem(None, None, None, f"not UTF-8 text ({err})", source)) from None
    return text


def parse_line(raw: str, *, split: str, source: str, line: int) -> Tuple[Optional[ClipRecord], Optional[Problem]]:
    """One split file line -> (record, None), (None, problem), or (None, None) for a blank line."""
    text = raw.strip()
    if not text:
        return None, None
    fields = text.split()

    def bad(reason: str, clip_id: Optional[str] = None) -> Tuple[None, Problem]:
        return None, Problem(clip_id, split, line, reason, source)

    if len(fields) != 2:
        return bad(f"expected 'Scene/Emotion/NNNN Emotion', found {quoted(text)}")
    path, word = fields
    parts = path.replace("\\", "/").strip("/").split("/")
    if len(parts) != 3:
        return bad(f"clip path {quoted(path)} is not Scene/Emotion/NNNN")
    if len(path) > QUOTED_CHARS:  # far longer than any clip's: quoted once by its start, never named as a clip
        return bad(f"clip path {quoted(path)} is longer than any Scene/Emotion/NNNN")
    scene, emotion, number = parts
    clip_id = "/".join(parts)
    if scene not in SCENES:
        return bad(f"unknown scene {quoted(scene)} (not one of the 22 official scenes)", clip_id)
    if emotion not in CLASS_WORDS:
        return bad(f"unknown class {quoted(emotion)} in the clip path", clip_id)
    if not _CLIP_NUMBER.match(number):
        return bad(f"clip number {quoted(number)} is not numeric", clip_id)
    if word != emotion:
        return bad(f"label {quoted(word)} disagrees with the path's class {emotion!r}", clip_id)
    return ClipRecord(clip_id, scene, emotion, split, source, line), None


def parse_split_text(text: str, *, split: str, source: str) -> Tuple[List[ClipRecord], List[Problem]]:
    """All lines of one split file. CRLF, trailing spaces and blank lines are fine."""
    records: List[ClipRecord] = []
    problems: List[Problem] = []
    for number, raw in enumerate(_LINE_END.split(text), start=1):
        record, problem = parse_line(raw, split=split, source=source, line=number)
        if record is not None:
            records.append(record)
        elif problem is not None:
            problems.append(problem)
    return records, problems


def find_duplicates(records: Iterable[ClipRecord]) -> Tuple[List[ClipRecord], List[Problem]]:
    """Keep the first listing of each clip; every later listing becomes a problem.

    A clip listed in both train and test keeps its first listing (files are
    read train first) and the test listing is reported, never merged.
    """
    first: Dict[str, ClipRecord] = {}
    kept: List[ClipRecord] = []
    problems: List[Problem] = []
    for record in records:
        seen = first.get(record.clip_id)
        if seen is None:
            first[record.clip_id] = record
            kept.append(record)
            continue
        if seen.split == record.split:
            reason = f"listed twice in {record.split} (first at {seen.where})"
        else:
            reason = f"listed in both {seen.split} ({seen.where}) and {record.split}"
        problems.append(Problem(record.clip_id, record.split, record.line, reason, record.source))
    return kept, problems
