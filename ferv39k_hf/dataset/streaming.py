"""Stream a built FERV39k folder (local or in object storage) to training and evaluation, with no Arrow cache.

A folder made by ``ferv39k-hf build`` is Parquet shards plus a dataset card
whose YAML lists each split's files (``configs``) and row counts
(``dataset_info``). :func:`stream` reads one split as a ``datasets``
``IterableDataset`` straight from those shards, from a local path or any
fsspec URL (``s3://bucket/ferv39k``, ``gs://...``, ``hf://datasets/ORG/NAME``),
optionally shuffled through a buffer (reseeded per epoch by ``set_epoch``) and
split between the processes of torchrun / accelerate with
``datasets.distributed.split_dataset_by_node``. Its frames come undecoded, so
:class:`StreamCollator` hands whole batches of rows to a
:class:`~ferv39k_hf.VideoClipTransform`, which decodes only the sampled frames,
inside the DataLoader worker:

    train = stream("s3://bucket/ferv39k", "train", shuffle_buffer=1024, seed=0)
    loader = StreamLoader(train, batch_size=8, num_workers=2,
                          collate_fn=StreamCollator(VideoClipTransform(train=True)))
    for epoch in range(3):
        loader.set_epoch(epoch)
        for batch in loader: ...
"""

from __future__ import annotations

import logging
import os
import posixpath
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, TypeVar

from ferv39k_hf.errors import Ferv39kError

logger = logging.getLogger(__name__)

__all__ = ["StreamError", "is_remote", "storage_options_for", "read_card", "card_row_counts", "split_files",
           "node_of_environment", "stream", "steps_per_epoch", "StreamCollator", "StreamLoader",
           "gather_across_ranks", "lockstep"]

Batch = TypeVar("Batch")


class StreamError(Ferv39kError):
    """A dataset location that cannot be streamed: no card, no such split, an unreadable card."""


def is_remote(location: "os.PathLike[str] | str") -> bool:
    """Whether ``location`` is an fsspec URL other than ``file://`` (``s3://b/x`` yes; ``/data/x``, ``C:\\x`` no)."""
    text = os.fspath(location)
    scheme, sep, _ = text.partition("://")
    return bool(sep) and len(scheme) > 1 and scheme.replace("+", "").isalnum() and scheme != "file"


def storage_options_for(location: str, storage_options: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """fsspec options for ``location``: ``storage_options`` as given, plus the standard environment settings.

    For ``s3://`` the endpoint comes from ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (as the AWS
    CLI reads them; older botocore ignores the variables, so it is passed explicitly); credentials
    and region are left to botocore's usual chain (``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``, ...). Other
    storages read their own standard variables (``GOOGLE_APPLICATION_CREDENTIALS``, ``HF_TOKEN``).

    Example: ``storage_options_for("s3://bucket/ferv39k")`` -> ``{"client_kwargs": {"endpoint_url":
    "http://127.0.0.1:9000"}}`` when ``AWS_ENDPOINT_URL=http://127.0.0.1:9000``; ``{}`` for a local path.
    """
    options = dict(storage_options or {})
    if os.fspath(location).startswith(("s3://", "s3a://")):
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        client = dict(options.get("client_kwargs") or {})
        if endpoint and "endpoint_url" not in client and "endpoint_url" not in options:
            options["client_kwargs"] = {**client, "endpoint_url": endpoint}
    return options


def _join(location: str, *parts: str) -> str:
    if is_remote(location):
        return posixpath.join(location.rstrip("/"), *parts)
    return os.path.join(os.fspath(location), *parts)


def read_card(location: "os.PathLike[str] | str",
              storage_options: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """The YAML front matter of ``location/README.md`` (a built folder's card), read through fsspec.

    Returns the metadata dict (``configs``, ``dataset_info``, ``ferv39k_config``, ...). Raises
    StreamError naming the card when it is missing or its YAML cannot be read.
    """
    import fsspec

    location = os.fspath(location)
    card = _join(location, "README.md")
    try:
        with fsspec.open(card, "r", encoding="utf-8", **storage_options_for(location, storage_options)) as handle:
            text = handle.read()
    except FileNotFoundError:
        raise StreamError(f"{card} is missing: {location} is not a folder built by 'ferv39k-hf build'") from None
    from ferv39k_hf.dataset.card import parse_front_matter  # card.py imports datasets

    try:
        meta = parse_front_matter(text, card)
    except ValueError as err:
        raise StreamError(str(err)) from None
    if meta is None:
        raise StreamError(f"{card}: no YAML front matter, so no list of the splits' files")
    if not isinstance(meta, dict):
        raise StreamError(f"{card}: the YAML front matter is not a mapping")
    return meta


def _default_entry(entries: Any, what: str, card: str) -> Dict[str, Any]:
    entries = entries if isinstance(entries, list) else [entries] if isinstance(entries, dict) else []
    if not entries:
        raise StreamError(f"{card}: no {what} in the YAML front matter")
    return next((e for e in entries if e.get("default")), entries[0])


def card_row_counts(card: Mapping[str, Any], where: str = "README.md") -> Dict[str, int]:
    """Rows per split from a card's ``dataset_info.splits`` (``num_examples``), e.g. ``{"train": 31088, "test": 7847}``.

    ``card`` is what :func:`read_card` returns; ``where`` names it in errors.
    """
    info = _default_entry(card.get("dataset_info"), "dataset_info", where)
    counts = {s.get("name"): s.get("num_examples") for s in info.get("splits") or []}
    if not counts or not all(isinstance(n, int) and n >= 0 for n in counts.values()):
        raise StreamError(f"{where}: dataset_info.splits gives no row count per split: {counts}")
    return counts


def split_files(card: Mapping[str, Any], location: str, where: str = "README.md") -> Dict[str, List[str]]:
    """The Parquet files of each split listed in the card's default ``configs`` entry, joined onto ``location``."""
    config = _default_entry(card.get("configs"), "configs", where)
    files: Dict[str, List[str]] = {}
    for entry in config.get("data_files") or []:
        paths = entry.get("path")
        paths = [paths] if isinstance(paths, str) else list(paths or [])
        files[entry.get("split")] = [_join(location, path) for path in paths]
    if not files:
        raise StreamError(f"{where}: configs[{config.get('config_name')!r}] lists no data_files")
    return files


def node_of_environment() -> Tuple[int, int]:
    """(rank, world size) as torchrun and accelerate set them in ``RANK`` / ``WORLD_SIZE``; (0, 1) alone."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def stream(
    location: "os.PathLike[str] | str",
    split: str,
    *,
    shuffle_buffer: int = 0,
    seed: int = 0,
    rank: Optional[int] = None,
    world_size: Optional[int] = None,
    max_rows: Optional[int] = None,
    storage_options: Optional[Mapping[str, Any]] = None,
    card: Optional[Mapping[str, Any]] = None,
):
    """One split of a built folder as a ``datasets.IterableDataset`` of rows with undecoded frames.

    Args:
        location: the built folder: a local path or an fsspec URL (``s3://bucket/ferv39k``).
        split: ``"train"``, ``"test"`` (or ``"validation"`` where the build has one).
        shuffle_buffer: rows in the shuffle buffer (0: file order, for evaluation). The order of
            the shards is shuffled too (unless ``max_rows`` is given); ``set_epoch(e)`` on the
            result (or on :class:`StreamLoader`) reseeds both for epoch ``e``. Memory: about
            ``shuffle_buffer`` rows of JPEG frames per DataLoader worker (FERV39k faces: ~0.3 MB a row).
        seed: the shuffle's seed; give every rank the same one.
        rank, world_size: this process's share (``split_dataset_by_node``): whole shards when
            their number divides by ``world_size``, else every ``world_size``-th row of each.
            Default: ``RANK`` / ``WORLD_SIZE`` from the environment (torchrun, accelerate).
        max_rows: keep only the first ``max_rows`` rows of the split (before the split by rank).
        storage_options: fsspec options for the storage, merged with :func:`storage_options_for`.
        card: the folder's card if already read (:func:`read_card`).

    Returns an IterableDataset (a torch one wrapping datasets' when shuffled) whose rows are dicts
    with ``clip_id``, ``scene``, ``scenario``, ``label``, ``num_frames`` and ``frames`` (a list of
    ``{"bytes", "path"}``). DataLoader workers each read whole shards of this rank's share.
    Nothing is written to the datasets cache.

    Example::

        test = stream("s3://bucket/ferv39k", "test", rank=1, world_size=2)
        clip_ids = [row["clip_id"] for row in test]
    """
    import datasets
    from datasets.distributed import split_dataset_by_node

    from ferv39k_hf.clips.columns import undecoded_frames

    location = os.fspath(location)
    where = _join(location, "README.md")
    card = read_card(location, storage_options) if card is None else card
    files = split_files(card, location, where)
    if split not in files:
        raise StreamError(f"{where}: no split {split!r}; the card lists {sorted(files)}")
    options = storage_options_for(location, storage_options)
    env_rank, env_world = node_of_environment()
    rank = env_rank if rank is None else int(rank)
    world_size = env_world if world_size is None else int(world_size)
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must lie in [0, {world_size}), got {rank}")

    def rows_of(paths: List[str]):
        rows = datasets.load_dataset("parquet", data_files={split: paths}, split=split, streaming=True,
                                     **({"storage_options": options} if options else {}))
        rows = undecoded_frames(rows)
        if max_rows is not None:
            rows = rows.take(int(max_rows))
        return split_dataset_by_node(rows, rank=rank, world_size=world_size) if world_size > 1 else rows

    if shuffle_buffer > 0:
        return _ShuffledRows(rows_of, files[split], int(shuffle_buffer), int(seed), max_rows is None)
    return rows_of(files[split])


def _iterable_base():
    import torch.utils.data

    return torch.utils.data.IterableDataset


class _ShuffledRows(_iterable_base()):
    """A split's rows, files in a seeded order per epoch, then mixed in a buffer of rows.

    ``datasets``' own shuffle buffer (5.x) copies the buffered rows through ``pyarrow.take`` over and
    over, which for rows of tens of JPEGs costs more than the transform's crop; this keeps Python
    rows in a list. Every rank draws the same file order (same seed and epoch), so
    ``split_dataset_by_node`` still gives each a disjoint share; DataLoader workers each read
    whole files of it and shuffle with their own stream ``(seed, epoch, worker)``.
    """

    def __init__(self, rows_of, files: List[str], buffer_size: int, seed: int, shuffle_files: bool):
        self.rows_of, self.files, self.buffer_size, self.seed = rows_of, list(files), buffer_size, seed
        self.shuffle_files, self.epoch = shuffle_files, 0
        self._rows = rows_of(self.files)

    @property
    def features(self):
        return self._rows.features

    @property
    def n_shards(self) -> int:
        return len(self.files)

    def set_epoch(self, epoch: int) -> None:
        """Draw the file order and the buffer's stream of ``epoch``."""
        self.epoch = int(epoch)

    def __iter__(self):
        import numpy as np
        import torch.utils.data

        info = torch.utils.data.get_worker_info()
        files = list(self.files)
        if self.shuffle_files:  # not with max_rows: the first max_rows rows stay the same rows every epoch
            order = np.random.default_rng([self.seed, self.epoch]).permutation(len(files))
            files = [files[i] for i in order]
        rows = self._rows if files == self.files else self.rows_of(files)
        rng = np.random.default_rng([self.seed, self.epoch, 0 if info is None else info.id + 1])
        buffer: List[Any] = []
        for row in rows:
            if len(buffer) < self.buffer_size:
                buffer.append(row)
                continue
            index = int(rng.integers(self.buffer_size))
            yield buffer[index]
            buffer[index] = row
        rng.shuffle(buffer)
        yield from buffer


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
        from ferv39k_hf.clips import batchmem

        columns = {key: [row[key] for row in rows] for key in rows[0]}
        batch = dict(self.transform(columns))
        for key in self.keep:
            batch[key] = columns[key]
        return batchmem.lease(batch)


def _dataloader_base():
    import torch.utils.data

    return torch.utils.data.DataLoader


class StreamLoader(_dataloader_base()):
    """A torch DataLoader over a streamed split whose ``set_epoch`` reseeds the split's shuffle.

    Trainer calls ``set_epoch`` on its training DataLoader each epoch. Workers are not kept
    between epochs (a persistent worker would keep the old epoch's seed).

    ``batches_per_epoch`` (training under several processes: ``steps_per_epoch(...) *
    accumulation``) makes every pass exactly that many batches, its ``len()``: the pass stops
    there, so every rank runs the same batches per epoch and Trainer's epochs are the same
    on all of them (its epoch-end logging and saving are collective). A share that gives fewer
    batches (unequal shards, or one partial batch per worker) is read again from its start to
    make up the rest, with a warning. :meth:`resume_at` starts an epoch's pass further on.
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
            if passes == 1:
                logger.warning("epoch %d: this process's share of the stream gave %d batches, fewer than the %d "
                               "every process runs per epoch: it is read again from its start for the other %d",
                               epoch, index, target, target - index)


def gather_across_ranks(items: List[Any]) -> List[Any]:
    """Every rank's ``items`` concatenated in rank order, on every rank (``all_gather_object``).

    Without an initialised ``torch.distributed`` process group this returns ``items``.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return list(items)
    gathered: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, list(items))
    return [item for part in gathered for item in part]


def _flag_device(dist: Any) -> Any:
    """Where a tensor for a collective of the default process group lives: CPU for gloo (and mpi), the
    current CUDA device for nccl, the current accelerator for other backends (xccl, hccl, ...)."""
    import torch

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

    Ranks that each stream their own share (:func:`stream`) may hold different numbers of batches,
    even none. A model whose forward runs collectives (FSDP, DeepSpeed ZeRO-3 all-gather their
    parameters) hangs when one rank stops calling it while another goes on. With an initialised
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
    import torch
    import torch.distributed as dist

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
