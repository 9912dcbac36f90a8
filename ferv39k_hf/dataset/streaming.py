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
import posixpath
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ferv39k_hf.errors import Ferv39kError

logger = logging.getLogger(__name__)

__all__ = ["StreamError", "is_remote", "storage_options_for", "read_card", "card_row_counts", "split_files",
           "node_of_environment", "stream"]


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
