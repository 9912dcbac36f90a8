"""Stream a built FERV39k folder (local or in object storage) as datasets IterableDatasets, with no Arrow cache.

A folder made by ``ferv39k-hf build`` is Parquet shards plus a dataset card
whose YAML lists each split's files (``configs``) and row counts
(``dataset_info``). :func:`stream` reads one split as a ``datasets``
``IterableDataset`` straight from those shards, from a local path or any
fsspec URL (``s3://bucket/ferv39k``, ``gs://...``, ``hf://datasets/ORG/NAME``),
optionally shuffled through a buffer (reseeded per epoch by ``set_epoch``) and
split between the processes of torchrun / accelerate with
``datasets.distributed.split_dataset_by_node``. Its frames come undecoded; the
torch side (``StreamCollator``, ``StreamLoader``, ``lockstep``) lives in
:mod:`ferv39k_hf.training.streamloader`:

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
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ferv39k_hf.dataset.card import card_row_counts, read_card, split_files
from ferv39k_hf.dataset.shardrows import check_split_rows, footer_rows, shard_rows
from ferv39k_hf.dataset.storage import (
    StoragePatience,
    StreamError,
    filesystem,
    is_remote,
    join,
    patiently,
    storage_options_for,
)

logger = logging.getLogger(__name__)

__all__ = ["StreamError", "StoragePatience", "is_remote", "storage_options_for", "read_card", "card_row_counts",
           "split_files", "node_of_environment", "stream"]


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
    patience: Optional[StoragePatience] = None,
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
        patience: timeouts and retries of every read (default: ``FERV39K_HF_STORAGE_PATIENCE`` or
            :class:`~ferv39k_hf.dataset.storage.StoragePatience`'s defaults).

    Before anything is streamed, every shard's Parquet footer is read and the split's rows are
    checked against the card's ``num_examples``: a shard holding more or fewer rows than the card
    gives it is a StreamError naming it and both counts. While streaming, each shard is checked
    again as it is opened and read to its end.

    Returns an IterableDataset (a torch one wrapping datasets' when shuffled) whose rows are dicts
    with ``clip_id``, ``scene``, ``scenario``, ``label``, ``num_frames`` and ``frames`` (a list of
    ``{"bytes", "path"}``). DataLoader workers each read whole shards of this rank's share.
    Nothing is written to the datasets cache.

    Example::

        test = stream("s3://bucket/ferv39k", "test", rank=1, world_size=2)
        clip_ids = [row["clip_id"] for row in test]
    """
    from datasets.distributed import split_dataset_by_node

    location = os.fspath(location)
    where = join(location, "README.md")
    patience = StoragePatience.from_env() if patience is None else patience
    card = read_card(location, storage_options, patience) if card is None else card
    files = split_files(card, location, where)
    if split not in files:
        raise StreamError(f"{where}: no split {split!r}; the card lists {sorted(files)}")
    options = storage_options_for(location, storage_options, patience)
    env_rank, env_world = node_of_environment()
    rank = env_rank if rank is None else int(rank)
    world_size = env_world if world_size is None else int(world_size)
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must lie in [0, {world_size}), got {rank}")
    counts = dict(zip(files[split], footer_rows(files[split], options, patience)))
    check_split_rows(split, files[split], list(counts.values()), card_row_counts(card, where)[split], where)
    features = _features(files[split][0], options, patience)

    def rows_of(paths: List[str]):
        rows = _iterable_rows(paths, [counts[path] for path in paths], options, patience, features)
        if max_rows is not None:
            rows = rows.take(int(max_rows))
        return split_dataset_by_node(rows, rank=rank, world_size=world_size) if world_size > 1 else rows

    if shuffle_buffer > 0:
        return _ShuffledRows(rows_of, files[split], int(shuffle_buffer), int(seed), max_rows is None)
    return rows_of(files[split])


def _features(url: str, options: Mapping[str, Any], patience: StoragePatience):
    """The split's datasets Features, from the first shard's Parquet schema."""
    import datasets
    import pyarrow.parquet as pq

    def read(_attempt: int):
        fs, path = filesystem(url, options)
        with fs.open(path, "rb") as handle:
            return pq.read_schema(handle)

    return datasets.Features.from_arrow_schema(patiently(url, "reading the shard's schema", read, patience, options))


def _iterable_rows(paths: List[str], counts: List[int], options: Dict[str, Any], patience: StoragePatience,
                   features: Any):
    """The rows of ``paths`` as an IterableDataset with one shard per file (datasets deals list arguments),
    frames undecoded."""
    import datasets

    from ferv39k_hf.clips.columns import undecoded_frames

    return undecoded_frames(datasets.IterableDataset.from_generator(
        shard_rows, features=features,
        gen_kwargs={"urls": list(paths), "rows": list(counts), "options": dict(options), "patience": patience}))


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
