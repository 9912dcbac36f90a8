"""Shard counts that ranks and DataLoader workers divide: the rule alone, then a built folder streamed and split."""

import math
from collections import Counter

import datasets
import pyarrow.parquet as pq
import pytest
import yaml
from datasets.distributed import split_dataset_by_node

from ferv39k_hf.dataset.export import ROWS_PER_SHARD
from ferv39k_hf.dataset.shards import deal_rows, shard_bounds, shard_count, shard_step, whole_shard_ranks

FULL_SIZE = {"train": 31_088, "test": 7_847}  # FERV39k's official clips per split (facts, section 3)
SIZES = [*range(0, 300), *range(2_000, 2_100), 5_000, 7_847, 31_088, 38_935, 100_003]


def test_full_size_splits_give_whole_shards_to_1_to_32_ranks():
    for config, target in ROWS_PER_SHARD.items():
        for split, rows in FULL_SIZE.items():
            count = shard_count(rows, target)
            assert all(count % ranks == 0 for ranks in (1, 2, 4, 8, 16, 32)), (config, split, count)
            sizes = [stop - start for start, stop in shard_bounds(rows, count)]
            assert max(sizes) <= target and max(sizes) - min(sizes) <= 1, (config, split)
            if count > 32:  # no more shards than the target size and the 32 ranks need
                assert math.ceil(rows / (count - 32)) > target, (config, split, count)
    assert shard_count(31_088, ROWS_PER_SHARD["faces"]) == 32  # 971 or 972 clips each, about 290 MB
    assert whole_shard_ranks(32) == [1, 2, 4, 8, 16, 32] and whole_shard_ranks(24) == [1, 2, 4, 8]
    assert shard_count(7_847, ROWS_PER_SHARD["faces"]) == 32


@pytest.mark.parametrize("target", [1, 3, 64, 256, 512, 1024])
def test_the_rule_over_a_range_of_sizes(target):
    for rows in SIZES:
        count, step = shard_count(rows, target), shard_step(rows)
        assert count >= 1 and count % step == 0 and count <= max(rows, 1), (rows, count)
        if rows >= 8:
            assert count % 8 == 0, rows
        if rows >= 2_048:
            assert count % 32 == 0, rows
        if 1 <= rows < 8:
            assert step <= rows < 2 * step and step in (1, 2, 4), rows  # the most ranks that still get a row each
        sizes = [stop - start for start, stop in shard_bounds(rows, count)]
        assert sum(sizes) == rows and max(sizes) - min(sizes) <= 1, rows
        most = max(step, rows // step * step)  # the most shards of at least one row that the step allows
        if count < most:  # not limited by the rows: no shard over target, and one step fewer would be
            assert max(sizes) <= target, (rows, count)
            assert count == step or math.ceil(rows / (count - step)) > target, (rows, count)
        else:
            assert count == most, (rows, count)


def test_rows_are_dealt_in_order_in_contiguous_runs():
    records = [f"Scene/Emotion/{i:04d}" for i in range(7_847)]
    shards = deal_rows(records, 1024)
    assert len(shards) == 32 and [r for shard in shards for r in shard] == records
    assert {len(shard) for shard in shards} == {245, 246}
    assert shard_bounds(10, 4) == [(0, 2), (2, 5), (5, 7), (7, 10)]
    with pytest.raises(ValueError):
        shard_count(10, 0)
    with pytest.raises(ValueError):
        shard_bounds(10, 0)


def _card_files(folder):
    front = (folder / "README.md").read_text().split("---")[1]
    (config,) = yaml.safe_load(front)["configs"]
    return {entry["split"]: entry["path"] for entry in config["data_files"]}


def _clips_by_shard(folder, files):
    return {name: pq.read_table(folder / name, columns=["clip_id"]).column("clip_id").to_pylist() for name in files}


def test_a_streamed_build_splits_into_whole_shards_for_2_4_and_8_ranks(built_faces):
    card, text = _card_files(built_faces), (built_faces / "README.md").read_text()
    # not columns=: older releases lack it
    streamed = datasets.load_dataset(str(built_faces), streaming=True).select_columns(["clip_id"])
    for split, files in card.items():
        assert f"- `{split}`: {len(files)} shard(s), whole shards for 1, 2, 4, 8" in text  # the card says so
        by_shard = _clips_by_shard(built_faces, files)
        sizes = [len(clips) for clips in by_shard.values()]
        assert len(files) % 8 == 0 and max(sizes) - min(sizes) <= 1, (split, sizes)
        stream = streamed[split]
        assert stream.n_shards == len(files)
        everything = [row["clip_id"] for row in stream]
        assert everything == [clip for clips in by_shard.values() for clip in clips]  # every row, in card order
        for world in (2, 4, 8):
            rank_of = {}
            for rank in range(world):
                part = split_dataset_by_node(stream, rank=rank, world_size=world)
                assert part.n_shards == len(files) // world, (split, world, rank)
                for row in part:
                    assert row["clip_id"] not in rank_of, f"{row['clip_id']} read by two ranks"
                    rank_of[row["clip_id"]] = rank
            assert sorted(rank_of) == sorted(everything), (split, world)  # complete
            owners = [{rank_of[clip] for clip in clips} for clips in by_shard.values()]
            assert all(len(owner) == 1 for owner in owners), (split, world)  # each shard read whole by one rank
            assert sorted(sum(1 for owner in owners if rank in owner) for rank in range(world)) == \
                [len(files) // world] * world


def _tag_worker(row):
    import torch.utils.data

    return {"worker": torch.utils.data.get_worker_info().id}


def test_dataloader_workers_of_one_rank_get_whole_shards(built_faces):
    torch_data = pytest.importorskip("torch.utils.data")
    files = _card_files(built_faces)["train"]
    by_shard = _clips_by_shard(built_faces, files)
    stream = datasets.load_dataset(str(built_faces), split="train", streaming=True).select_columns(["clip_id"])
    part = split_dataset_by_node(stream, rank=1, world_size=2)
    loader = torch_data.DataLoader(part.map(_tag_worker), batch_size=None, num_workers=2)
    worker_of = {}
    for row in loader:
        assert row["clip_id"] not in worker_of
        worker_of[row["clip_id"]] = int(row["worker"])
    mine = [name for name, clips in by_shard.items() if clips[0] in worker_of]
    assert len(mine) == len(files) // 2
    assert sorted(worker_of) == sorted(clip for name in mine for clip in by_shard[name])
    owners = [{worker_of[clip] for clip in by_shard[name]} for name in mine]
    assert all(len(owner) == 1 for owner in owners)  # no shard is split between workers
    per_worker = Counter(next(iter(owner)) for owner in owners)
    assert sorted(per_worker.values()) == [len(mine) // 2] * 2  # and each worker reads as many


def test_row_groups_stay_small_for_streaming_reads(built_faces, tmp_path, monkeypatch):
    import ferv39k_hf.dataset.export as export
    import ferv39k_hf.dataset.shardwriter as shardwriter
    from ferv39k_hf.synthetic import write_sample_archive

    for shard in (built_faces / "data" / "faces").glob("*.parquet"):
        meta = pq.ParquetFile(shard).metadata
        assert all(meta.row_group(i).num_rows <= shardwriter.ROWS_PER_GROUP for i in range(meta.num_row_groups))
    # A byte bound far below 32 clips of frames: groups end as soon as they pass it.
    root = tmp_path / "FERV39k"
    write_sample_archive(root, scale=0.001, parts=["faces"], scenes=["Action", "Crime"])
    monkeypatch.setattr(shardwriter, "_MAX_GROUP_BYTES", 200_000)
    export.build_dataset_folder(root, tmp_path / "out")
    for shard in (tmp_path / "out" / "data" / "faces").glob("*.parquet"):
        table = pq.read_table(shard)
        clip_bytes = [sum(len(f["bytes"]) for f in frames) for frames in table.column("frames").to_pylist()]
        meta, first = pq.ParquetFile(shard).metadata, 0
        for i in range(meta.num_row_groups):
            rows = meta.row_group(i).num_rows
            group = clip_bytes[first:first + rows]
            assert sum(group[:-1]) < 200_000, (shard.name, i)  # it ended with the clip that passed the bound
            first += rows
        assert first == len(clip_bytes)
