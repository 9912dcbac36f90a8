"""Batch memory reused outside DataLoader workers, freed again only when torch frees the batch.

A batch of float clips is tens of MB: beyond what malloc recycles, so fresh memory
per batch costs a page fault for every page of it. :class:`BatchPool` hands out
``torch.from_numpy`` over one of its arrays, so every batch gets a storage of its
own, and a finalizer on that storage marks the array free: torch frees a storage
when the last tensor over it goes (views, the rows a DataLoader splits a batch
into, arrays from ``.numpy()`` all hold it). A pinned copy, ``.to(device)`` or a
queue to another process (which moves the storage into shared memory first) leave
the array alone.

That signal rests on torch keeping one Python object per storage, alive as long
as the storage: :func:`release_follows_storage` checks it on the running torch,
in this process, and without it every batch gets new memory.
"""

from __future__ import annotations

import math
import os
import threading
import weakref
from typing import List, Optional, Tuple

import numpy as np
import torch

from ferv39k_hf.clips.batchmem.switch import reuse_enabled

__all__ = ["BatchPool", "release_follows_storage"]

KEEP = 3  # arrays a pool keeps: the batch in use, one prefetched (accelerate's DataLoaderShard), one spare

_checked: Optional[Tuple[int, bool]] = None  # (pid, result): checked once per process


def _storage_outlives_its_views() -> bool:
    fired: List[bool] = []
    tensor = torch.from_numpy(np.zeros(8, dtype=np.float32))
    storage = tensor.untyped_storage()
    weakref.finalize(storage, fired.append, True)
    holders = [  # the ways a batch's memory stays in use: views, collate_clips' joined rows, numpy arrays
        tensor[1:],
        tensor.view(2, 4).t(),
        torch.empty(0).set_(storage, 0, (4,), (1,)),
        tensor[2:].numpy(),
    ]
    same = all(holder.untyped_storage() is storage for holder in holders[:3])
    del tensor, storage
    while holders:
        if fired:
            return False
        holders.pop()
    return same and fired == [True]


def release_follows_storage() -> bool:
    """Whether a finalizer on a tensor's storage fires exactly when the last tensor or array over that
    memory is gone (checked once per process, on this torch)."""
    global _checked
    if _checked is None or _checked[0] != os.getpid():
        try:
            result = _storage_outlives_its_views()
        except (AttributeError, RuntimeError, TypeError):
            result = False
        _checked = (os.getpid(), result)
    return _checked[1]


class _Slot:
    def __init__(self, nbytes: int):
        self.array = np.empty(nbytes, dtype=np.uint8)
        self.free = True

    def release(self) -> None:  # a finalizer: may run in any thread
        self.free = True


class BatchPool:
    """Arrays for whole batches, each handed out as a new tensor and free again once torch frees it."""

    def __init__(self, keep: int = KEEP):
        self.keep = keep
        self._slots: List[_Slot] = []
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def __getstate__(self):
        return {"keep": self.keep}  # memory stays in its process

    def __setstate__(self, state) -> None:
        self.__init__(state["keep"])

    def tensor(self, shape: Tuple[int, ...], dtype: torch.dtype, reuse: bool = True) -> torch.Tensor:
        """A C-contiguous tensor of ``shape``: over a free array of the pool when reuse is allowed and
        checked, else new memory."""
        if not (reuse and reuse_enabled() and release_follows_storage()):
            return torch.empty(shape, dtype=dtype)
        nbytes = math.prod(shape) * torch.empty(0, dtype=dtype).element_size()
        with self._lock:
            if self._pid != os.getpid():  # a forked child: the parent's batches are not this process's
                self._slots, self._pid = [], os.getpid()
            slot = self._take(nbytes)
            if slot is None:
                return torch.empty(shape, dtype=dtype)
            slot.free = False
        tensor = torch.from_numpy(slot.array[:nbytes]).view(dtype).view(shape)
        weakref.finalize(tensor.untyped_storage(), slot.release)
        return tensor

    def _take(self, nbytes: int) -> Optional[_Slot]:
        free = [slot for slot in self._slots if slot.free]
        for slot in free:
            if slot.array.nbytes >= nbytes:
                return slot
        if len(self._slots) < self.keep:
            self._slots.append(_Slot(nbytes))
            return self._slots[-1]
        if free:  # free but too small: replace it
            self._slots[self._slots.index(free[0])] = slot = _Slot(nbytes)
            return slot
        return None  # all in use: new memory, not kept
