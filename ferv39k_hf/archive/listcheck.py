"""What a build records of its split lists: frame counts checked against the archive, card and report entries."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from ferv39k_hf.archive.annotations import ClipRecord
from ferv39k_hf.archive.lists import SplitLists

# -- frame counts a DFER-CLIP list claims -----------------------------------------------

@dataclass(frozen=True)
class FrameCountMismatch:
    """A DFER-CLIP line whose frame count is not the number of frames the archive holds for the clip."""

    clip_id: str
    split: str
    source: str
    line: int
    listed: int
    found: int

    def as_dict(self) -> Dict[str, object]:
        return {"clip_id": self.clip_id, "split": self.split, "source": self.source, "line": self.line,
                "listed": self.listed, "found": self.found}

    def __str__(self) -> str:
        return (f"{self.source}:{self.line}: clip {self.clip_id}: the list says {self.listed} frames, the archive "
                f"holds {self.found} (the archive's count is used)")


def check_frame_counts(lists: Optional[SplitLists], layout,
                       records: Sequence[ClipRecord]) -> Tuple[List[FrameCountMismatch], Optional[str]]:
    """Compare DFER-CLIP frame counts with the face-crop frames the archive holds for each listed record.

    Returns the mismatches and a note when they could not be checked (no
    face-crop part). Clips absent from the archive are left to the build's
    own missing-clip handling.
    """
    if lists is None:
        return [], None
    claimed = lists.claimed_frames()
    if not claimed:
        return [], None
    part = layout.parts.get("faces")
    if part is None:
        return [], "the lists' frame counts were not checked: the archive has no face-crop part (2_ClipsforFaceCrop)"
    mismatches = []
    for record in records:
        if record.clip_id not in claimed:
            continue
        listed, split, source, line = claimed[record.clip_id]
        found = len(part.frames(record.clip_id))
        if found and found != listed:
            mismatches.append(FrameCountMismatch(record.clip_id, split, source, line, listed, found))
    return mismatches, None


@dataclass(frozen=True)
class ListsUsed:
    """What a build records of the lists it read: the files, the frame counts they got wrong, a note."""

    lists: Optional[SplitLists] = None
    mismatches: Tuple[FrameCountMismatch, ...] = ()
    note: Optional[str] = None

    def __init__(self, lists: Optional[SplitLists] = None, mismatches: Sequence[FrameCountMismatch] = (),
                 note: Optional[str] = None):
        object.__setattr__(self, "lists", lists)
        object.__setattr__(self, "mismatches", tuple(mismatches))
        object.__setattr__(self, "note", note)

    def describe(self) -> Optional[List[Dict[str, str]]]:
        """The card's record of the lists (file name, SHA-256, format per split), or None for the official files."""
        return None if self.lists is None else self.lists.describe()

    def report(self) -> Dict[str, object]:
        """The build_report.json keys: ``split_lists`` and ``frame_count_mismatches`` (empty without lists)."""
        if self.lists is None:
            return {}
        report: Dict[str, object] = {"split_lists": self.describe(),
                                     "frame_count_mismatches": [m.as_dict() for m in self.mismatches]}
        if self.note:
            report["frame_count_note"] = self.note
        return report

    def command_words(self) -> str:
        """The build command's list options as the card shows them (file names only), with a leading space."""
        if self.lists is None:
            return ""
        train, test = self.lists.files
        words = ["--train-list", os.path.basename(train.path), "--test-list", os.path.basename(test.path)]
        if not (train.detected and test.detected):
            words += ["--list-format", train.fmt]
        return " " + " ".join(shlex.quote(w) for w in words)
