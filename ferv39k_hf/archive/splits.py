"""The split plan: which clip goes to which split, and which lines were refused.

Reads the official split files through a :class:`~ferv39k_hf.archive.layout.Layout`,
keeps the first listing of each clip, and optionally carves a seeded,
scene- and class-stratified validation split out of train.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ferv39k_hf.archive.annotations import AnnotationError, ClipRecord, Problem, find_duplicates, parse_split_text
from ferv39k_hf.archive.layout import Layout
from ferv39k_hf.taxonomy import SPLITS


@dataclass
class SplitPlan:
    """Records per output split, and every split-file line that is not one."""

    records: Dict[str, List[ClipRecord]]
    problems: List[Problem] = field(default_factory=list)

    @property
    def num_lines(self) -> int:
        return sum(len(r) for r in self.records.values()) + len(self.problems)


def read_split_records(layout: Layout, on_error: str = "raise") -> Tuple[List[ClipRecord], List[Problem]]:
    """Every line of train_All.csv then test_All.csv, as records and problems.

    With ``on_error="raise"`` the first bad line raises an AnnotationError
    naming the file and line.
    """
    records: List[ClipRecord] = []
    problems: List[Problem] = []
    for split in SPLITS:
        source = layout.split_files[split].display
        recs, probs = parse_split_text(layout.read_split(split), split=split, source=source)
        records.extend(recs)
        problems.extend(probs)
    kept, duplicate_problems = find_duplicates(records)
    problems.extend(duplicate_problems)
    problems.sort(key=lambda p: (SPLITS.index(p.split) if p.split in SPLITS else 9, p.line or 0))
    if problems and on_error == "raise":
        raise AnnotationError(problems[0])
    return kept, problems


def carve_validation(records: List[ClipRecord], fraction: float,
                     seed: int) -> Tuple[List[ClipRecord], List[ClipRecord]]:
    """Split train records into (train, validation), stratified by (scene, class).

    Each cell gives round(fraction * n) clips, chosen by a seeded shuffle of
    the cell's clip ids; a cell keeps at least one clip in train. The result
    depends only on the clip ids, the fraction and the seed.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation fraction must be in [0, 1), got {fraction}")
    if fraction == 0.0:
        return list(records), []
    cells: Dict[Tuple[str, str], List[ClipRecord]] = defaultdict(list)
    for record in records:
        cells[(record.scene, record.emotion)].append(record)
    rng = np.random.default_rng(seed)
    chosen = set()
    for key in sorted(cells):
        cell = sorted(cells[key], key=lambda r: r.clip_id)
        take = min(int(round(fraction * len(cell))), len(cell) - 1)
        for index in rng.permutation(len(cell))[:take]:
            chosen.add(cell[index].clip_id)
    train = [r for r in records if r.clip_id not in chosen]
    validation = [r for r in records if r.clip_id in chosen]
    return train, validation


def plan_splits(layout: Layout, *, validation_fraction: float = 0.0, seed: int = 0, on_error: str = "raise",
                lists: Optional[Any] = None) -> SplitPlan:
    """The records of each output split: train, [validation,] test.

    ``lists`` (a :class:`~ferv39k_hf.archive.lists.SplitLists`) replaces the
    official split files with community split lists.
    """
    if lists is not None:
        records, problems = lists.read(on_error=on_error)
    else:
        records, problems = read_split_records(layout, on_error=on_error)
    by_split: Dict[str, List[ClipRecord]] = {split: [] for split in SPLITS}
    for record in records:
        by_split[record.split].append(record)
    train, validation = carve_validation(by_split["train"], validation_fraction, seed)
    planned = {"train": train}
    if validation_fraction > 0:
        planned["validation"] = validation
    planned["test"] = by_split["test"]
    return SplitPlan(planned, problems)
