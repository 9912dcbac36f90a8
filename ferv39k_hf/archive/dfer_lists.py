"""DFEW's and MAFW's fold lists in each codebase's format: written per fold from the official lists, read back, checked.

Formats (``k`` the fold; ids in the codebase's label order):
  dfer-clip  ``DFEW_set_k_train.txt``: ``PREFIX/NNNNN <frames> <id>`` (DFEW order; MAFW: DFER-CLIP order)
  mae-dfer   ``split0k/train.csv``: ``PREFIX/NNNNN <id>`` (DFEW order; MAFW: MAE-DFER order)
  s2d        DFEW ``train_set_k.csv``: header ``video_name,label``, ``02522,5`` (0-based DFEW order);
             MAFW ``set_k/train.txt``: ``03747.mp4 anger`` (the official line)
  emoclip    MAFW only, ``set_k/train.txt``: ``03747.mp4<TAB>anger<TAB>English caption``
Checking a list names every line whose clip is missing, whose class disagrees with the
official lists, or whose frame count is not the frames on disk; GBK files are read and named.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ferv39k_hf.archive.dfer_folds import FoldClip, plan_folds
from ferv39k_hf.archive.dfer_layout import DferLayout, clip_number, find_dfer_layout
from ferv39k_hf.archive.listcheck import FrameCountMismatch
from ferv39k_hf.archive.listwriter import check_lists_out
from ferv39k_hf.dfer_taxonomy import FOLDS, facts, mafw_word
from ferv39k_hf.errors import Ferv39kError

DFER_FORMATS = ("dfer-clip", "mae-dfer", "s2d", "emoclip")
# The label order each codebase's ids follow, per dataset.
CODEBASE_ORDER = {("dfew", "dfer-clip"): "dfew", ("dfew", "mae-dfer"): "dfew", ("dfew", "s2d"): "dfew",
                  ("mafw", "dfer-clip"): "dfer-clip", ("mafw", "mae-dfer"): "mae-dfer", ("mafw", "s2d"): "s2d",
                  ("mafw", "emoclip"): "mae-dfer"}
_LINE_END = re.compile(r"\r\n|\r|\n")


class DferListError(Ferv39kError, ValueError):
    """A list that cannot be written or read as asked; the message names the file."""


def list_names(dataset: str, fmt: str, k: int) -> Dict[str, str]:
    """split -> the file name (relative to --out) the codebase reads for fold ``k``."""
    title = facts(dataset).title
    if fmt == "dfer-clip":
        return {s: f"{title}_set_{k}_{s}.txt" for s in ("train", "test")}
    if fmt == "mae-dfer":
        return {s: f"split0{k}/{s}.csv" for s in ("train", "test")}
    if dataset == "dfew" and fmt == "s2d":
        return {s: f"{s}_set_{k}.csv" for s in ("train", "test")}
    return {s: f"set_{k}/{s}.txt" for s in ("train", "test")}


def _check_format(dataset: str, fmt: str) -> None:
    if (dataset, fmt) not in CODEBASE_ORDER:
        choices = ", ".join(f for d, f in CODEBASE_ORDER if d == dataset)
        raise DferListError(f"no {fmt!r} list format for {dataset.upper()}; choose one of {choices}")


def render_line(dataset: str, fmt: str, record: FoldClip, frames: int, prefix: str) -> str:
    words = facts(dataset).label_names(CODEBASE_ORDER[(dataset, fmt)])
    label = words.index(record.label)
    path = f"{prefix.rstrip('/')}/{record.clip_id}" if prefix else record.clip_id
    if fmt == "dfer-clip":
        return f"{path} {frames} {label}"
    if fmt == "mae-dfer":
        return f"{path} {label}"
    if fmt == "s2d" and dataset == "dfew":
        return f"{record.clip_id},{label}"
    if fmt == "emoclip":
        return f"{record.clip_id}.mp4\t{record.label}\t{record.captions[0]}"
    return f"{record.clip_id}.mp4 {record.label}"


@dataclass
class DferListsResult:
    out: Path
    files: List[Path]
    counts: Dict[int, Tuple[int, int]]

    def summary(self) -> str:
        lines = [f"wrote {len(self.files)} list file(s) to {self.out}"]
        lines += [f"  fold {k}: {tr} train / {te} test" for k, (tr, te) in sorted(self.counts.items())]
        return "\n".join(lines)


def write_dfer_lists(root: Any, out: Any, dataset: str, fmt: str, *, prefix: Optional[str] = None,
                     overwrite: bool = False) -> DferListsResult:
    """Every fold's train and test lists in ``fmt``, from the official lists of the archive at ``root``."""
    _check_format(dataset, fmt)
    layout = find_dfer_layout(root, dataset)
    config = facts(dataset).configs[0]
    plan = plan_folds(layout, config)
    part = layout.part(config)
    if prefix is None and fmt in ("dfer-clip", "mae-dfer"):
        prefix = str(Path(part.clip_location(plan.records[0].clip_id)).parent) if plan.records else ""
    out = Path(out).absolute()
    names = [name for k in FOLDS for name in list_names(dataset, fmt, k).values()]
    check_lists_out(out, root, names, overwrite)
    header = "video_name,label\n" if (dataset, fmt) == ("dfew", "s2d") else ""
    files, counts = [], {}
    for k in FOLDS:
        chosen = {"train": [r for r in plan.records if k in r.train_folds],
                  "test": [r for r in plan.records if r.test_fold == k]}
        counts[k] = (len(chosen["train"]), len(chosen["test"]))
        for split, name in list_names(dataset, fmt, k).items():
            lines = [render_line(dataset, fmt, r, len(part.frames(r.clip_id)), prefix or "") for r in chosen[split]]
            path = out / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(header + "".join(line + "\n" for line in lines), encoding="utf-8")
            files.append(path)
    return DferListsResult(out, files, counts)


@dataclass
class ListCheck:
    """What reading one codebase list against the archive found."""

    path: str
    fmt: str
    encoding: str
    clips: Dict[str, str] = field(default_factory=dict)  # clip id -> class word
    problems: List[str] = field(default_factory=list)
    frame_counts: List[FrameCountMismatch] = field(default_factory=list)


def _decode(path: Path) -> Tuple[str, str]:
    data = path.read_bytes()
    for encoding in ("utf-8-sig", "gbk"):
        try:
            return data.decode(encoding), "utf-8" if encoding == "utf-8-sig" else encoding
        except UnicodeDecodeError:
            continue
    raise DferListError(f"{path}: neither UTF-8 nor GBK text")


def parse_list_line(dataset: str, fmt: str, text: str) -> Tuple[str, str, Optional[int]]:
    """(clip id, class word, claimed frames or None) of one line; ValueError saying what is wrong."""
    words = facts(dataset).label_names(CODEBASE_ORDER[(dataset, fmt)])
    fields = text.split("\t") if fmt == "emoclip" else (text.split(",") if "," in text else text.split())
    fields = [f.strip() for f in fields]
    expected = {"dfer-clip": 3, "mae-dfer": 2}.get(fmt, 2)
    if len(fields) < expected or (fmt != "emoclip" and len(fields) != expected):
        raise ValueError(f"expected {expected} fields for {fmt}, found {text!r}")
    name = re.split(r"[/\\]", fields[0].rstrip("/\\"))[-1]
    clip_id = clip_number(name[:-4] if name.lower().endswith(".mp4") else name)
    if clip_id is None:
        raise ValueError(f"{fields[0]!r} does not end in a clip number")
    label = fields[-1] if fmt in ("dfer-clip", "mae-dfer") or (dataset == "dfew") else fields[1]
    if label.isdigit():
        if not int(label) < len(words):
            raise ValueError(f"label {label} is outside the {len(words)} classes (ids 0..{len(words) - 1})")
        word = words[int(label)]
    else:
        word = mafw_word(label) if dataset == "mafw" else None
        if word is None:
            raise ValueError(f"label {label!r} is not a class of {dataset.upper()}")
    frames = int(fields[1]) if fmt == "dfer-clip" and fields[1].isdigit() else None
    return clip_id, word, frames


def check_dfer_list(path: Any, layout: DferLayout, fmt: str, truth: Dict[str, FoldClip]) -> ListCheck:
    """Read one list line by line against the archive: the clip present, its class, its frame count."""
    path = Path(path)
    text, encoding = _decode(path)
    result = ListCheck(str(path), fmt, encoding)
    part = layout.part(facts(layout.dataset).configs[0])
    for number, raw in enumerate(_LINE_END.split(text), start=1):
        line = raw.strip()
        if not line or line.lower().replace(" ", "") == "video_name,label":
            continue
        where = f"{path}:{number}"
        try:
            clip_id, word, frames = parse_list_line(layout.dataset, fmt, line)
        except ValueError as err:
            result.problems.append(f"{where}: {err}")
            continue
        if clip_id not in part.clips:
            result.problems.append(f"{where}: clip {clip_id}: not in the archive's {part.kind} folder")
            continue
        if clip_id in truth and truth[clip_id].label != word:
            result.problems.append(f"{where}: clip {clip_id}: class {word}, but the official lists say "
                                   f"{truth[clip_id].label} ({truth[clip_id].where})")
        found = len(part.frames(clip_id))
        if frames is not None and frames != found:
            result.frame_counts.append(FrameCountMismatch(clip_id, "", str(path), number, frames, found))
        result.clips[clip_id] = word
    _compare_with_fold(path, truth, result)
    return result


_FOLD_IN_NAME = re.compile(r"(?:set_?|split0?)(\d)\D*?(train|test)|(train|test)\D*?(?:set_?|split0?)(\d)", re.I)


def _compare_with_fold(path: Path, truth: Dict[str, FoldClip], result: ListCheck) -> None:
    """When the file's path names its fold and split (set_2/test.txt, DFEW_set_2_test.txt), compare the clip sets."""
    match = _FOLD_IN_NAME.search(path.as_posix())
    if match is None:
        return
    k = int(match.group(1) or match.group(4))
    split = (match.group(2) or match.group(3)).lower()
    want = {c for c, r in truth.items() if (r.test_fold == k if split == "test" else k in r.train_folds)}
    missing, extra = sorted(want - set(result.clips)), sorted(set(result.clips) - want)
    if missing or extra:
        result.problems.append(f"{path}: as fold {k}'s {split} list it lacks {len(missing)} official clip(s) "
                               f"({', '.join(missing[:5])}) and has {len(extra)} other(s) ({', '.join(extra[:5])})")


def check_dfer_lists(root: Any, dataset: str, fmt: str, files: List[Any]) -> List[ListCheck]:
    """Check each list file (any fold, train or test) against the archive at ``root``."""
    _check_format(dataset, fmt)
    layout = find_dfer_layout(root, dataset)
    plan = plan_folds(layout, facts(dataset).configs[0], on_error="skip")
    truth = {r.clip_id: r for r in plan.records}
    return [check_dfer_list(path, layout, fmt, truth) for path in files]


def render_checks(checks: List[ListCheck]) -> str:
    lines = []
    for check in checks:
        state = "OK" if not (check.problems or check.frame_counts) else "PROBLEMS"
        enc = "" if check.encoding == "utf-8" else f", read as {check.encoding.upper()}"
        lines.append(f"{check.path}: {check.fmt}, {len(check.clips)} clip(s){enc}: {state}")
        lines += [f"  {p}" for p in check.problems]
        lines += [f"  {m.source}:{m.line}: clip {m.clip_id}: the list says {m.listed} frames, the archive holds "
                  f"{m.found}" for m in check.frame_counts]
    return "\n".join(lines)


def run_dfer_lists(args: Any) -> Optional[int]:
    """``ferv39k-hf lists`` on a DFEW or MAFW archive (write every fold, or ``--check`` files); None for FERV39k."""
    from ferv39k_hf.archive.dfer_layout import detect_dataset

    dataset = getattr(args, "dataset", None) or detect_dataset(args.root)
    if dataset in (None, "ferv39k"):
        if getattr(args, "check", None):
            raise DferListError("--check reads DFEW and MAFW codebase lists; for FERV39k give the lists to "
                                "'ferv39k-hf build --train-list/--test-list'")
        return None
    if args.check:
        checks = check_dfer_lists(args.root, dataset, args.list_out_format, args.check)
        print(render_checks(checks))
        return 0 if not any(c.problems or c.frame_counts for c in checks) else 1
    if not args.out:
        raise DferListError("give --out (the folder to write the lists into) or --check FILE ...")
    result = write_dfer_lists(args.root, args.out, dataset, args.list_out_format, prefix=args.prefix,
                              overwrite=args.overwrite)
    print(result.summary())
    return 0
