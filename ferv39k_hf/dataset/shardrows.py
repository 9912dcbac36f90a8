"""A split's rows from its Parquet shards: every shard's rows counted against the card, every read retried in bounds."""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Mapping, Sequence

from ferv39k_hf.dataset.shards import shard_bounds
from ferv39k_hf.dataset.storage import StoragePatience, StreamError, filesystem, patiently

__all__ = ["footer_rows", "check_split_rows", "shard_rows"]


class _Shard:
    """One shard opened for reading: its fsspec file and Parquet footer, opened again after a failed read."""

    def __init__(self, url: str, options: Mapping[str, Any]):
        self.url, self.options, self.handle, self.parquet = url, options, None, None

    def open(self) -> Any:
        import pyarrow.parquet as pq

        self.close()
        fs, path = filesystem(self.url, self.options)
        self.handle = fs.open(path, "rb")
        try:
            self.parquet = pq.ParquetFile(self.handle)
        except Exception as err:
            self.close()
            if type(err).__module__.startswith("pyarrow"):  # not a transport error: the bytes are not Parquet
                raise StreamError(f"{self.url}: not a readable Parquet file, the shard is cut or damaged "
                                  f"({' '.join(str(err).split())}); copy it again from the built folder") from None
            raise
        return self.parquet

    def close(self) -> None:
        if self.handle is not None:
            try:
                self.handle.close()
            except Exception:  # noqa: BLE001 -- a broken connection may fail to close; it is dropped either way
                pass
        self.handle = self.parquet = None


def footer_rows(urls: Sequence[str], options: Mapping[str, Any], patience: StoragePatience) -> List[int]:
    """Rows in each shard, from its Parquet footer (read within ``patience``)."""
    counts = []
    for url in urls:
        shard = _Shard(url, options)
        counts.append(patiently(url, "reading the shard's Parquet footer",
                                lambda _attempt: shard.open().metadata.num_rows, patience, options))
        shard.close()
    return counts


def check_split_rows(split: str, urls: Sequence[str], counts: Sequence[int], card_rows: int, where: str) -> None:
    """StreamError naming a shard whose rows differ from what the card gives it, unless the totals agree.

    A build deals a split's rows into contiguous shards whose sizes differ by at most one
    (:func:`~ferv39k_hf.dataset.shards.shard_bounds`), so the card's ``num_examples`` fixes each
    shard's count, and a shard holding other than that is the one at fault.
    """
    total = sum(counts)
    if total == card_rows:
        return
    expected = [stop - start for start, stop in shard_bounds(card_rows, len(urls))]
    wrong = [(url, n, e) for url, n, e in zip(urls, counts, expected) if n != e] or [(urls[-1], counts[-1], "?")]
    url, rows, should = wrong[0]
    others = f"; {len(wrong) - 1} other shard(s) differ too" if len(wrong) > 1 else ""
    raise StreamError(f"{url} holds {rows} rows where the card gives it {should}: the {split} split's "
                      f"{len(urls)} shards hold {total} rows, {where} says {card_rows} "
                      f"({'missing' if total < card_rows else 'extra'} rows{others})")


def shard_rows(urls: List[str], rows: List[int], options: Dict[str, Any],
               patience: StoragePatience) -> Iterator[Dict[str, Any]]:
    """Every row of each shard in ``urls``, in file order; ``rows`` gives each shard's count.

    The generator of the stream's ``IterableDataset`` (datasets shards its list arguments between
    ranks and DataLoader workers). Rows are read a row group at a time; a transient failure
    opens the shard again and reads that row group again (rows are yielded only once their whole
    group is read, so none comes twice and none is skipped). A shard whose footer or rows read
    differ from its count stops the stream with a StreamError naming it and both counts.
    """
    for url, expected in zip(urls, rows):
        yield from _rows_of_shard(url, int(expected), options, patience)


def _rows_of_shard(url: str, expected: int, options: Mapping[str, Any],
                   patience: StoragePatience) -> Iterator[Dict[str, Any]]:
    shard = _Shard(url, options)
    try:
        footer = patiently(url, "reading the shard's Parquet footer", lambda _a: shard.open().metadata, patience,
                           options)
        if footer.num_rows != expected:
            raise StreamError(f"{url} holds {footer.num_rows} rows where the card gives it {expected}")
        groups, yielded = footer.num_row_groups, 0
        for group in range(groups):
            def read(attempt: int, group: int = group) -> Any:
                if attempt > 1 or shard.parquet is None:
                    reopened = shard.open()
                    if reopened.metadata.num_rows != expected or reopened.metadata.num_row_groups != groups:
                        raise StreamError(f"{url} changed while it was read: it now holds "
                                          f"{reopened.metadata.num_rows} rows, {expected} before")
                try:
                    return shard.parquet.read_row_group(group)
                except Exception:
                    shard.close()  # opened again for the next try
                    raise

            table = patiently(url, f"reading row group {group + 1} of {groups}", read, patience, options)
            yielded += table.num_rows
            yield from table.to_pylist()
        if yielded != expected:
            raise StreamError(f"{url} gave {yielded} rows where its footer and the card give {expected}")
    finally:
        shard.close()
