"""``ferv39k-hf verify`` for DFEW and MAFW: say which dataset was found, check every listed clip, name each problem."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from ferv39k_hf.archive.clipfiles import ClipDamaged, ClipReader
from ferv39k_hf.archive.dfer_folds import FoldPlan, plan_folds
from ferv39k_hf.archive.dfer_layout import DferLayout, detect_dataset, find_dfer_layout
from ferv39k_hf.dfer_taxonomy import FOLDS, facts


@dataclass
class DferVerifyReport:
    dataset: str
    root: str
    config: str
    sources: Dict[str, int]  # frame folder (or videos) -> clips found there
    lists: Dict[str, str]  # list file -> encoding it was read with
    folds: Dict[int, List[int]]  # fold -> [train clips, test clips]
    clips_checked: int = 0
    frames_checked: int = 0
    unlisted: List[str] = field(default_factory=list)
    problems: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def format(self) -> str:
        info = facts(self.dataset)
        lines = [f"found a {info.title} archive at {self.root} (config {self.config})"]
        lines += [f"  {source}: {n} clip folder(s)" for source, n in sorted(self.sources.items())]
        lines.append(f"  list and label files: {len(self.lists)}"
                     + "".join(f"; {f} read as {e.upper()}" for f, e in self.lists.items() if e != "utf-8"))
        lines += [f"  fold {k}: {tr} train / {te} test" for k, (tr, te) in sorted(self.folds.items())]
        train1, test1 = self.folds.get(1, [0, 0])
        if train1 + test1 >= info.benchmark_clips // 2 and (train1, test1) != info.fold1_sizes:
            self.problems.append(f"fold 1 has {train1} train / {test1} test clips; the official sizes are "
                                 f"{info.fold1_sizes[0]} / {info.fold1_sizes[1]}")
        lines.append(f"  checked {self.clips_checked} clip(s), {self.frames_checked} frame(s)")
        lines.append(f"  unlisted: {len(self.unlisted)} clip(s) in the frame folders that no fold list names "
                     "(not an error: for DFEW, the clips that are not single-labelled)")
        lines += [f"  note: {n}" for n in self.notes[:10]]
        lines.append(f"{len(self.problems)} problem(s)" if self.problems else "OK: no problem found")
        lines += [f"  {p}" for p in self.problems[:50]]
        if len(self.problems) > 50:
            lines.append(f"  ... and {len(self.problems) - 50} more (--json lists all)")
        return "\n".join(lines)

    def to_json(self) -> Dict[str, Any]:
        return {"ok": self.ok, "dataset": self.dataset, "root": self.root, "config": self.config,
                "sources": self.sources, "lists": self.lists, "folds": {str(k): v for k, v in self.folds.items()},
                "clips_checked": self.clips_checked, "frames_checked": self.frames_checked,
                "unlisted": self.unlisted, "problems": self.problems, "notes": self.notes}


def verify_dfer(root: str, dataset: str, config: Optional[str] = None, deep: bool = False) -> DferVerifyReport:
    """Check a DFEW or MAFW archive: every list line, every listed clip's files (``deep``: full decodes)."""
    layout = find_dfer_layout(root, dataset)
    config = config or facts(dataset).configs[0]
    plan = plan_folds(layout, config, on_error="skip")
    report = _report(layout, plan, config)
    reader = ClipReader(layout, kind=config, deep=deep)
    for record in plan.records:
        try:
            fields = reader.read(record)
        except ClipDamaged as err:
            report.problems.append(f"{record.where}: clip {record.clip_id}: {err}")
            continue
        report.clips_checked += 1
        report.frames_checked += fields["num_frames"]
    return report


def _report(layout: DferLayout, plan: FoldPlan, config: str) -> DferVerifyReport:
    folds = {k: [sum(k in r.train_folds for r in plan.records), sum(r.test_fold == k for r in plan.records)]
             for k in FOLDS}
    report = DferVerifyReport(layout.dataset, str(layout.root), config,
                              {s: len(p.clips) for s, p in layout.parts.items()}, dict(plan.encodings), folds,
                              unlisted=list(plan.unlisted), notes=list(plan.notes))
    report.problems += [str(p) for p in plan.problems] + [f"unsafe: {u}" for u in layout.unsafe]
    return report


def run_dfer_verify(args: Any) -> Optional[int]:
    """``ferv39k-hf verify`` on a DFEW or MAFW archive; None when the archive is FERV39k's."""
    dataset = args.dataset or detect_dataset(args.root)
    if dataset in (None, "ferv39k"):
        return None
    report = verify_dfer(args.root, dataset, args.config, args.deep)
    print(json.dumps(report.to_json(), indent=2, ensure_ascii=False) if args.json else report.format())
    return 0 if report.ok else 1
