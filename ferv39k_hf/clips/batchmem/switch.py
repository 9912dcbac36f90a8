"""The switch for every reuse of memory in the clip pipeline (see :mod:`ferv39k_hf.clips.batchmem`)."""

from __future__ import annotations

import os

ENV = "FERV39K_HF_REUSE_MEMORY"


def reuse_enabled() -> bool:
    """Whether the environment allows reuse (anything but 0, false, no or off in ``FERV39K_HF_REUSE_MEMORY``)."""
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")
