"""The archive is read-only: a command's output path must not be the archive root, lie inside it or hold it.

Real paths are compared, so symbolic links, bind mounts and case-insensitive file systems are seen through.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

from ferv39k_hf.errors import BuildError

__all__ = ["OutputRefused", "check_outside_archive", "real_path"]


class OutputRefused(BuildError):
    """A path a command would write to is the archive (or holds or lies in it), or is not the build's to replace."""


def real_path(path: "os.PathLike[str] | str") -> Path:
    """``path`` with every symbolic link of its existing part resolved; the part not yet made is appended."""
    # Path.resolve keeps '..' after a link meaning the link's parent, as the kernel does (abspath would not).
    return Path(path).absolute().resolve(strict=False)


def _stat(path: Path) -> Optional[os.stat_result]:
    try:
        return os.stat(path)
    except OSError:
        return None


def _lineage(path: Path) -> List[Path]:
    return [path, *path.parents]


def _relation(target: Path, root: Path) -> Optional[str]:
    """How the real path ``target`` stands to the real archive root: 'is', 'lies inside', 'holds' or None."""
    if target == root:
        return "is"
    if target.is_relative_to(root):
        return "lies inside"
    if root.is_relative_to(target):
        return "holds"
    # The same folders under other names (bind mounts, case-insensitive file systems).
    root_stat, target_stat = _stat(root), _stat(target)
    if root_stat is not None:
        for above in _lineage(target):
            found = _stat(above)
            if found is not None and os.path.samestat(found, root_stat):
                return "is" if above == target else "lies inside"
    if target_stat is not None:
        for above in _lineage(root)[1:]:
            found = _stat(above)
            if found is not None and os.path.samestat(found, target_stat):
                return "holds"
    return None


def check_outside_archive(target: "os.PathLike[str] | str", root: "os.PathLike[str] | str", what: str) -> Path:
    """The real path of ``target``; OutputRefused if it is the archive ``root``, lies inside it or holds it."""
    target_real = real_path(target)
    # find_layout expands '~' in the root; the writers take their target as given.
    root_real = real_path(os.path.expanduser(os.fspath(root)))
    relation = _relation(target_real, root_real)
    if relation is None:
        return target_real
    shown = Path(target).absolute()
    via = "" if shown == target_real else f" (it resolves to {target_real})"
    raise OutputRefused(
        f"{what} {shown}{via} {relation} the archive root {root_real}; ferv39k-hf never writes, moves or deletes "
        f"anything in the archive: choose a {what} outside it that does not hold it either"
    )
