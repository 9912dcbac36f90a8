"""Shared-memory batch buffers that DataLoader workers reuse instead of allocating one per batch.

A worker sends its batch to the main process in shared memory. torch gives each
batch new shared memory, and the kernel allocates, zeroes, maps and later frees
every page of it: for float32 clips at 224 that costs a worker more than decoding
them. Here a worker keeps a few buffers and writes a batch into one that is free
again, which needs to know two things:

- the worker no longer uses it: no tensor of the worker's views its storage any
  more (torch's use count of the storage is back to the pool's own references);
- the main process no longer uses it: :func:`~ferv39k_hf.transforms.collate_clips`
  returns the batch as a dict that, when the worker sends it, sets the buffer's
  flag in a small shared array and unpickles in the main process as a plain dict
  whose buffers clear their flags when the last tensor over them is freed there.

A buffer handed to a transform whose batch goes out some other way (another collate
function copied the rows, or sent them on in another container) is dropped from the
pool, so its memory is freed as any other batch's and never reused. Every path is
thus either the reuse above or what torch does without this module.
``SLOTS = 0`` turns the reuse off.
"""

from __future__ import annotations

import collections
import math
import os
import weakref
from typing import Any, Dict, List, Optional, Tuple

import torch

__all__ = ["SLOTS", "batch_tensor", "shared_tensor", "lease", "claims"]

SLOTS = 6  # buffers a worker keeps at most, for its life (batches in flight: DataLoader prefetch, pinning, the step)

# a buffer's state in its worker: given to a transform; in a batch that collate_clips returned and that
# has not been sent yet; sent to the main process
HANDED, PENDING, SENT = "handed", "pending", "sent"

# main process: how many batches came in each (worker pid, buffer), for tests and the curious
claims: "collections.Counter[Tuple[int, int]]" = collections.Counter()


def _use_count(storage: torch.UntypedStorage) -> Optional[int]:
    counter = getattr(torch._C, "_storage_Use_Count", None)  # private: without it nothing is reused
    return None if counter is None else int(counter(storage._cdata))


def _release_follows_storage() -> bool:
    """Whether a finalizer on a tensor's storage waits for the last tensor over that memory (torch keeps
    one Python object per storage); without that the main process could not tell when it is done."""
    fired: List[bool] = []
    tensor = torch.empty(4)
    view = tensor[1:]
    weakref.finalize(tensor.untyped_storage(), fired.append, True)
    del tensor
    waited = not fired and view.untyped_storage() is view.untyped_storage()
    del view
    return waited and bool(fired)


def shared_tensor(numel: int, dtype: torch.dtype) -> torch.Tensor:
    """A new flat tensor of ``numel`` values in shared memory (torch's private API: callers catch
    AttributeError and RuntimeError)."""
    storage = torch.empty(0, dtype=dtype)._typed_storage()._new_shared(numel)
    return torch.empty(0, dtype=dtype).set_(storage)


class _Buffer:
    def __init__(self, numel: int, dtype: torch.dtype):
        self.tensor = shared_tensor(numel, dtype)  # flat, over the whole shared storage
        self.storage = self.tensor.untyped_storage()  # held, so that the idle use count is steady
        self.idle = _use_count(self.storage)
        self.state = HANDED


class _Pool:
    """One worker process's buffers, and the flags through which the main process frees them."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.buffers: List[Optional[_Buffer]] = []
        self.flags = torch.zeros(SLOTS, dtype=torch.int32).share_memory_()

    def _idle(self, index: int) -> bool:
        buffer = self.buffers[index]
        if buffer is None or buffer.state != SENT or buffer.idle is None:
            return False
        if int(self.flags[index]) != 0:  # the main process still holds it
            return False
        return _use_count(buffer.storage) == buffer.idle

    def unsent(self, index: int, buffer: _Buffer) -> None:
        """A leased batch died without being sent: its tensors may have left in another container, so
        its buffer is never reused."""
        if self.buffers[index] is buffer and buffer.state == PENDING:
            self.buffers[index] = None

    def take(self, numel: int, dtype: torch.dtype) -> Optional[torch.Tensor]:
        for index, buffer in enumerate(self.buffers):
            if buffer is not None and buffer.state == HANDED:  # went out another way: let it go
                self.buffers[index] = None
        spare = None
        for index, buffer in enumerate(self.buffers):
            if buffer is None or not self._idle(index):
                spare = index if buffer is None and spare is None else spare
                continue
            if buffer.tensor.dtype == dtype and buffer.tensor.numel() == numel:
                buffer.state = HANDED
                return buffer.tensor
            spare = index if spare is None else spare  # idle, another size: may be replaced
        if spare is None:
            if len(self.buffers) >= SLOTS:
                return None  # all in flight: a plain batch
            self.buffers.append(None)
            spare = len(self.buffers) - 1
        self.buffers[spare] = None  # let the replaced one go before making the new one
        self.buffers[spare] = buffer = _Buffer(numel, dtype)
        self.flags[spare] = 0
        return buffer.tensor

    def index_of(self, tensor: Any) -> Optional[int]:
        if not torch.is_tensor(tensor):
            return None
        pointer = tensor.untyped_storage().data_ptr()
        for index, buffer in enumerate(self.buffers):
            if buffer is not None and buffer.storage.data_ptr() == pointer:
                return index
        return None


_pool: Optional[_Pool] = None
_usable: Optional[bool] = None


def _worker_pool() -> Optional[_Pool]:
    global _pool, _usable
    if SLOTS < 1 or torch.utils.data.get_worker_info() is None:
        return None
    if _usable is None:
        _usable = _release_follows_storage() and _use_count(torch.empty(1).untyped_storage()) is not None
    if not _usable:
        return None
    if _pool is None or _pool.pid != os.getpid():  # a fork inherits its parent's: start afresh
        _pool = _Pool()
    return _pool


def batch_tensor(shape: Tuple[int, ...], dtype: torch.dtype) -> Optional[torch.Tensor]:
    """In a DataLoader worker, a tensor of ``shape`` in a reusable shared buffer; None elsewhere, or
    when every buffer is in flight or torch lacks what this needs."""
    try:
        pool = _worker_pool()
        flat = None if pool is None else pool.take(math.prod(shape), dtype)
    except (AttributeError, RuntimeError):  # private torch API moved
        return None
    return None if flat is None else flat.view(shape)


def lease(batch: Dict[str, Any]) -> Dict[str, Any]:
    """``batch``, as a dict that frees its buffers in the main process once done with there, if a tensor
    of it fills a buffer of this worker's pool; else ``batch`` itself."""
    pool = _pool if _pool is not None and _pool.pid == os.getpid() else None
    if pool is None or torch.utils.data.get_worker_info() is None:
        return batch
    keys = {}
    for key, value in batch.items():
        index = pool.index_of(value)
        if index is not None and pool.buffers[index].state == HANDED:
            pool.buffers[index].state = PENDING
            keys[key] = index
    return _LeasedBatch(batch, pool, keys) if keys else batch


class _LeasedBatch(dict):
    """A batch dict in a worker; sent to the main process, it marks its buffers as held there and
    unpickles as a plain dict."""

    def __init__(self, batch: Dict[str, Any], pool: _Pool, keys: Dict[str, int]):
        super().__init__(batch)
        self._pool, self._keys = pool, keys
        for index in keys.values():
            weakref.finalize(self, pool.unsent, index, pool.buffers[index])

    def __reduce__(self):
        leases = []
        for key, index in self._keys.items():
            buffer = self._pool.buffers[index]
            if buffer is not None and buffer.state == PENDING and self._pool.index_of(self.get(key)) == index:
                self._pool.flags[index] = 1  # before the main process can have it
                buffer.state = SENT
                leases.append((key, index))
        return _claim, (dict(self), self._pool.flags, leases, self._pool.pid)


def _claim(batch: Dict[str, Any], flags: torch.Tensor, leases: List[Tuple[str, int]], pid: int) -> Dict[str, Any]:
    """In the main process: the batch, each leased buffer freed for its worker once the last tensor over
    its memory is gone here."""
    for key, index in leases:
        weakref.finalize(batch[key].untyped_storage(), _release, flags, index)
        claims[(pid, index)] += 1
    return batch


def _release(flags: torch.Tensor, index: int) -> None:
    flags[index] = 0
