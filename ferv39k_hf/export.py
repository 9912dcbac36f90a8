"""Archive -> a Hub-ready Parquet folder, written atomically and reproducibly.

Rows come from the builder's own pieces (:func:`~ferv39k_hf.builder.clip_features`,
:class:`~ferv39k_hf.clips.ClipReader`, :func:`~ferv39k_hf.builder.make_example`)
and go straight into Parquet shards, without an Arrow cache in between.
A split's shard count and the clips of each shard follow from its clip count
alone (:mod:`ferv39k_hf.dataset.shards`: a multiple of 32 shards for a split
of 2,048 clips or more, of 8 from 8 clips, so that ranks and DataLoader
workers get whole shards), so the output is byte-identical for any
``num_proc``, and each shard's name carries a hash of its content: datasets
caches a folder by its card's YAML, and new content must mean a new YAML.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shlex
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

from . import fingerprint
from .annotations import ClipRecord, Problem
from .archive.listcheck import ListsUsed, check_frame_counts
from .archive.lists import open_lists
from .builder import clip_features, make_example, read_or_skip
from .card import render_card
from .clips import ClipReader, FrameBatch
from .dataset.shards import deal_rows
from .diskspace import check_free_space, is_disk_full, needed_bytes, payload_bytes, shortage
from .errors import BuildError
from .layout import Layout, find_layout
from .outdirs import check_build_out, discard_partial, place_build, seal_build, start_build
from .splits import plan_splits
from .taxonomy import DEFAULT_LABEL_ORDER, SCENE_TO_SCENARIO

# The most clips per shard (the count then rounds up to what ranks divide; see dataset.shards):
# about 300 MB of face crops, fewer of the larger scene frames and videos.
ROWS_PER_SHARD = {"faces": 1024, "scenes": 256, "videos": 512}
ROWS_PER_GROUP = 32  # Parquet row group: the unit of streaming reads
# A row group ends early past this many frame or video bytes, so that a streaming reader holds at most
# about this much per group whatever the clips hold; face crops come to about 10 MB per group.
_MAX_GROUP_BYTES = 64 << 20
_METADATA_COLUMNS = ["clip_id", "scene", "scenario", "label", "num_frames"]


@dataclass
class ShardTask:
    split: str
    index: int
    total: int
    records: List[ClipRecord]


@dataclass
class ShardResult:
    split: str
    index: int
    filename: str
    rows: int
    nbytes: int
    skipped: List[Problem] = field(default_factory=list)
    class_counts: Counter = field(default_factory=Counter)
    scenario_counts: Counter = field(default_factory=Counter)


@dataclass
class BuildResult:
    out: Path
    config: str
    counts: Dict[str, int]
    skipped: List[Problem]
    shards: Dict[str, List[str]]
    nbytes: int
    seconds: float
    notes: List[str] = field(default_factory=list)  # leftovers removed or kept beside the output
    frame_count_mismatches: List[Any] = field(default_factory=list)  # DFER-CLIP counts the archive contradicts

    def summary(self) -> str:
        lines = [f"built {self.out} (config {self.config}) in {self.seconds:.1f} s, {self.nbytes / 1e6:.1f} MB"]
        lines += [f"  {split:<10} {n:>7} clips in {len(self.shards[split])} shard(s)" for split, n in self.counts.items()]
        if self.skipped:
            lines.append(f"  skipped    {len(self.skipped):>7} split-file line(s); see {self.out / 'build_report.json'}")
            lines += [f"    {p}" for p in self.skipped[:10]]
            if len(self.skipped) > 10:
                lines.append(f"    ... and {len(self.skipped) - 10} more")
        if self.frame_count_mismatches:
            lines.append(f"  frame counts: {len(self.frame_count_mismatches)} list line(s) claim a frame count the "
                         f"archive contradicts (not used); see {self.out / 'build_report.json'}")
            lines += [f"    {m}" for m in self.frame_count_mismatches[:5]]
        lines += [f"  note: {note}" for note in self.notes]
        lines.append(f'  load it: datasets.load_dataset("{self.out}")')
        return "\n".join(lines)


class _ShardWriter:
    """Writes one shard: reads clips, checks them, hashes the rows it writes."""

    def __init__(self, layout: Layout, options: Dict[str, Any], tmp_dir: Path):
        self.reader = ClipReader(layout, kind=options["config"], frames=options["frames"])
        self.options = options
        self.features = clip_features(options["config"], options["label_order"])
        self.schema = self.features.arrow_schema
        self.tmp_dir = tmp_dir
        packed = options["frames"] == "copy" and options["config"] != "videos"
        self.batch = FrameBatch() if packed else None

    def write(self, task: ShardTask, progress: Optional[Any] = None) -> ShardResult:
        partial = self.tmp_dir / f"{task.split}-{task.index:05d}.partial"
        # xxh3 (a datasets dependency) hashes at memory speed; sha256 cost a third of the build.
        # Seeded with the builder version: a package that makes rows differently gives new names,
        # hence a new card YAML, so datasets does not serve its cache of the old folder.
        seed = f"{fingerprint.BUILDER_VERSION}\0{json.dumps(self.features.to_dict(), sort_keys=True)}"
        digest = xxhash.xxh3_128(seed.encode())
        result = ShardResult(task.split, task.index, "", 0, 0)
        with pq.ParquetWriter(
            # JPEG and mp4 bytes do not compress; statistics of binary columns only bloat the footer.
            partial, self.schema, compression="none", write_statistics=_METADATA_COLUMNS, use_dictionary=False,
        ) as writer:
            if self.batch is not None:
                self._write_packed(task, writer, digest, result, progress)
            else:
                self._write_rows(task, writer, digest, result, progress)
        _fsync(partial)  # on disk before the folder is renamed into place
        name = f"{task.split}-{task.index:05d}-of-{task.total:05d}-{digest.hexdigest()[:16]}.parquet"
        os.replace(partial, self.tmp_dir / name)
        result.filename = name
        result.nbytes = (self.tmp_dir / name).stat().st_size
        return result

    def _write_rows(self, task: ShardTask, writer: Any, digest: Any, result: ShardResult, progress: Optional[Any]) -> None:
        """Rows as Python objects: videos, and frames by reference."""
        config = self.options["config"]
        rows: List[Dict[str, Any]] = []
        nbytes = 0
        for record in task.records:
            row = self._read_row(self.reader, record, result)
            _count(progress)
            if row is None:
                continue
            _update_digest(digest, row, config)
            rows.append(row)
            nbytes += sum(len(item["bytes"] or b"") for item in ([row["video"]] if config == "videos" else row["frames"]))
            if len(rows) == ROWS_PER_GROUP or nbytes >= _MAX_GROUP_BYTES:
                writer.write_table(rows_to_table(rows, self.schema, config))
                rows.clear()
                nbytes = 0
        if rows:
            writer.write_table(rows_to_table(rows, self.schema, config))

    def _write_packed(self, task: ShardTask, writer: Any, digest: Any, result: ShardResult, progress: Optional[Any]) -> None:
        """Copied frames: each row group's frame bytes are read into one reused buffer that Arrow wraps as is."""
        batch, reader = self.batch, _BatchReader(self.reader, self.batch)
        rows: List[Dict[str, Any]] = []
        batch.clear()
        for record in task.records:
            first = len(batch)
            row = self._read_row(reader, record, result)
            _count(progress)
            if row is None:
                continue
            _update_digest_packed(digest, row, batch, first)
            rows.append(row)
            if len(rows) == ROWS_PER_GROUP or batch.sink.end >= _MAX_GROUP_BYTES:
                writer.write_table(batch_to_table(rows, batch, self.schema))
                rows.clear()
                batch.clear()
        if rows:
            writer.write_table(batch_to_table(rows, batch, self.schema))
            batch.clear()

    def _read_row(self, reader: Any, record: ClipRecord, result: ShardResult) -> Optional[Dict[str, Any]]:
        fields = read_or_skip(reader, record, self.options["on_error"], result.skipped)
        if fields is None:
            return None
        result.rows += 1
        result.class_counts[record.emotion] += 1
        result.scenario_counts[SCENE_TO_SCENARIO[record.scene]] += 1
        return make_example(record, fields, self.options["label_order"])


class _BatchReader:
    """read_or_skip's reader for packed rows: the clip's frames go into the batch, its other fields are returned."""

    def __init__(self, reader: ClipReader, batch: FrameBatch):
        self.reader, self.batch = reader, batch

    def read(self, record: ClipRecord) -> Dict[str, Any]:
        return {"num_frames": self.reader.read_into(record, self.batch)}


def _count(progress: Optional[Any]) -> None:
    if progress is not None:
        with progress.get_lock():
            progress.value += 1


def _metadata_columns(rows: List[Dict[str, Any]], schema: pa.Schema) -> List[pa.Array]:
    return [pa.array([row[name] for row in rows], type=schema.field(name).type) for name in _METADATA_COLUMNS]


def batch_to_table(rows: List[Dict[str, Any]], batch: FrameBatch, schema: pa.Schema) -> pa.Table:
    """Rows whose frames are packed in ``batch`` -> an Arrow table of ``schema``; the frame bytes are not copied."""
    offsets = pa.array([0] + batch.ends, pa.int32()).buffers()[1]
    data = pa.py_buffer(batch.sink.data)  # wraps the buffer: drop the table before the batch is reused
    frames = pa.StructArray.from_arrays(
        [pa.Array.from_buffers(pa.binary(), len(batch), [None, offsets, data]), pa.array(batch.paths, pa.string())],
        names=["bytes", "path"],
    )
    counts = [0]
    for row in rows:
        counts.append(counts[-1] + row["num_frames"])
    frames = pa.ListArray.from_arrays(pa.array(counts, pa.int32()), frames)
    return pa.Table.from_arrays(_metadata_columns(rows, schema) + [frames], schema=schema)


def rows_to_table(rows: List[Dict[str, Any]], schema: pa.Schema, config: str) -> pa.Table:
    """Rows -> an Arrow table of ``schema``, building the columns directly (from_pylist is 3x slower)."""
    columns = _metadata_columns(rows, schema)
    items = [row["video"] for row in rows] if config == "videos" else [f for row in rows for f in row["frames"]]
    struct = pa.StructArray.from_arrays(
        [pa.array([i["bytes"] for i in items], pa.binary()), pa.array([i["path"] for i in items], pa.string())],
        names=["bytes", "path"],
    )
    if config != "videos":
        offsets = [0]
        for row in rows:
            offsets.append(offsets[-1] + len(row["frames"]))
        struct = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), struct)
    return pa.Table.from_arrays(columns + [struct], schema=schema)


# The shard name's digest: both row forms must hash the same fields the same way, so that a
# shard's name depends on its content only (the packed and row-by-row paths give identical names).


def _digest_row(digest: Any, row: Dict[str, Any]) -> None:
    digest.update(f"{row['clip_id']}|{row['scene']}|{row['label']}|{row['num_frames']}\n".encode())


def _digest_item(digest: Any, path: str, data: Optional[Any]) -> None:
    digest.update(f"{path}\0{-1 if data is None else len(data)}\0".encode())
    if data is not None:
        digest.update(data)


def _update_digest(digest: Any, row: Dict[str, Any], config: str) -> None:
    _digest_row(digest, row)
    items = [row["video"]] if config == "videos" else row["frames"]
    for item in items:
        _digest_item(digest, item["path"], item["bytes"])


def _update_digest_packed(digest: Any, row: Dict[str, Any], batch: FrameBatch, first: int) -> None:
    """What _update_digest hashes, for a row whose frames are batch's frames from ``first`` on."""
    _digest_row(digest, row)
    sink, ends, paths = batch.sink, batch.ends, batch.paths
    start = ends[first - 1] if first else 0
    for i in range(first, len(ends)):
        _digest_item(digest, paths[i], sink.view(start, ends[i]))
        start = ends[i]


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# Worker-process state, set by _init_worker (fork or spawn).
_WORKER: Dict[str, Any] = {}


def _init_worker(layout: Layout, options: Dict[str, Any], tmp_dir: Path, progress: Any) -> None:
    _WORKER["writer"] = _ShardWriter(layout, options, tmp_dir)
    _WORKER["progress"] = progress


def _write_in_worker(task: ShardTask) -> ShardResult:
    return _WORKER["writer"].write(task, _WORKER["progress"])


def plan_shards(records: Dict[str, List[ClipRecord]], config: str) -> List[ShardTask]:
    """Each split's records dealt into shards that ranks and workers can share whole (see dataset.shards)."""
    tasks = []
    for split, recs in records.items():
        shards = deal_rows(recs, ROWS_PER_SHARD[config])
        tasks.extend(ShardTask(split, index, len(shards), list(part)) for index, part in enumerate(shards))
    return tasks


def _run_tasks(layout: Layout, options: Dict[str, Any], tmp_data: Path, tasks: List[ShardTask], num_clips: int) -> List[ShardResult]:
    from tqdm.auto import tqdm

    progress = multiprocessing.Value("q", 0)
    bar = tqdm(total=num_clips, unit="clip", desc=f"build {options['config']}", disable=None)
    results: List[ShardResult] = []
    try:
        if options["num_proc"] <= 1:
            writer = _ShardWriter(layout, options, tmp_data)
            for task in tasks:
                results.append(writer.write(task, progress))
                bar.update(progress.value - bar.n)
        else:
            context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
            with context.Pool(options["num_proc"], _init_worker, (layout, options, tmp_data, progress)) as pool:
                pending = pool.imap(_write_in_worker, tasks)
                for _ in tasks:
                    while True:
                        try:
                            results.append(pending.next(timeout=0.2))
                            break
                        except multiprocessing.TimeoutError:
                            bar.update(progress.value - bar.n)
                    bar.update(progress.value - bar.n)
    finally:
        bar.close()
    return results


def build_dataset_folder(
    root: "os.PathLike[str] | str",
    out: "os.PathLike[str] | str",
    *,
    config: str = "faces",
    label_order: str = DEFAULT_LABEL_ORDER,
    validation_fraction: float = 0.0,
    seed: int = 0,
    num_proc: int = 1,
    on_error: str = "raise",
    frames: str = "copy",
    overwrite: bool = False,
    command: Optional[str] = None,
    train_list: Optional[str] = None,
    test_list: Optional[str] = None,
    list_format: Optional[str] = None,
) -> BuildResult:
    """Build ``out`` from the archive at ``root``; see ``ferv39k-hf build --help``.

    ``train_list`` and ``test_list`` (both or neither) take the splits from
    community split lists instead of the official split files (see
    :func:`ferv39k_hf.archive.lists.open_lists`); the card records them.
    """
    started = time.perf_counter()
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    out = Path(out).absolute()
    check_build_out(out, root, overwrite)  # before reading the archive: a refused --out fails at once
    layout = find_layout(root)
    layout.part(config)  # fail early, naming the root, if the part is absent
    lists = open_lists(train_list, test_list, list_format)
    plan = plan_splits(layout, validation_fraction=validation_fraction, seed=seed, on_error=on_error, lists=lists)
    listed = ListsUsed(lists, *check_frame_counts(lists, layout, [r for rs in plan.records.values() for r in rs]))
    options = {"config": config, "label_order": label_order, "frames": frames, "on_error": on_error, "num_proc": num_proc}
    tasks = plan_shards(plan.records, config)
    tmp, notes = start_build(out, root, overwrite)  # also removes dead builds' leftovers: count their space
    needed = 0
    try:
        needed = needed_bytes(payload_bytes(layout.part(config), plan.records.values()) if frames == "copy" else 0)
        check_free_space(f"building {config}", out, needed)
        tmp_data = tmp / "data" / config
        tmp_data.mkdir(parents=True)
        results = _run_tasks(layout, options, tmp_data, tasks, sum(len(t.records) for t in tasks))
        result = _finish(tmp, out, config, plan.problems, results, options, validation_fraction, seed, command, root,
                         listed)
        seal_build(tmp)
    except BaseException as err:
        discard_partial(tmp)
        if is_disk_full(err):
            raise BuildError(f"the disk filled during the build, which was removed ({out} is as it was): "
                             f"{shortage(f'building {config}', out, needed)}") from None
        raise
    result.notes = notes + place_build(tmp, out)
    result.seconds = time.perf_counter() - started
    return result


def _finish(tmp: Path, out: Path, config: str, problems: List[Problem], results: List[ShardResult],
            options: Dict[str, Any], validation_fraction: float, seed: int, command: Optional[str], root: Any,
            listed: ListsUsed = ListsUsed()) -> BuildResult:
    shards: Dict[str, List[str]] = {}
    counts: Dict[str, int] = {}
    class_counts: Dict[str, Counter] = {}
    scenario_counts: Dict[str, Counter] = {}
    split_bytes: Dict[str, int] = {}
    skipped = list(problems)
    for res in results:  # in task order: split by split, shard by shard
        shards.setdefault(res.split, []).append(f"data/{config}/{res.filename}")
        counts[res.split] = counts.get(res.split, 0) + res.rows
        split_bytes[res.split] = split_bytes.get(res.split, 0) + res.nbytes
        class_counts.setdefault(res.split, Counter()).update(res.class_counts)
        scenario_counts.setdefault(res.split, Counter()).update(res.scenario_counts)
        skipped.extend(res.skipped)
    if command is None:
        command = _build_command(root, out, options, validation_fraction, seed) + listed.command_words()
    card = render_card(
        config, clip_features(config, options["label_order"]), shards, class_counts, scenario_counts, split_bytes,
        options["label_order"], options["frames"], len(skipped), command, split_lists=listed.describe(),
    )
    (tmp / "README.md").write_text(card, encoding="utf-8")
    report = {
        "config": config,
        "label_order": options["label_order"],
        "frames": options["frames"],
        "counts": counts,
        "lines": sum(counts.values()) + len(skipped),
        "skipped": [{"clip_id": p.clip_id, "split": p.split, "line": p.line, "reason": p.reason, "source": p.source}
                    for p in skipped],
    }
    report.update(listed.report())
    (tmp / "build_report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    nbytes = sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file())
    return BuildResult(out, config, counts, skipped, shards, nbytes, 0.0,
                       frame_count_mismatches=list(listed.mismatches))


def _build_command(root: Any, out: Path, options: Dict[str, Any], validation_fraction: float, seed: int) -> str:
    # Only the options that change the content; paths are shown by name only,
    # so the card (and the build) does not depend on where the archive lives.
    words = ["ferv39k-hf", "build", Path(root).name or "ROOT", "--out", out.name, "--config", options["config"]]
    if options["label_order"] != DEFAULT_LABEL_ORDER:
        words += ["--label-order", options["label_order"]]
    if validation_fraction:
        words += ["--validation-fraction", str(validation_fraction), "--seed", str(seed)]
    if options["on_error"] != "raise":
        words += ["--on-error", options["on_error"]]
    if options["frames"] != "copy":
        words += ["--frames", options["frames"]]
    return " ".join(shlex.quote(w) for w in words)


def run_build_command(args: Any) -> int:
    result = build_dataset_folder(
        args.root, args.out, config=args.config, label_order=args.label_order,
        validation_fraction=args.validation_fraction, seed=args.seed, num_proc=args.num_proc,
        on_error=args.on_error, frames=args.frames, overwrite=args.overwrite,
        train_list=args.train_list, test_list=args.test_list, list_format=args.list_format,
    )
    print(result.summary())
    return 0
