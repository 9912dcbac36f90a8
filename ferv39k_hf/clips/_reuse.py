"""The public switch for every reuse of memory in the clip pipeline.

Memory is reused in three places, each on a signal the package sets itself:

- decode scratch (:class:`ferv39k_hf.clips.video.Scratch`): an array is valid until the
  next request of its name in the same thread;
- whole batches in the process that trains (:mod:`ferv39k_hf.clips._main_batches`): free
  again when torch frees the storage of the tensor handed out;
- DataLoader workers' shared memory (:mod:`ferv39k_hf.clips._shared_batches`): a lease
  that the main process ends when it frees the batch.

``FERV39K_HF_REUSE_MEMORY=0`` in the environment (read at each use, so set it
before the DataLoader starts its workers), or ``VideoClipTransform(...,
reuse_memory=False)``, turns all three off: every batch and every decode then gets
memory of its own, as torch and numpy allocate it.
"""

from __future__ import annotations

import os

ENV = "FERV39K_HF_REUSE_MEMORY"


def enabled() -> bool:
    """Whether the environment allows reuse (anything but 0, false, no or off)."""
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")
