"""``ferv39k-hf verify``: check an archive and name every problem.

Each finding names the clip, the file and, for split-file lines, the line.
The exit status is 0 only when there is none.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from ferv39k_hf.archive.annotations import ClipRecord, Problem
from ferv39k_hf.archive.clipfiles import frame_problem, mp4_problem, numbering_gap
from ferv39k_hf.archive.files import FileRef
from ferv39k_hf.archive.layout import Layout, Part, find_layout
from ferv39k_hf.archive.listcheck import check_frame_counts
from ferv39k_hf.archive.lists import open_lists
from ferv39k_hf.archive.outdirs import check_outside_archive
from ferv39k_hf.archive.splits import read_split_records
from ferv39k_hf.errors import LayoutError
from ferv39k_hf.fileio import count_frames
from ferv39k_hf.taxonomy import CLASS_WORDS, OFFICIAL_SPLIT_TOTALS, SCENES, SPLITS, official_counts

WARNING_KINDS = ("frame-gap",)  # findings that do not fail verify


@dataclass
class Finding:
    # split-line, duplicate, missing-clip, empty-clip, bad-frame, unlisted-clip, unknown-folder, unsafe-entry,
    # count, frame-count (a DFER-CLIP list's frame count the archive contradicts), frame-gap (a warning)
    kind: str
    reason: str
    clip_id: Optional[str] = None
    file: Optional[str] = None
    line: Optional[int] = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else (self.file or "")
        who = f"clip {self.clip_id}: " if self.clip_id else ""
        return f"[{self.kind}] {where + ': ' if where else ''}{who}{self.reason}"


@dataclass
class VerifyReport:
    root: str
    config: str
    deep: bool
    expect_official: bool
    findings: List[Finding] = field(default_factory=list)
    counts: Dict[str, Dict[Tuple[str, str], int]] = field(default_factory=dict)
    clips_checked: int = 0
    frames_checked: int = 0
    split_lists: Optional[List[Dict[str, str]]] = None  # the community lists read instead of the split files
    frame_counts: Dict[str, int] = field(default_factory=dict, repr=False)  # clip id -> frames found (frame parts)
    synthetic: bool = False  # made by `ferv39k-hf sample` (its marker): no count is FERV39k's

    @property
    def problems(self) -> List[Finding]:
        return [f for f in self.findings if f.kind not in WARNING_KINDS]

    @property
    def warnings(self) -> List[Finding]:
        return [f for f in self.findings if f.kind in WARNING_KINDS]

    @property
    def ok(self) -> bool:
        """No problem; warnings (frame numbering gaps) are printed but do not fail the check."""
        return not self.problems

    def to_json(self) -> Dict[str, Any]:
        return {
            "ok": self.ok,
            "root": self.root,
            "config": self.config,
            "deep": self.deep,
            "expect_official": self.expect_official,
            "synthetic": self.synthetic,
            "clips_checked": self.clips_checked,
            "frames_checked": self.frames_checked,
            **({"split_lists": self.split_lists} if self.split_lists is not None else {}),
            "findings": [asdict(f) for f in self.findings],
            "counts": {
                split: {f"{scene}/{word}": n for (scene, word), n in sorted(cells.items())}
                for split, cells in self.counts.items()
            },
        }

    def format(self, limit: int = 200) -> str:
        if self.synthetic and not self.expect_official:  # every cell would differ from the official count
            found = ", ".join(f"{sum(cells.values())} {split}" for split, cells in self.counts.items())
            lines = [(f"synthetic sample (made by 'ferv39k-hf sample', no FERV39k data): {found} clips; "
                      "counts not compared with the official ones")]
        else:
            lines = [count_table(self.counts, self.expect_official), ""]
        how = "full decode" if self.deep else "marker check"
        lines.append(f"checked {self.clips_checked} clips, {self.frames_checked} files ({how})")
        for entry in self.split_lists or ():
            lines.append(f"{entry['split']} list: {entry['file']} ({entry['format']} format, "
                         f"sha256 {entry['sha256'][:16]}...)")
        for label, found in (("warning(s)", self.warnings), ("problem(s)", self.problems)):
            if not found:
                continue
            by_kind = Counter(f.kind for f in found)
            lines.append(f"{len(found)} {label}: " + ", ".join(f"{k} {n}" for k, n in sorted(by_kind.items())))
            lines += [f"  {f}" for f in found[:limit]]
            if len(found) > limit:
                lines.append(f"  ... and {len(found) - limit} more (use --json for all)")
        if self.ok:
            lines.append(f"OK: no problems in {self.root}" + (" (see the warnings above)" if self.warnings else ""))
        return "\n".join(lines)


def count_table(counts: Dict[str, Dict[Tuple[str, str], int]], expect_official: bool) -> str:
    """Clips per scene and class for each split; ``found/official`` where they differ."""
    out = []
    for split, cells in counts.items():
        official = official_counts(split)
        out.append(f"{split}: clips per scene and class (found/official where they differ)")
        out.append(f"{'scene':<14}" + "".join(f"{w:>11}" for w in CLASS_WORDS) + f"{'total':>13}")
        for scene in SCENES:
            row = [cells.get((scene, w), 0) for w in CLASS_WORDS]
            shown = [_cell(n, official[(scene, w)]) for n, w in zip(row, CLASS_WORDS)]
            total = _cell(sum(row), sum(official[(scene, w)] for w in CLASS_WORDS))
            out.append(f"{scene:<14}" + "".join(f"{c:>11}" for c in shown) + f"{total:>13}")
        total = sum(cells.values())
        out.append(f"{'all':<14}{'':>77}{_cell(total, OFFICIAL_SPLIT_TOTALS[split]):>13}")
    return "\n".join(out)


def _cell(found: int, official: int) -> str:
    return str(found) if found == official else f"{found}/{official}"


def _problem_finding(problem: Problem) -> Finding:
    kind = "duplicate" if "listed" in problem.reason else "split-line"
    return Finding(kind, problem.reason, problem.clip_id, problem.source, problem.line)


def _read(part: Part, ref: FileRef) -> Tuple[bytes, Optional[str]]:
    try:
        return part.read(ref), None
    except LayoutError as err:  # damaged zip member or unreadable file
        return b"", str(err)


def _check_frames(part: Part, record: ClipRecord, deep: bool, report: VerifyReport) -> None:
    refs, entries = part.scan_clip(record.clip_id)
    report.findings += [Finding(u.kind, u.reason, record.clip_id, u.name) for u in entries]
    location = part.clip_location(record.clip_id)
    if not refs:
        kind = "empty-clip" if part.clip_locations(record.clip_id) else "missing-clip"
        reason = "clip folder is empty" if kind == "empty-clip" else "clip folder is missing"
        report.findings.append(Finding(kind, f"{reason} ({location}); listed at {record.where}", record.clip_id,
                                       record.source, record.line))
        return
    report.frame_counts[record.clip_id] = len(refs)
    gap = numbering_gap([ref.name for ref in refs] + [u.name for u in entries])  # an entry named already is no gap
    if gap:
        report.findings.append(Finding("frame-gap", gap, record.clip_id, location))
    for ref in refs:
        problem = frame_problem(part, ref, deep)
        report.frames_checked += 1
        if problem:
            report.findings.append(Finding("bad-frame", problem, record.clip_id, ref.display))


def _check_video(part: Part, record: ClipRecord, deep: bool, report: VerifyReport) -> None:
    ref = part.video(record.clip_id)
    if ref is None:
        location = part.clip_location(record.clip_id)
        report.findings.append(Finding("missing-clip", f"video missing ({location}); listed at {record.where}",
                                       record.clip_id, record.source, record.line))
        return
    data, problem = _read(part, ref)
    report.frames_checked += 1
    problem = problem or mp4_problem(data[:16])
    if problem is None and deep:
        try:
            count_frames(data)
        except Exception as err:  # PyAV's error types vary by release
            problem = f"video does not decode ({err})"
    if problem:
        report.findings.append(Finding("bad-frame", problem, record.clip_id, ref.display))


def verify_archive(root: Any, *, config: str = "faces", deep: bool = False, expect_official: Optional[bool] = None,
                   progress: bool = True, train_list: Optional[str] = None, test_list: Optional[str] = None,
                   list_format: Optional[str] = None) -> VerifyReport:
    """Check the archive at ``root``; see ``ferv39k-hf verify --help``.

    ``expect_official=None`` compares with the official counts when the split
    files list at least half of the official clips (a full download), and
    not for samples and subsets. ``train_list`` and ``test_list`` check the
    archive against community split lists instead of the split files (see
    :func:`ferv39k_hf.archive.lists.open_lists`); a DFER-CLIP frame count the
    archive contradicts is a ``frame-count`` finding.
    Example: ``verify_archive("/data/FERV39k", train_list="train.csv", test_list="test.csv").ok``.
    """
    from tqdm.auto import tqdm

    layout: Layout = find_layout(root)
    part = layout.part(config)
    lists = open_lists(train_list, test_list, list_format)
    if lists is None:
        records, problems = read_split_records(layout, on_error="skip")
    else:
        records, problems = lists.read(on_error="skip")
    if expect_official is None:
        expect_official = len(records) + len(problems) >= sum(OFFICIAL_SPLIT_TOTALS.values()) / 2
    report = VerifyReport(str(root), config, deep, expect_official)
    from ferv39k_hf.samplemark import is_sample_archive

    report.synthetic = is_sample_archive(root)
    report.findings += [_problem_finding(p) for p in problems]
    if lists is not None:
        report.split_lists = lists.describe()
        mismatches, _ = check_frame_counts(lists, layout, records)  # not checkable without face crops: nothing to say
        report.findings += [Finding("frame-count", f"the list says {m.listed} frames, the archive holds {m.found} "
                                    "(a build uses the archive's count)", m.clip_id, m.source, m.line)
                            for m in mismatches]
    report.findings += [Finding("unsafe-entry", u.reason, None, f"{u.container}!{u.name}" if u.container else u.name)
                        for u in layout.unsafe]
    check = _check_video if config == "videos" else _check_frames
    for record in tqdm(records, unit="clip", desc=f"verify {config}", disable=None if progress else True):
        check(part, record, deep, report)
        report.clips_checked += 1
    _check_unlisted(part, records, problems, report)
    report.counts = {split: dict(Counter((r.scene, r.emotion) for r in records if r.split == split))
                     for split in SPLITS}
    if expect_official:
        _check_official_counts(report)
    return report


def _check_unlisted(part: Part, records: List[ClipRecord], problems: List[Problem], report: VerifyReport) -> None:
    listed = {r.clip_id for r in records} | {p.clip_id for p in problems if p.clip_id}
    for clip_id in part.clip_ids():
        scene, emotion, _ = (clip_id.split("/") + ["", "", ""])[:3]
        if scene not in SCENES or emotion not in CLASS_WORDS:
            what = f"scene {scene!r}" if scene not in SCENES else f"class {emotion!r}"
            report.findings.append(Finding("unknown-folder", f"{what} is not an official one", clip_id,
                                           part.clip_location(clip_id)))
        elif clip_id not in listed:
            report.findings.append(Finding("unlisted-clip", "clip on disk that no split file lists", clip_id,
                                           part.clip_location(clip_id)))


def _check_official_counts(report: VerifyReport) -> None:
    for split, cells in report.counts.items():
        for (scene, word), expected in official_counts(split).items():
            found = cells.get((scene, word), 0)
            if found != expected:
                report.findings.append(Finding(
                    "count", f"{split} {scene}/{word}: {found} clips listed, official {expected}", None, None))


def plot_counts(report: VerifyReport, path: str) -> None:
    """Heatmap of clips found per scene and class, as a fraction of the official count, per split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    splits = list(report.counts)
    fig, axes = plt.subplots(1, len(splits), figsize=(6 * len(splits), 8), squeeze=False)
    for ax, split in zip(axes[0], splits):
        official = official_counts(split)
        found = np.array([[report.counts[split].get((s, w), 0) for w in CLASS_WORDS] for s in SCENES], float)
        expected = np.array([[official[(s, w)] for w in CLASS_WORDS] for s in SCENES], float)
        image = ax.imshow(found / expected, cmap="viridis", vmin=0, vmax=max(1.0, float((found / expected).max())))
        ax.set_xticks(range(len(CLASS_WORDS)), CLASS_WORDS, rotation=45, ha="right")
        ax.set_yticks(range(len(SCENES)), SCENES)
        for i in range(len(SCENES)):
            for j in range(len(CLASS_WORDS)):
                ax.text(j, i, int(found[i, j]), ha="center", va="center", fontsize=7, color="white")
        ax.set_title(f"{split}: clips found / official")
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.suptitle(f"FERV39k verify: {report.root}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_verify_command(args: Any) -> int:
    if args.plot:  # before the (long) check, so that a refused path fails at once
        check_outside_archive(args.plot, args.root, "--plot")
    report = verify_archive(args.root, config=args.config, deep=args.deep,
                            expect_official={"auto": None, "yes": True, "no": False}[args.official],
                            train_list=args.train_list, test_list=args.test_list, list_format=args.list_format)
    print(json.dumps(report.to_json(), indent=2) if args.json else report.format())
    if args.plot:
        plot_counts(report, args.plot)
    return 0 if report.ok else 1
