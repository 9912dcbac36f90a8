"""Tell reused batch memory when torch pickles a storage to share it with another process.

torch registers one reducer for CPU storages with multiprocessing's ForkingPickler
(queues, pipes, process arguments): a tensor is pickled as a typed storage, which
is pickled as its untyped storage, which that reducer moves to (or finds in)
shared memory and sends by handle. :func:`watching` wraps that reducer once per
process, after checking that torch's reducers are registered as this expects,
and from then on tells the subscribers the byte range of every storage pickled
so; a reuse that relies on it turns itself off where :func:`watching` is False.
"""

from __future__ import annotations

import io
import os
from typing import Callable, List, Optional, Tuple

import torch

__all__ = ["watching", "subscribe"]

_subscribers: List[Callable[[int, int], None]] = []
_wrapped: Optional[Tuple[int, Callable]] = None  # (pid, our reducer) once installed


def subscribe(callback: Callable[[int, int], None]) -> None:
    """Call ``callback(start, end)`` with the memory of every storage pickled to be shared."""
    _subscribers.append(callback)


def _torch_reducers_as_expected(extra: dict, reductions) -> bool:
    storage_reducer = extra.get(torch.UntypedStorage)
    return (getattr(storage_reducer, "__wrapped__", storage_reducer) is reductions.reduce_storage
            and extra.get(torch.TypedStorage) is reductions.reduce_typed_storage
            and extra.get(torch.Tensor) is reductions.reduce_tensor)


def _wrap(torch_reducer: Callable) -> Callable:
    def reduce_storage(storage):
        start = storage.data_ptr()
        for callback in _subscribers:
            callback(start, start + storage.nbytes())
        return torch_reducer(storage)

    reduce_storage.__wrapped__ = torch_reducer
    return reduce_storage


def _install():
    from multiprocessing.reduction import ForkingPickler

    from torch.multiprocessing import reductions  # importing it registers torch's reducers

    extra = ForkingPickler._extra_reducers
    if not _torch_reducers_as_expected(extra, reductions):
        return None
    current = extra[torch.UntypedStorage]
    if getattr(current, "__wrapped__", None) is None:
        current = _wrap(current)
        ForkingPickler.register(torch.UntypedStorage, current)
    # what a pickler made now dispatches to
    if ForkingPickler(io.BytesIO()).dispatch_table.get(torch.UntypedStorage) is not current:
        return None
    return current


def watching() -> bool:
    """Whether every storage that ForkingPickler pickles is reported, in this process (installs the
    watch on first use; checks at every call that torch has not registered its reducer again)."""
    global _wrapped
    try:
        from multiprocessing.reduction import ForkingPickler

        if _wrapped is not None and _wrapped[0] == os.getpid():
            if ForkingPickler._extra_reducers.get(torch.UntypedStorage) is _wrapped[1]:
                return True
        installed = _install()
    except (ImportError, AttributeError):
        installed = None
    _wrapped = None if installed is None else (os.getpid(), installed)
    return installed is not None
