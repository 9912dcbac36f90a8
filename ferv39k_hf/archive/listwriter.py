"""``ferv39k-hf lists``: write a verified archive's splits in a codebase's list format, with its file names.

The clips are checked as ``ferv39k-hf verify`` checks them (face crops: present,
not empty, every frame sound); DFER-CLIP's frame counts are the frames found.
Nothing is written in the archive, and an existing file is replaced only with
``--overwrite`` and only when ``ferv39k-hf lists`` wrote it and it is unchanged
since (the folder's marker, :data:`MARKER`, holds each file's SHA-256).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ferv39k_hf.archive.annotations import ClipRecord
from ferv39k_hf.archive.lists import FILE_NAMES, FORMATS, ListError, open_lists, render_lines
from ferv39k_hf.archive.outdirs import MARKER as BUILD_MARKER
from ferv39k_hf.archive.outdirs import OutputRefused, check_outside_archive
from ferv39k_hf.errors import BuildError

MARKER = ".ferv39k-hf-lists.json"
TOOL = "ferv39k-hf lists"
REPORT = "lists_report.json"
# Findings about a listed clip or line: such a clip is not written (with --on-error skip) or nothing is.
_BLOCKING = ("split-line", "duplicate", "missing-clip", "empty-clip", "bad-frame", "unsafe-entry")
# What a prefix may not hold: the space-separated formats split on spaces, S2D on commas.
_FORBIDDEN = {"official": " \t", "dfer-clip": " \t", "mae-dfer": " \t", "s2d": ","}


@dataclass
class ListsResult:
    """What ``write_lists`` wrote: the files, clips per split, and the clips and lines left out."""

    out: Path
    fmt: str
    files: Dict[str, Path]
    counts: Dict[str, int]
    left_out: List[Dict[str, Any]] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"wrote {self.fmt} lists to {self.out}"]
        lines += [f"  {split:<6} {self.counts[split]:>7} clips  {path.name}" for split, path in self.files.items()]
        if self.left_out:
            lines.append(f"  left out {len(self.left_out)} line(s) or clip(s); see {self.out / REPORT}")
            lines += [f"    {entry['where']}: {entry['reason']}" for entry in self.left_out[:10]]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_marker(out: Path) -> Dict[str, str]:
    """File name -> SHA-256 of what ``ferv39k-hf lists`` wrote in ``out`` ({} without a sound marker)."""
    path = out / MARKER
    if not path.is_file() or path.is_symlink():
        return {}
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    files = marker.get("files") if isinstance(marker, dict) and marker.get("tool") == TOOL else None
    if not isinstance(files, dict):
        return {}
    return {k: v for k, v in files.items() if isinstance(k, str) and isinstance(v, str) and "/" not in k}


def check_lists_out(out: Path, root: Any, names: Sequence[str], overwrite: bool) -> Dict[str, str]:
    """Refuse an ``out`` in the archive, a build folder, and files in the way; the marker's entries otherwise.

    A file named in ``names`` that exists is replaced only with ``overwrite`` and
    only when the marker lists it with its present SHA-256.
    """
    check_outside_archive(out, root, "--out")
    if out.exists() and not out.is_dir():
        raise OutputRefused(f"--out {out} exists and is not a folder")
    if (out / BUILD_MARKER).exists():
        raise OutputRefused(f"--out {out} is a folder made by ferv39k-hf build; write the lists elsewhere "
                            "(a build folder holds only what the build wrote)")
    ours = _read_marker(out) if out.is_dir() else {}
    for name in list(names) + [REPORT]:
        target = out / name
        if not (target.exists() or target.is_symlink()):
            continue
        if target.is_symlink() or not target.is_file():
            raise OutputRefused(f"{target} is in the way and is not a plain file; move it or choose another --out")
        if ours.get(name) != _sha256(target):
            raise OutputRefused(f"{target} exists and was not written by ferv39k-hf lists (or was edited since); "
                                "move it away or choose another --out")
        if not overwrite:
            raise OutputRefused(f"{target} exists (written by ferv39k-hf lists); pass --overwrite to replace it")
    return ours


def _write_atomic(path: Path, text: str) -> str:
    data = text.encode("utf-8")
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    partial.write_bytes(data)
    os.replace(partial, path)
    return hashlib.sha256(data).hexdigest()


def _line_path(record: ClipRecord, prefix: Optional[str], fmt: str, part: Any) -> str:
    """The path a line names: PREFIX/Scene/Emotion/NNNN, or the clip's own folder when no prefix is given."""
    if prefix is not None:
        return f"{prefix.rstrip('/')}/{record.clip_id}" if prefix else record.clip_id
    if fmt in ("official", "s2d"):
        return record.clip_id  # these formats name clips relative to the face-crop folder
    where = part.clip_location(record.clip_id)
    if "!" in where:
        raise ListError(f"clip {record.clip_id} is inside a zip ({where}); {fmt} reads frame folders: unzip the "
                        "archive, or give --prefix with the folder that will hold the Scene folders")
    return where


def _sound_records(report: Any, records: List[ClipRecord],
                   on_error: str) -> Tuple[List[ClipRecord], List[Dict[str, Any]]]:
    """The records without a blocking finding, and an entry per line or clip left out."""
    blocking = [f for f in report.findings if f.kind in _BLOCKING and (f.clip_id or f.line)]
    if blocking and on_error == "raise":
        raise BuildError(f"{len(blocking)} problem(s) in the listed clips, nothing written; the first: "
                         f"{blocking[0]} (--on-error skip writes the sound clips and lists the others in {REPORT})")
    bad = {f.clip_id for f in blocking if f.clip_id}
    left_out = [{"clip_id": f.clip_id, "where": f"{f.file}:{f.line}" if f.line else (f.file or f.clip_id),
                 "kind": f.kind, "reason": f.reason} for f in blocking]
    return [r for r in records if r.clip_id not in bad], left_out


def write_lists(root: Any, out: Any, *, fmt: str, prefix: Optional[str] = None, train_list: Optional[str] = None,
                test_list: Optional[str] = None, list_format: Optional[str] = None, on_error: str = "raise",
                deep: bool = False, overwrite: bool = False, progress: bool = True) -> ListsResult:
    """Write the archive's train and test splits as ``fmt`` lists (``official``, ``dfer-clip``, ``mae-dfer``, ``s2d``).

    Args:
        root: the archive root (folders or zips). Its face crops are verified first.
        out: the folder to write into (made if absent; never in the archive).
        fmt: the list format; the files get that codebase's names (``FERV39K_train.txt``, ``train.csv``, ...).
        prefix: written before each ``Scene/Emotion/NNNN`` (the folder holding the Scene folders on the machine
            that trains). None: the clip's folder in this archive for dfer-clip and mae-dfer, none for s2d and official.
        train_list, test_list, list_format: read the splits from community lists instead of the split files.
        on_error: ``raise`` writes nothing when a listed clip is unsound; ``skip`` leaves it out and lists it in
            ``lists_report.json``.
        deep: decode every frame fully (slow) instead of the marker check.
        overwrite: replace files an earlier ``ferv39k-hf lists`` wrote here (and nothing else).

    Returns a :class:`ListsResult`. Example::

        write_lists("/data/FERV39k", "annotation", fmt="dfer-clip", prefix="/data/FERV39k/2_ClipsforFaceCrop")
    """
    from ferv39k_hf.archive.layout import find_layout
    from ferv39k_hf.archive.splits import read_split_records
    from ferv39k_hf.archive.verify import verify_archive

    if fmt not in FORMATS:
        raise ListError(f"unknown list format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if prefix is not None and any(c in prefix for c in _FORBIDDEN[fmt] + "\r\n"):
        raise ListError(f"--prefix {prefix!r} holds a character the {fmt} format separates fields with")
    out = Path(out).absolute()
    names = dict(zip(("train", "test"), FILE_NAMES[fmt]))
    check_lists_out(out, root, names.values(), overwrite)  # before the (long) check, so a refused --out fails at once
    lists = open_lists(train_list, test_list, list_format)
    report = verify_archive(root, config="faces", deep=deep, expect_official=False, progress=progress,
                            train_list=train_list, test_list=test_list, list_format=list_format)
    layout = find_layout(root)
    records, _ = lists.read("skip") if lists is not None else read_split_records(layout, "skip")
    sound, left_out = _sound_records(report, records, on_error)  # the problems are among the report's findings
    part = layout.part("faces")
    texts = {}
    for split, name in names.items():
        rows = [(_line_path(r, prefix, fmt, part), r, report.frame_counts[r.clip_id])
                for r in sound if r.split == split]
        texts[split] = (name, render_lines(fmt, rows), len(rows))
    ours = check_lists_out(out, root, names.values(), overwrite)  # again: the check took a while
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, (name, text, _) in texts.items():
        written[name] = _write_atomic(out / name, text)
    if left_out:
        written[REPORT] = _write_atomic(out / REPORT, json.dumps({
            "format": fmt, "files": sorted(names.values()), "left_out": left_out}, indent=2) + "\n")
    elif REPORT in ours and (out / REPORT).is_file() and _sha256(out / REPORT) == ours[REPORT]:
        (out / REPORT).unlink()  # our report of an earlier run: it no longer describes these files
        del ours[REPORT]
    ours.update(written)
    _write_atomic(out / MARKER, json.dumps({"tool": TOOL, "files": ours}, indent=2, sort_keys=True) + "\n")
    notes = [f"{f}" for f in report.findings if f.kind == "frame-count"][:5]
    return ListsResult(out, fmt, {split: out / name for split, (name, _, _) in texts.items()},
                       {split: n for split, (_, _, n) in texts.items()}, left_out,
                       [f"the input list's frame count is wrong here (the written one is right): {n}" for n in notes])


def add_lists_command(sub: Any) -> None:
    """The ``lists`` subcommand's options."""
    p = sub.add_parser(
        "lists",
        help="write the archive's train and test splits as DFER-CLIP, MAE-DFER, S2D or official lists",
        description="Check the archive's face crops as 'verify' does, then write its train and test splits in a "
        "published codebase's list format and file names (dfer-clip: FERV39K_train.txt/FERV39K_test.txt with "
        "frame counts and DFEW ids; mae-dfer: train.csv/test.csv with DFEW ids; s2d: train.csv/test.csv with a "
        "'path,id' header and alphabetical ids; official: train_All.csv/test_All.csv), so that codebase trains "
        "on exactly the clips checked here.",
    )
    p.add_argument("root", help="the archive root (folders or zips)")
    p.add_argument("--format", dest="list_out_format", required=True, choices=list(FORMATS) + ["emoclip"],
                   help="the list format to write (DFEW/MAFW: dfer-clip, mae-dfer, s2d; MAFW also emoclip)")
    # DFEW and MAFW (archive/dfer_lists.py): every fold's lists, or --check a codebase's shipped lists
    p.add_argument("--dataset", choices=["ferv39k", "dfew", "mafw"], default=None,
                   help="read the archive as ferv39k, dfew or mafw (default: told from its names)")
    p.add_argument("--check", nargs="+", metavar="FILE", default=None,
                   help="DFEW/MAFW: read these lists in --format line by line against the archive (missing clips, "
                        "classes, frame counts, encoding) instead of writing")
    p.add_argument("--out", required=False,
                   help="the folder to write the two files into (made if absent; never inside the archive; an "
                        "existing file is replaced only with --overwrite, and only if ferv39k-hf lists wrote it)")
    p.add_argument("--prefix", default=None, metavar="PATH",
                   help="written before each Scene/Emotion/NNNN: the folder that holds the Scene folders of "
                        "2_ClipsforFaceCrop where the codebase runs. Default: each clip's folder in this archive "
                        "for dfer-clip and mae-dfer (which need absolute paths), none for s2d and official")
    p.add_argument("--on-error", choices=["raise", "skip"], default="raise",
                   help="raise: write nothing if a listed clip is missing or damaged (default); skip: leave such "
                        f"clips out and list them in {REPORT}")
    p.add_argument("--deep", action="store_true", help="fully decode every frame (slow) instead of the marker check")
    p.add_argument("--overwrite", action="store_true", help="replace lists an earlier 'ferv39k-hf lists' wrote here")
    p.add_argument("--train-list", metavar="FILE", default=None,
                   help="convert: read the train split from this list (any supported format) instead of train_All.csv")
    p.add_argument("--test-list", metavar="FILE", default=None,
                   help="convert: the test list to read (see --train-list)")
    p.add_argument("--list-format", choices=FORMATS, default=None,
                   help="the format of --train-list and --test-list when it cannot be told from their content")


def run_lists_command(args: Any) -> int:
    result = write_lists(args.root, args.out, fmt=args.list_out_format, prefix=args.prefix,
                         train_list=args.train_list, test_list=args.test_list, list_format=args.list_format,
                         on_error=args.on_error, deep=args.deep, overwrite=args.overwrite)
    print(result.summary())
    return 0
