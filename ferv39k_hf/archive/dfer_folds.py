"""DFEW's and MAFW's official fold lists -> one record per clip with its fold membership, checked line by line.

Every line either joins a :class:`FoldClip` or becomes a
:class:`~ferv39k_hf.archive.annotations.Problem` naming the file and line: a
clip the frame folders lack, a label outside the classes, a clip in the test
sets of two folds, a label that disagrees with another list. Clips in the frame
folders that no list names are counted, never errors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from ferv39k_hf.archive.annotations import AnnotationError, Problem
from ferv39k_hf.archive.dfer_layout import DferLayout, ListFile, clip_number
from ferv39k_hf.dfer_taxonomy import CLIPS_SPLIT, COMPOUND_SEPARATOR, DFEW_OFFICIAL_NUMBER, FOLDS, mafw_word
from ferv39k_hf.errors import LayoutError

_LINE_END = re.compile(r"\r\n|\r|\n")
_CLIP_NAME = re.compile(r"^(\d+)(\.mp4)?$", re.I)


@dataclass(frozen=True)
class FoldClip:
    """One clip of a DFEW or MAFW set: its class(es), the fold whose test set holds it, the folds that train on it."""

    clip_id: str  # the 5-digit clip number, the folder's name
    label: str  # the class word; for MAFW's compound set, the words joined with "_"
    labels: Tuple[str, ...]  # every class word of the clip (one for the single-label sets)
    test_fold: Optional[int]  # 1..5, or None when no test list names it
    train_folds: Tuple[int, ...]  # the folds whose train list names it
    source: str  # the first list that names it, as shown to people
    line: int  # and its 1-based line
    captions: Tuple[str, str] = ("", "")  # MAFW's (English, Chinese) caption, where the archive has them
    split: str = CLIPS_SPLIT
    scene: None = None  # FERV39k's scene: none here

    @property
    def emotion(self) -> str:
        return self.label

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"


@dataclass
class FoldPlan:
    """The clips of a built folder, the lines that are not clips, and what the lists do not name."""

    records: List[FoldClip]
    problems: List[Problem] = field(default_factory=list)
    unlisted: List[str] = field(default_factory=list)  # clip ids in the frame folders that no list names
    encodings: Dict[str, str] = field(default_factory=dict)  # list file -> the encoding it was read with
    notes: List[str] = field(default_factory=list)


@dataclass
class _Listing:
    clip_id: str
    labels: Tuple[str, ...]
    split: str
    fold: int
    source: str
    line: int


def _problem(item: ListFile, line: int, reason: str, clip_id: Optional[str] = None) -> Problem:
    return Problem(clip_id, CLIPS_SPLIT, line, reason, item.display)


def parse_dfew_line(text: str, item: ListFile, line: int) -> Tuple[Optional[_Listing], Optional[Problem]]:
    """``video_name,label`` with label 1..7 (the official numbers); the header line gives (None, None)."""
    fields = [f.strip() for f in (text.split(",") if "," in text else text.split())]
    if [f.lower() for f in fields] == ["video_name", "label"]:
        return None, None
    if len(fields) != 2:
        return None, _problem(item, line, f"expected 'video_name,label', found {text!r}")
    clip_id = clip_number(re.sub(r"\.mp4$", "", fields[0], flags=re.I))
    if clip_id is None:
        return None, _problem(item, line, f"video_name {fields[0]!r} is not a clip number")
    number = int(fields[1]) if re.match(r"^-?\d+$", fields[1]) else None
    if number not in DFEW_OFFICIAL_NUMBER:
        return None, _problem(item, line, f"label {fields[1]!r} is outside DFEW's 7 classes (official numbers 1..7)",
                              clip_id)
    return _Listing(clip_id, (DFEW_OFFICIAL_NUMBER[number],), item.split, item.fold, item.display, line), None


def parse_mafw_line(text: str, item: ListFile, line: int) -> Tuple[Optional[_Listing], Optional[Problem]]:
    """``03747.mp4 anger`` (compound: ``anger_disgust``); captions after a tab are ignored here."""
    fields = text.split("\t") if "\t" in text else text.split()
    fields = [f.strip() for f in fields if f.strip()]
    if len(fields) < 2 or not _CLIP_NAME.match(fields[0]):
        return None, _problem(item, line, f"expected 'NNNNN.mp4 label', found {text!r}")
    clip_id = clip_number(_CLIP_NAME.match(fields[0]).group(1))
    words = fields[1].split(COMPOUND_SEPARATOR) if item.labelset == "compound" else [fields[1]]
    labels = tuple(mafw_word(w) for w in words)
    if None in labels:
        return None, _problem(item, line, f"label {fields[1]!r} is outside MAFW's 11 classes", clip_id)
    return _Listing(clip_id, labels, item.split, item.fold, item.display, line), None


def _read_listings(layout: DferLayout, labelset: str, plan: FoldPlan) -> List[_Listing]:
    files = layout.fold_lists(labelset)
    missing = [(split, k) for k in FOLDS for split in ("train", "test") if (split, k) not in files]
    if missing:
        names = ", ".join(f"{split} of fold {k}" for split, k in missing)
        raise LayoutError(f"{layout.root}: fold file missing for the {labelset} set: {names} "
                          f"(found {len(files)} of {2 * len(FOLDS)})")
    parse = parse_dfew_line if layout.dataset == "dfew" else parse_mafw_line
    listings: List[_Listing] = []
    for key in sorted(files, key=lambda k: (k[1], k[0] != "train")):
        item = files[key]
        text, encoding = layout.read_text(item.ref)
        plan.encodings[item.display] = encoding
        if encoding != "utf-8":
            plan.notes.append(f"{item.display}: read as {encoding.upper()} (not UTF-8)")
        for number, raw in enumerate(_LINE_END.split(text), start=1):
            if not raw.strip():
                continue
            listing, problem = parse(raw.strip(), item, number)
            if problem is not None:
                plan.problems.append(problem)
            elif listing is not None:
                listings.append(listing)
    return listings


def _merge(listings: List[_Listing], present: Dict[str, object], part_name: str, plan: FoldPlan) -> List[FoldClip]:
    """Listings -> one FoldClip per clip; conflicts and missing clips become problems."""
    first: Dict[str, _Listing] = {}
    test: Dict[str, _Listing] = {}
    train: Dict[str, List[int]] = {}
    bad = set()
    for item in listings:
        def refuse(reason: str) -> None:
            plan.problems.append(Problem(item.clip_id, CLIPS_SPLIT, item.line, reason, item.source))
            bad.add(item.clip_id)
        seen = first.setdefault(item.clip_id, item)
        if item.clip_id not in present:
            if seen is item:
                refuse(f"no clip {item.clip_id} in the {part_name} folder")
            continue
        if item.labels != seen.labels:
            refuse(f"label {'_'.join(item.labels)} disagrees with {'_'.join(seen.labels)} at {seen.source}:{seen.line}")
        elif item.split == "test" and item.clip_id in test:
            other = test[item.clip_id]
            how = "twice in" if other.fold == item.fold else "in the test sets of two folds:"
            refuse(f"listed {how} fold {other.fold} ({other.source}:{other.line}) and fold {item.fold}")
        elif item.split == "test":
            test[item.clip_id] = item
        elif item.fold in train.setdefault(item.clip_id, []):
            refuse(f"listed twice in the train list of fold {item.fold}")
        else:
            train[item.clip_id].append(item.fold)
    records = []
    for clip_id, item in first.items():
        if clip_id in bad or clip_id not in present:
            continue
        fold = test[clip_id].fold if clip_id in test else None
        folds = tuple(sorted(train.get(clip_id, ())))
        records.append(FoldClip(clip_id, COMPOUND_SEPARATOR.join(item.labels), item.labels, fold, folds,
                                item.source, item.line))
        if fold is None or set(folds) | {fold} != set(FOLDS) or fold in folds:
            plan.notes.append(f"clip {clip_id}: test fold {fold}, train folds {list(folds)}: not the usual "
                              f"test-in-one, train-in-the-other-four (kept exactly as the lists say)")
    return sorted(records, key=lambda r: r.clip_id)


def plan_folds(layout: DferLayout, config: str, on_error: str = "raise") -> FoldPlan:
    """The records a build of ``config`` writes, every clip of the fold lists accounted for.

    ``on_error="raise"``: the first bad line is an AnnotationError naming its file and line;
    ``"skip"``: bad lines and their clips go to ``problems``.
    """
    labelset = "compound" if config == "compound" else "single"
    plan = FoldPlan([])
    listings = _read_listings(layout, labelset, plan)
    part = layout.part(config)
    plan.records = _merge(listings, part.clips, part.kind, plan)
    if layout.dataset == "mafw":
        plan.records = _with_captions(layout, plan)
    listed = {item.clip_id for item in listings} | _other_set(layout, labelset)
    plan.unlisted = [clip_id for clip_id in part.clip_ids() if clip_id not in listed]
    if plan.problems and on_error == "raise":
        raise AnnotationError(plan.problems[0])
    return plan


def _other_set(layout: DferLayout, labelset: str) -> set:
    """Clip ids that MAFW's other set (compound for single, and back) lists: in a list, so not unlisted."""
    other = "single" if labelset == "compound" else "compound"
    if layout.dataset != "mafw" or not layout.fold_lists(other):
        return set()
    ids = set()
    for item in layout.fold_lists(other).values():
        for number, raw in enumerate(_LINE_END.split(layout.read_text(item.ref)[0]), start=1):
            listing, _ = parse_mafw_line(raw.strip(), item, number) if raw.strip() else (None, None)
            if listing is not None:
                ids.add(listing.clip_id)
    return ids


def read_captions(layout: DferLayout, plan: FoldPlan) -> Dict[str, Tuple[str, str]]:
    """clip id -> (English, Chinese) caption from single_label.txt and multi_label.txt, where present."""
    captions: Dict[str, Tuple[str, str]] = {}
    for item in filter(None, (layout.label_file("single"), layout.label_file("compound"))):
        text, encoding = layout.read_text(item.ref)
        plan.encodings[item.display] = encoding
        if encoding != "utf-8":
            plan.notes.append(f"{item.display}: read as {encoding.upper()} (not UTF-8)")
        for raw in _LINE_END.split(text):
            # "03747.mp4  anger  <br>Chinese caption <br> English caption", or tab-separated fields
            pieces = raw.split("<br>") if "<br>" in raw else raw.split("\t")
            head, rest = pieces[0], pieces[1:] if "<br>" in raw else pieces[2:]
            match = _CLIP_NAME.match(head.split()[0]) if head.split() else None
            if match is not None:
                zh, en = (rest + ["", ""])[:2]
                captions.setdefault(clip_number(match.group(1)), (en.strip(), zh.strip()))
    return captions


def _with_captions(layout: DferLayout, plan: FoldPlan) -> List[FoldClip]:
    captions = read_captions(layout, plan)
    if not captions:
        return plan.records
    return [FoldClip(r.clip_id, r.label, r.labels, r.test_fold, r.train_folds, r.source, r.line,
                     captions.get(r.clip_id, ("", ""))) for r in plan.records]
