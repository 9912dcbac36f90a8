"""Free space: what a build or a load will write, checked against the disk before writing, and named after."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Iterable, List, Optional

from ferv39k_hf.archive.annotations import ClipRecord
from ferv39k_hf.archive.layout import Part
from ferv39k_hf.errors import BuildError, LayoutError

# Parquet or Arrow around the frame bytes came to 0.35% on the synthetic archive; the margin covers that,
# the sampled estimate's error (frames per clip vary from 8 to 47), the card and report, and file-system slack.
MARGIN_FRACTION = 0.08
MARGIN_BYTES = 64 << 20
SAMPLE_CLIPS = 128


def needed_bytes(payload: int) -> int:
    """What writing ``payload`` bytes of frames or videos takes on disk, with a margin."""
    return int(payload * (1 + MARGIN_FRACTION)) + MARGIN_BYTES


def payload_bytes(part: Part, splits: Iterable[List[ClipRecord]]) -> int:
    """About how many bytes the listed clips' files hold: the exact sizes of an evenly spaced sample of
    SAMPLE_CLIPS clips (from the zip directory or a stat; nothing read), scaled to every clip. Sizing every
    frame would cost a quarter of a build of face crops; the sample's error is within the margin."""
    records = [record for split in splits for record in split]
    sample = records[::max(1, len(records) // SAMPLE_CLIPS)]
    total = 0
    for record in sample:
        for ref in part.clip_files(record.clip_id):
            try:
                total += ref.size
            except LayoutError:  # unreadable: the build names it when it gets there
                pass
    return total * len(records) // max(1, len(sample))


def free_bytes(path: "os.PathLike[str] | str") -> int:
    """Free bytes on the file system where ``path`` is or would be created (its nearest existing folder)."""
    place = Path(os.path.abspath(path))
    while not place.exists() and place != place.parent:
        place = place.parent
    return shutil.disk_usage(place).free


def _gb(nbytes: int) -> str:
    return f"{nbytes / 1e9:.2f} GB" if nbytes >= 1e8 else f"{nbytes / 1e6:.1f} MB"


def shortage(what: str, where: "os.PathLike[str] | str", needed: int, free: Optional[int] = None) -> str:
    free = free_bytes(where) if free is None else free
    return (f"{what} needs about {_gb(needed)} where {where} lives and {_gb(free)} is free there; "
            "free some space or choose another place")


def check_free_space(what: str, where: "os.PathLike[str] | str", needed: int) -> None:
    """BuildError, with both figures, when less than ``needed`` bytes are free where ``where`` lives."""
    free = free_bytes(where)
    if free < needed:
        raise BuildError(shortage(what, where, needed, free))


def is_disk_full(err: Optional[BaseException]) -> bool:
    """Whether ``err``, or an error it was raised from (datasets wraps its writer's), says the disk (or the
    user's quota) is full; pyarrow's errors carry only the text."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and (err.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left on device"
                                         in str(err) or "Disk quota exceeded" in str(err)):
            return True
        err = err.__cause__ or err.__context__
    return False
