"""The marker at the root of a sample archive: the package made it (synthetic, never ranked), with which settings."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Optional

from ferv39k_hf.errors import BuildError

__all__ = ["SAMPLE_MARKER", "is_sample_archive", "prepare_sample_out", "read_sample_marker", "write_sample_marker"]

# The file at a sample archive's root that says the package made it (and with which settings): verify, build
# and score read it to say "synthetic", and a second `sample` into the same folder reuses it.
SAMPLE_MARKER = ".ferv39k-hf-sample.json"
MARKER_MAKER = "ferv39k-hf sample"


def read_sample_marker(root: os.PathLike[str] | str) -> Optional[Dict[str, object]]:
    """The marker of a sample archive at ``root`` (a dict: ``settings``, ``complete``, ...), or None.

    None for any folder ``ferv39k-hf sample`` did not make, a real archive above all.
    Example: ``read_sample_marker("demo")["settings"]["seed"] == 0`` after ``ferv39k-hf sample demo``.
    """
    path = Path(root) / SAMPLE_MARKER
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("made_by") == MARKER_MAKER else None


def is_sample_archive(root: os.PathLike[str] | str) -> bool:
    """Whether ``root`` is a complete archive written by ``ferv39k-hf sample`` (synthetic data, not FERV39k)."""
    marker = read_sample_marker(root)
    return bool(marker and marker.get("complete"))


def write_sample_marker(root: Path, settings: Dict[str, object], complete: bool) -> None:
    """Mark ``root`` as a sample archive of ``settings`` (``complete`` once every file is written)."""
    marker = {"made_by": MARKER_MAKER, "synthetic": True, "complete": complete, "settings": settings,
              "note": "synthetic drawings in FERV39k's layout, no FERV39k data: results on it are not "
                      "comparable with published ones"}
    temporary = root / (SAMPLE_MARKER + ".tmp")
    temporary.write_text(json.dumps(marker, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(temporary, root / SAMPLE_MARKER)


def prepare_sample_out(out: Path, settings: Dict[str, object]) -> bool:
    """Make ``out`` ready for the sample: True when it already holds this very sample (nothing to write)."""
    if out.exists():
        if not out.is_dir():
            raise BuildError(f"cannot write the sample archive to {out}: it exists and is not a folder; "
                             "choose a new or empty folder")
        # Never mixed into (or written over) files that are not its own, an archive above all.
        if any(out.iterdir()):
            marker = read_sample_marker(out)
            if marker is None:
                raise BuildError(f"refusing to write the sample archive into {out}: the folder is not empty; "
                                 "choose a new or empty folder")
            if not marker.get("complete"):
                raise BuildError(f"{out} holds an unfinished sample archive (an earlier 'ferv39k-hf sample' "
                                 "stopped): delete the folder and run again")
            if marker.get("settings") != settings:
                raise BuildError(f"{out} already holds a sample archive made with other settings "
                                 f"({marker.get('settings')}); delete it or choose another folder")
            return True
    out.mkdir(parents=True, exist_ok=True)
    write_sample_marker(out, settings, complete=False)
    return False
