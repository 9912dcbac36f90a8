"""Memory the clip pipeline reuses from batch to batch, and the one switch that turns every reuse off.

Memory is reused in three places, each on a signal the package sets itself:

- decode scratch (:class:`ferv39k_hf.clips.video.Scratch`): an array is valid until the
  next request of its name in the same thread;
- whole batches in the process that trains (:class:`BatchPool`, in :mod:`.pool`): free
  again when torch frees the storage of the tensor handed out;
- DataLoader workers' shared memory (:func:`batch_tensor` and :func:`lease`, in :mod:`.shared`):
  a lease that the main process ends when it frees the batch; :mod:`.pickles` tells both
  sides when torch pickles a storage to share it.

The switch: ``FERV39K_HF_REUSE_MEMORY=0`` in the environment (:data:`ENV`, read at each
use by :func:`reuse_enabled`, so set it before the DataLoader starts its workers), or
``VideoClipTransform(..., reuse_memory=False)``, turns all three off: every batch and every
decode then gets memory of its own, as torch and numpy allocate it.
"""

import math
from typing import Tuple

import torch

from ferv39k_hf.clips.batchmem.pool import BatchPool, release_follows_storage
from ferv39k_hf.clips.batchmem.shared import batch_tensor, lease, new_shared_works, shared_tensor
from ferv39k_hf.clips.batchmem.switch import ENV, reuse_enabled

__all__ = ["ENV", "BatchPool", "batch_memory", "batch_tensor", "lease", "new_shared_works", "release_follows_storage",
           "reuse_enabled", "shared_tensor"]


def batch_memory(shape: Tuple[int, ...], dtype: torch.dtype, pool: BatchPool, reuse: bool = True) -> torch.Tensor:
    """Memory for a batch. In a DataLoader worker: shared memory, which is sent to the main process
    without a copy (a buffer the worker reuses once both sides are done with it, else new, as torch's
    default_collate allocates). Elsewhere: an array of ``pool``, reused once torch has freed its last batch.
    ``reuse=False`` gives new memory every time (shared memory in a worker)."""
    if torch.utils.data.get_worker_info() is None:
        return pool.tensor(shape, dtype, reuse)
    reused = batch_tensor(shape, dtype) if reuse else None
    if reused is not None:
        return reused
    if new_shared_works():
        try:
            return shared_tensor(math.prod(shape), dtype).view(shape)
        except (AttributeError, RuntimeError):  # private torch API: an ordinary tensor still works
            pass
    return torch.empty(shape, dtype=dtype)
