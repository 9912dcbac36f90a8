"""Shared-memory batch buffers that DataLoader workers reuse instead of allocating one per batch.

A worker sends its batch to the main process in shared memory. torch gives each
batch new shared memory, and the kernel allocates, zeroes, maps and later frees
every page of it: for float32 clips at 224 that costs a worker more than decoding
them. Here a worker keeps a few buffers and writes a batch into one only when
both sides have said they are done with it:

- the lease: :func:`~ferv39k_hf.clips.collate.collate_clips` returns the batch as a
  dict that, when the worker pickles it to send it, sets the buffer's flag in a
  small shared array to HELD and unpickles in the main process as a plain dict
  whose buffers' flags go back to FREE when torch frees the last tensor over them
  there (a finalizer on the storage, see :mod:`.pool`);
- the worker: the buffer left it in that one send and in no other pickle; torch's
  use count of the storage may veto a reuse (a tensor of the worker still over it),
  never allow one.

Torch pickles every CPU storage through one reducer; this module wraps it in the
processes that rely on it. A main process that pickles a batch it got in a
leased buffer again (a queue or pipe to another process) or forks while it holds
one sets the flag to KEPT: that buffer is never reused and its worker drops it.
A worker drops a buffer that is pickled outside its lease, or that a batch takes
out some other way (another collate function copied the rows, or sent them in
another container). A worker pickles in its queue's feeder thread while its main
thread looks for an idle buffer, so a pool's state changes under one lock and the
use count is read under it too: a batch being pickled stays referenced until its
pickling, which drops a buffer sent a second time, has ended. Every check of
torch's behaviour runs in the process that relies on it (the main process: the
finalizer and the reducer; the worker: ``_new_shared``, the use count, the
reducer), and when one fails the reuse is off there: every batch then gets new
memory, as torch gives it. :func:`~ferv39k_hf.clips.batchmem.reuse_enabled` is the switch.
"""

from __future__ import annotations

import collections
import math
import os
import threading
import weakref
from typing import Any, Dict, List, Optional, Set, Tuple

import torch

from ferv39k_hf.clips.batchmem import pickles
from ferv39k_hf.clips.batchmem.pool import release_follows_storage
from ferv39k_hf.clips.batchmem.switch import reuse_enabled

__all__ = ["SLOTS", "batch_tensor", "shared_tensor", "lease", "claims"]

SLOTS = 6  # buffers a worker keeps at most, for its life (batches in flight: DataLoader prefetch, pinning, the step)

# A buffer's states, one vocabulary for both records of it: its worker's own (HANDED, then PENDING, then
# HELD) and the flag it shares with the main process (HELD, then FREE or KEPT), read by the worker once HELD.
FREE = 0  # the main process is done with it: the worker may write a batch into it again
HELD = 1  # sent: the main process holds the batch in it
KEPT = 2  # the main process passed it on (a pickle, a fork): never reused
HANDED = 3  # in its worker: given to a transform
PENDING = 4  # in its worker: in a batch that collate_clips returned, not sent yet

# main process: how many batches came in each (worker pid, buffer), for tests and the curious
claims: "collections.Counter[Tuple[int, int]]" = collections.Counter()


def _use_count(storage: torch.UntypedStorage) -> Optional[int]:
    counter = getattr(torch._C, "_storage_Use_Count", None)  # private: checked by _worker_checks
    return None if counter is None else int(counter(storage._cdata))


def shared_tensor(numel: int, dtype: torch.dtype) -> torch.Tensor:
    """A new flat tensor of ``numel`` values in shared memory (torch's private API: callers catch
    AttributeError and RuntimeError, and check it first with :func:`new_shared_works`)."""
    storage = torch.empty(0, dtype=dtype)._typed_storage()._new_shared(numel)
    return torch.empty(0, dtype=dtype).set_(storage)


def _worker_checks() -> Tuple[bool, bool]:
    """(``_new_shared`` gives shared memory of the size asked, the use count counts the tensors over a
    storage), on this torch."""
    try:
        tensor = shared_tensor(5, torch.float32)
        shared = tensor.is_shared() and tensor.untyped_storage().nbytes() == 20 and tensor.shape == (5,)
        storage = tensor.untyped_storage()
        alone = _use_count(storage)
        view = torch.empty(0).set_(storage)
        more = _use_count(storage)
        del view
        counts = alone is not None and more == alone + 1 and _use_count(storage) == alone
        return shared, counts
    except (AttributeError, RuntimeError, TypeError):
        return False, False


_worker_checked: Optional[Tuple[int, Tuple[bool, bool]]] = None


def _checked_here() -> Tuple[bool, bool]:
    global _worker_checked
    if _worker_checked is None or _worker_checked[0] != os.getpid():
        _worker_checked = (os.getpid(), _worker_checks())
    return _worker_checked[1]


def new_shared_works() -> bool:
    """Whether :func:`shared_tensor` works here (checked once per process)."""
    return _checked_here()[0]


class _Buffer:
    def __init__(self, numel: int, dtype: torch.dtype):
        self.tensor = shared_tensor(numel, dtype)  # flat, over the whole shared storage
        self.storage = self.tensor.untyped_storage()  # held, so that the idle use count is steady
        self.start = self.storage.data_ptr()
        self.end = self.start + self.storage.nbytes()
        self.idle = _use_count(self.storage)
        self.state = HANDED
        self.sends = 0  # pickles of its storage allowed: one, in the send of its lease


class _Pool:
    """One worker process's buffers, and the flags through which the main process frees them."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.buffers: List[Optional[_Buffer]] = []
        self.flags = torch.zeros(SLOTS, dtype=torch.int32).share_memory_()
        # the worker's thread (take, lease) and its queue's feeder thread (pickling, unsent) both change
        # the buffers: without it, take could see a buffer before a second send drops it and its use count
        # after that send let go of the batch, and hand out memory the main process still reads
        self.lock = threading.RLock()

    def _idle(self, index: int) -> bool:
        buffer = self.buffers[index]
        if buffer is None or buffer.state != HELD:
            return False
        flag = int(self.flags[index])
        if flag == KEPT:  # the main process passed it on: never again
            self.buffers[index] = None
            return False
        # the lease allows it; a tensor of this worker still over it vetoes
        return flag == FREE and _use_count(buffer.storage) == buffer.idle

    def unsent(self, index: int, buffer: _Buffer) -> None:
        """A leased batch died without being sent: its tensors may have left in another container, so
        its buffer is never reused."""
        if os.getpid() != self.pid:  # a process forked from the worker: not its pool
            return
        with self.lock:
            if self.buffers[index] is buffer and buffer.state == PENDING:
                self.buffers[index] = None

    def pickled(self, start: int, end: int) -> None:
        """Storage memory [start, end) is being pickled: a buffer's lease allows one send, any other
        means it left another way, and it is never reused."""
        with self.lock:
            for index, buffer in enumerate(self.buffers):
                if buffer is not None and buffer.start < end and start < buffer.end:
                    if buffer.sends > 0:
                        buffer.sends -= 1
                    else:
                        self.buffers[index] = None

    def take(self, numel: int, dtype: torch.dtype) -> Optional[torch.Tensor]:
        with self.lock:
            return self._take(numel, dtype)

    def _take(self, numel: int, dtype: torch.dtype) -> Optional[torch.Tensor]:
        for index, buffer in enumerate(self.buffers):
            if buffer is not None and buffer.state == HANDED:  # went out another way: let it go
                self.buffers[index] = None
        spare = None
        for index, buffer in enumerate(self.buffers):
            if buffer is None or not self._idle(index):
                spare = index if self.buffers[index] is None and spare is None else spare
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
        self.flags[spare] = FREE
        return buffer.tensor

    def index_of(self, tensor: Any) -> Optional[int]:
        if not torch.is_tensor(tensor):
            return None
        pointer = tensor.untyped_storage().data_ptr()
        for index, buffer in enumerate(self.buffers):
            if buffer is not None and buffer.start == pointer:
                return index
        return None


_pool: Optional[_Pool] = None


def _worker_pool() -> Optional[_Pool]:
    global _pool
    if SLOTS < 1 or not reuse_enabled() or torch.utils.data.get_worker_info() is None:
        return None
    if not (all(_checked_here()) and pickles.watching()):
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
    with pool.lock:
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
        with self._pool.lock:
            for key, index in self._keys.items():
                buffer = self._pool.buffers[index]
                if buffer is not None and buffer.state == PENDING and self._pool.index_of(self.get(key)) == index:
                    self._pool.flags[index] = HELD  # before the main process can have it
                    buffer.state, buffer.sends = HELD, 1
                    leases.append((key, index))
        return _claim, (dict(self), self._pool.flags, leases, self._pool.pid)


# --- the main process --------------------------------------------------------------------------------


class _Lease:
    """A buffer of a worker that a batch of this process lies in."""

    def __init__(self, flags: torch.Tensor, index: int, storage: torch.UntypedStorage):
        self.flags, self.index, self.pid = flags, index, os.getpid()
        self.start = storage.data_ptr()
        self.end = self.start + storage.nbytes()
        self.kept = False
        # keep (pickling, a fork) and release (a finalizer, in any thread) must not interleave: a release
        # that read kept=False before a keep and wrote FREE after it would undo the keep
        self.lock = threading.RLock()  # reentrant: a finalizer may run inside keep's tensor write

    def keep(self) -> None:
        """Another process may read this memory after this one is done with it: never free it."""
        with self.lock:
            self.kept = True
            self.flags[self.index] = KEPT

    def release(self) -> None:  # the storage's finalizer: any thread; also runs in forked children
        _leases.discard(self)
        if os.getpid() != self.pid:  # a forked child: its copy of the lock may have been taken at the fork
            return
        with self.lock:
            if not self.kept:
                self.flags[self.index] = FREE


_leases: Set[_Lease] = set()


def _main_ready() -> bool:
    return reuse_enabled() and release_follows_storage() and pickles.watching()


def _claim(batch: Dict[str, Any], flags: torch.Tensor, leases: List[Tuple[str, int]], pid: int) -> Dict[str, Any]:
    """In the main process: the batch, each leased buffer freed for its worker once the last tensor over
    its memory is gone here (or kept for ever when this process cannot tell)."""
    ready = _main_ready()
    for key, index in leases:
        storage = batch[key].untyped_storage()
        held = _Lease(flags, index, storage)
        if not ready:
            held.keep()
            continue
        _leases.add(held)
        weakref.finalize(storage, held.release)
        claims[(pid, index)] += 1
    return batch


def _pickled(start: int, end: int) -> None:
    """Storage memory [start, end) is being pickled in this process (see :mod:`.pickles`)."""
    pid = os.getpid()
    if _pool is not None and _pool.pid == pid:
        _pool.pickled(start, end)
    for held in tuple(_leases):
        if held.pid == pid and held.start < end and start < held.end:
            held.keep()


def _keep_all_before_fork() -> None:
    pid = os.getpid()
    for held in tuple(_leases):
        if held.pid == pid:
            held.keep()


pickles.subscribe(_pickled)
os.register_at_fork(before=_keep_all_before_fork)
