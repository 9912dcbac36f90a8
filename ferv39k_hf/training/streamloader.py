"""The torch side of streaming a built folder: batches of streamed rows, equal epochs on every rank, lockstep.

:func:`ferv39k_hf.dataset.streaming.stream` gives a split (this rank's share) as an
IterableDataset of rows with undecoded frames. Here :class:`StreamCollator` hands whole
batches of those rows to a :class:`~ferv39k_hf.VideoClipTransform`, which decodes only the
sampled frames inside the DataLoader worker; :class:`StreamLoader` is a DataLoader whose
``set_epoch`` reseeds the stream and whose epochs have the same number of batches on every
rank (:func:`steps_per_epoch`); :func:`lockstep` and :func:`gather_across_ranks` let ranks
holding different numbers of batches evaluate a sharded model together:

    train = stream("s3://bucket/ferv39k", "train", shuffle_buffer=1024, seed=0)
    loader = StreamLoader(train, batch_size=8, num_workers=2,
                          collate_fn=StreamCollator(VideoClipTransform(train=True)))
    for epoch in range(3):
        loader.set_epoch(epoch)
        for batch in loader: ...
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, TypeVar

import torch
import torch.distributed as dist
import torch.utils.data

from ferv39k_hf.clips import batchmem
from ferv39k_hf.dataset.streaming import StreamError

logger = logging.getLogger(__name__)

__all__ = ["steps_per_epoch", "StreamCollator", "StreamLoader", "gather_across_ranks", "lockstep"]

Batch = TypeVar("Batch")


def steps_per_epoch(num_rows: int, world_size: int, batch_size: int, accumulation: int = 1) -> int:
    """Optimizer steps in one pass over ``num_rows`` split between ``world_size`` ranks.

    Counts ``num_rows // world_size`` rows in full batches of ``batch_size * accumulation``, at
    least 1. A rank's share can be a few rows smaller (whole shards of unequal sizes) and gives
    more batches than its rows fill (each DataLoader worker ends on a partial batch), so give
    ``steps * accumulation`` to :class:`StreamLoader` as ``batches_per_epoch``: every rank then
    runs exactly that many batches per epoch. Example: ``steps_per_epoch(31088, 8, 16)`` -> 242.
    """
    per_rank = num_rows // max(1, world_size)
    return max(1, per_rank // max(1, batch_size * accumulation))


class StreamCollator:
    """DataLoader ``collate_fn``: a list of streamed rows -> one transformed batch.

    ``transform`` (a :class:`~ferv39k_hf.VideoClipTransform`) gets the rows as one batch of
    columns, so it decodes only the sampled frames and writes the clips straight into the
    batch tensor (in a DataLoader worker, a shared-memory buffer it may reuse). ``keep`` names
    columns passed through as lists (e.g. ``("clip_id", "scene")`` for per-clip scoring).
    Returns ``{"pixel_values": (B*V, T, 3, S, S), "labels": (B*V,), ...}`` as the transform does.
    """

    def __init__(self, transform: Any, keep: Sequence[str] = ()):
        self.transform, self.keep = transform, tuple(keep)

    def __call__(self, rows: List[Dict[str, Any]]) -> Dict[str, Any]:
        """One batch of ``rows`` (dicts as the stream yields them) through the transform, ``keep`` columns added."""
        columns = {key: [row[key] for row in rows] for key in rows[0]}
        batch = dict(self.transform(columns))
        for key in self.keep:
            batch[key] = columns[key]
        return batchmem.lease(batch)


class StreamLoader(torch.utils.data.DataLoader):
    """A torch DataLoader over a streamed split whose ``set_epoch`` reseeds the split's shuffle.

    Trainer calls ``set_epoch`` on its training DataLoader each epoch. Workers are not kept
    between epochs (a persistent worker would keep the old epoch's seed).

    ``batches_per_epoch`` (training under several processes: ``steps_per_epoch(...) *
    accumulation``) makes every pass exactly that many batches, its ``len()``: the pass stops
    there, so every rank runs the same batches per epoch and Trainer's epochs are the same
    on all of them (its epoch-end logging and saving are collective). A share that gives fewer
    batches (unequal shards, or one partial batch per worker) is read again from its start to
    make up the rest, with a warning; in a single process, where the share is the whole split
    and fills every pass, a short pass means missing rows and is a StreamError. :meth:`resume_at`
    starts an epoch's pass further on.
    """

    def __init__(self, dataset: Any, batches_per_epoch: Optional[int] = None, **kwargs: Any):
        kwargs["persistent_workers"] = False
        if not kwargs.get("num_workers"):
            kwargs.pop("prefetch_factor", None)
        super().__init__(dataset, **kwargs)
        if batches_per_epoch is not None and int(batches_per_epoch) < 1:
            raise ValueError(f"batches_per_epoch must be at least 1, got {batches_per_epoch}")
        self.batches_per_epoch = None if batches_per_epoch is None else int(batches_per_epoch)
        self.epoch = 0
        self._skip: Dict[int, int] = {}

    def __len__(self) -> int:
        if self.batches_per_epoch is None:
            return super().__len__()  # a stream's TypeError: Trainer then relies on max_steps
        return self.batches_per_epoch

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle the stream for ``epoch`` (``IterableDataset.set_epoch``)."""
        self.epoch = int(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def resume_at(self, epoch: int, batches: int) -> None:
        """Make the next pass of ``epoch`` leave out its first ``batches`` batches (read, not yielded).

        For resuming a run at the batch it stopped at: the batches are the same ones only with the
        same seed, shuffle buffer, world size, batch size and number of workers.
        """
        if batches < 0 or (self.batches_per_epoch is not None and batches >= self.batches_per_epoch):
            raise ValueError(f"cannot resume epoch {epoch} after {batches} batches: a pass has "
                             f"{self.batches_per_epoch} batches")
        self._skip[int(epoch)] = int(batches)

    def __iter__(self):
        epoch, skip, target = self.epoch, self._skip.pop(self.epoch, 0), self.batches_per_epoch
        if target is None and not skip:
            return super().__iter__()
        return self._batches(epoch, skip, target)

    def _batches(self, epoch: int, skip: int, target: Optional[int]):
        index = passes = 0
        while True:
            passes, start = passes + 1, index
            for batch in super().__iter__():
                index += 1
                if index > skip:
                    yield batch
                if target is not None and index >= target:
                    return
            if target is None:
                return
            if index == start:
                raise StreamError(f"epoch {epoch}: this process's share of the stream gave no batch "
                                  f"({index} of the {target} a pass must have)")
            if passes == 1 and not _several_processes():
                raise StreamError(f"epoch {epoch}: the stream gave {index} batches, fewer than the {target} an "
                                  "epoch has; one process reads the whole split, so rows its card counts are "
                                  "missing")
            if passes == 1:
                logger.warning("epoch %d: this process's share of the stream gave %d batches, fewer than the %d "
                               "every process runs per epoch: it is read again from its start for the other %d",
                               epoch, index, target, target - index)


def _several_processes() -> bool:
    """Whether this process is one of several sharing the data (torch.distributed, or torchrun's WORLD_SIZE)."""
    import os

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def gather_across_ranks(items: List[Any]) -> List[Any]:
    """Every rank's ``items`` concatenated in rank order, on every rank (``all_gather_object``).

    Without an initialised ``torch.distributed`` process group this returns ``items``.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return list(items)
    gathered: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, list(items))
    return [item for part in gathered for item in part]


def _flag_device(dist: Any) -> Any:
    """Where a tensor for a collective of the default process group lives: CPU for gloo (and mpi), the
    current CUDA device for nccl, the current accelerator for other backends (xccl, hccl, ...)."""
    backend = str(dist.get_backend()).lower()  # "gloo", "nccl", or a mix such as "cpu:gloo,cuda:nccl"
    if "gloo" in backend or "mpi" in backend:
        return torch.device("cpu")
    if "nccl" in backend:
        return torch.device("cuda", torch.cuda.current_device())
    accelerator = getattr(torch, "accelerator", None)  # torch >= 2.6
    if accelerator is not None and accelerator.is_available():
        return torch.device(accelerator.current_accelerator().type)  # no index: that type's current device
    return torch.device("cpu")


def lockstep(batches: Iterable[Batch], make_filler: Callable[[], Batch]) -> Iterator[Tuple[Batch, bool]]:
    """``(batch, real)`` pairs such that every rank takes the same number of steps over its own ``batches``.

    Ranks that each stream their own share (:func:`~ferv39k_hf.dataset.streaming.stream`) may hold
    different numbers of batches, even none. A model whose forward runs collectives (FSDP, DeepSpeed ZeRO-3
    all-gather their parameters) hangs when one rank stops calling it while another goes on. With an initialised
    ``torch.distributed`` of world size > 1, the ranks agree before every step whether any of them
    still has a batch (one ``all_reduce`` of a one-element tensor: on the CPU for gloo, on the current
    CUDA device for nccl). A rank that has run out yields a filler with ``real=False`` (its last real
    batch, or ``make_filler()`` if it had none; called at most once), until no rank has a batch
    left; run the model on it and discard its outputs. Without ``torch.distributed`` or with one
    process, ``batches`` come as they are, all real, and nothing is exchanged.

    Every rank must call this, and take every pair, for the same loop. A filler may be the same
    object as the last real batch: do not change a batch in place while scoring it.

    Example::

        for batch, real in lockstep(loader, lambda: {"pixel_values": torch.zeros(1, 16, 3, 224, 224),
                                                     "labels": torch.zeros(1, dtype=torch.int64)}):
            outputs = model(**batch)
            if real:
                record(outputs)
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        for batch in batches:
            yield batch, True
        return
    device, end = _flag_device(dist), object()
    remaining: Optional[Iterator[Batch]] = iter(batches)
    last: Any = end
    while True:
        batch = end if remaining is None else next(remaining, end)
        if batch is end:
            remaining = None  # not asked again once it has run out
        flag = torch.tensor([0 if batch is end else 1], dtype=torch.int32, device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)  # does any rank still have a batch?
        if int(flag.item()) == 0:
            return
        if batch is not end:
            last = batch
            yield batch, True
        else:
            if last is end:
                last = make_filler()
            yield last, False
