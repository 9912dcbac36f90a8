"""How many Parquet shards a split gets and which rows each holds, so that ranks and workers get whole shards.

``datasets.distributed.split_dataset_by_node`` gives each rank whole shards
only when the shard count is a multiple of the world size; otherwise every
rank reads every shard and keeps one row in N. So a split's shard count is a
multiple of a power of two, chosen by its size:

=====================  ===========================  ==============================
rows in the split      shard count                  whole shards for
=====================  ===========================  ==============================
at least 2,048         a multiple of 32             1, 2, 4, 8, 16 and 32 ranks
8 to 2,047             a multiple of 8              1, 2, 4 and 8 ranks
4 to 7                 4                            1, 2 and 4 ranks
2 or 3                 2                            1 and 2 ranks
0 or 1                 1                            1 rank
=====================  ===========================  ==============================

Within that, the count is the smallest one giving shards of at most the
target size (1,024 face clips, about 300 MB), and never more than the rows,
so no shard is empty. Rows keep their split-file order and are dealt out in
contiguous runs whose sizes differ by at most one. Both depend on the row
count alone: the same split gives the same shards on any machine.
"""

from __future__ import annotations

from typing import List, Mapping, Sequence, Tuple, TypeVar

T = TypeVar("T")

MOST_RANKS = 32  # the largest power of two a big split's shard count is a multiple of
ANY_SIZE_RANKS = 8  # ... and a split's of at least this many rows
# A split is big (a multiple of MOST_RANKS shards) when it fills that many shards with at least this many rows each.
MIN_ROWS_PER_SHARD_AT_MOST_RANKS = 64


def shard_step(rows: int) -> int:
    """The power of two that a split of ``rows`` rows has a multiple of shards of; see the module table.

    Example: ``shard_step(31_088) == 32``, ``shard_step(500) == 8``, ``shard_step(5) == 4``.
    """
    if rows < 0:
        raise ValueError(f"a split cannot have {rows} rows")
    if rows >= MOST_RANKS * MIN_ROWS_PER_SHARD_AT_MOST_RANKS:
        return MOST_RANKS
    if rows >= ANY_SIZE_RANKS:
        return ANY_SIZE_RANKS
    step = 1
    while step * 2 <= rows:
        step *= 2
    return step


def shard_count(rows: int, target_rows: int) -> int:
    """How many shards a split of ``rows`` rows gets when shards should hold about ``target_rows`` rows.

    Args:
        rows: the split's rows (clips), 0 or more.
        target_rows: the most rows a shard should hold, positive; the count exceeds
            ``ceil(rows / target_rows)`` only as far as divisibility needs.

    Returns:
        A positive multiple of :func:`shard_step` ``(rows)``, at most ``max(rows, 1)``.

    Example: FERV39k's 31,088 training clips at 1,024 per shard give ``shard_count(31_088, 1024) == 32``
    shards of 971 or 972 clips; its 7,847 test clips give 32 shards of 245 or 246.
    """
    if target_rows < 1:
        raise ValueError(f"a shard must hold at least one row, not {target_rows}")
    step = shard_step(rows)
    needed = max(1, -(-rows // target_rows))
    count = -(-needed // step) * step
    return min(count, max(step, rows // step * step))


def shard_bounds(rows: int, count: int) -> List[Tuple[int, int]]:
    """``count`` contiguous (start, stop) row ranges covering ``range(rows)``, sizes differing by at most one.

    Example: ``shard_bounds(10, 4) == [(0, 2), (2, 5), (5, 7), (7, 10)]``.
    """
    if count < 1:
        raise ValueError(f"cannot cut rows into {count} shards")
    cuts = [i * rows // count for i in range(count + 1)]
    return list(zip(cuts[:-1], cuts[1:]))


def deal_rows(records: Sequence[T], target_rows: int) -> List[Sequence[T]]:
    """``records`` cut into :func:`shard_count` contiguous shards by :func:`shard_bounds`, order kept.

    Example: ``[len(s) for s in deal_rows(list(range(7_847)), 1024)]`` is 32 numbers, each 245 or 246.
    """
    return [records[start:stop] for start, stop in shard_bounds(len(records), shard_count(len(records), target_rows))]


def whole_shard_ranks(count: int) -> List[int]:
    """The world sizes among 1, 2, 4, ..., 32 that give each rank whole shards of a split of ``count`` shards.

    Example: ``whole_shard_ranks(32) == [1, 2, 4, 8, 16, 32]``, ``whole_shard_ranks(8) == [1, 2, 4, 8]``.
    """
    return [ranks for ranks in (1, 2, 4, 8, 16, MOST_RANKS) if count % ranks == 0]


def shard_note(shards: Mapping[str, Sequence[str]]) -> str:
    """The dataset card's paragraph on how the splits divide among ranks and workers (Markdown).

    Args:
        shards: split -> its shard files, as the card's ``configs:`` lists them.
    """
    lines = [
        "Each split is cut into shards that ranks share whole: `datasets.distributed.split_dataset_by_node` gives "
        "each rank `n_shards / world_size` whole files when the world size divides the shard count (other world "
        "sizes make every rank read every file and keep its share of the rows). DataLoader workers always get "
        "whole files; use a worker count that divides a rank's files.",
        "",
    ]
    for split, files in shards.items():
        ranks = ", ".join(str(r) for r in whole_shard_ranks(len(files)))
        lines.append(f"- `{split}`: {len(files)} shard(s), whole shards for {ranks} rank(s)")
    lines += ["", "A split gets a multiple of 32 shards from 2,048 clips and of 8 from 8 clips; one of fewer than 8 "
                  "clips gets 1, 2 or 4 shards, the most that still hold a clip each."]
    return "\n".join(lines)
