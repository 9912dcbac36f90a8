"""One Parquet shard of a built folder: read its clips, check them, write row groups, hash what was written."""

from __future__ import annotations

import json
import os
import signal
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

from ferv39k_hf.archive.annotations import ClipRecord, Problem
from ferv39k_hf.archive.clipfiles import ClipReader, FrameBatch, numbering_gap
from ferv39k_hf.archive.layout import Layout
from ferv39k_hf.dataset import fingerprint
from ferv39k_hf.dataset.builder import clip_features, make_example, read_or_skip
from ferv39k_hf.dataset.dfer_rows import dfer_features, make_dfer_example
from ferv39k_hf.taxonomy import SCENE_TO_SCENARIO

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
    warnings: List[Problem] = field(default_factory=list)  # clips built whose frame numbers have a gap
    class_counts: Counter = field(default_factory=Counter)
    scenario_counts: Counter = field(default_factory=Counter)


class ShardWriter:
    """Writes one shard: reads clips, checks them, hashes the rows it writes."""

    def __init__(self, layout: Layout, options: Dict[str, Any], tmp_dir: Path):
        self.reader = ClipReader(layout, kind=options["config"], frames=options["frames"])
        self.options = options
        self.features = _features(options)
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
            partial, self.schema, compression="none", write_statistics=_scalar_columns(self.schema),
            use_dictionary=False,
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

    def _write_rows(self, task: ShardTask, writer: Any, digest: Any, result: ShardResult,
                    progress: Optional[Any]) -> None:
        """Rows as Python objects: videos, and frames by reference."""
        config = self.options["config"]
        rows: List[Dict[str, Any]] = []
        nbytes = 0
        for record in task.records:
            row = self._read_row(self.reader, record, result)
            _count(progress)
            if row is None:
                continue
            if config != "videos":
                self._note_gap(record, [item["path"] for item in row["frames"]], result)
            _update_digest(digest, row, config)
            rows.append(row)
            items = [row["video"]] if config == "videos" else row["frames"]
            nbytes += sum(len(item["bytes"] or b"") for item in items)
            if len(rows) == ROWS_PER_GROUP or nbytes >= _MAX_GROUP_BYTES:
                writer.write_table(rows_to_table(rows, self.schema, config))
                rows.clear()
                nbytes = 0
        if rows:
            writer.write_table(rows_to_table(rows, self.schema, config))

    def _write_packed(self, task: ShardTask, writer: Any, digest: Any, result: ShardResult,
                      progress: Optional[Any]) -> None:
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
            self._note_gap(record, batch.paths[first:], result)
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
        if record.scene is None:  # DFEW and MAFW: no scenes (see dataset/dfer_rows.py)
            opts = self.options
            return make_dfer_example(record, fields, opts["dataset"], opts["config"], opts["label_order"],
                                     opts.get("captions", False))
        result.scenario_counts[SCENE_TO_SCENARIO[record.scene]] += 1
        return make_example(record, fields, self.options["label_order"])


    @staticmethod
    def _note_gap(record: ClipRecord, paths: List[str], result: ShardResult) -> None:
        """A clip built with a gap in its frame numbers is named in build_report.json's warnings."""
        gap = numbering_gap(paths)
        if gap:
            result.warnings.append(Problem(record.clip_id, record.split, record.line, gap, record.source))


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


def _features(options: Dict[str, Any]) -> Any:
    """The build's columns: FERV39k's, or a DFEW/MAFW config's (``options["dataset"]``)."""
    if options.get("dataset", "ferv39k") == "ferv39k":
        return clip_features(options["config"], options["label_order"])
    return dfer_features(options["dataset"], options["config"], options["label_order"], options.get("captions", False))


def _scalar_columns(schema: pa.Schema) -> List[str]:
    """The columns that get Parquet statistics: the metadata scalars (FERV39k's _METADATA_COLUMNS)."""
    return [f.name for f in schema if f.name not in ("frames", "video") and not pa.types.is_list(f.type)]


def _metadata_columns(rows: List[Dict[str, Any]], schema: pa.Schema) -> List[pa.Array]:
    names = [name for name in schema.names if name not in ("frames", "video")]  # the media column is last
    return [pa.array([row[name] for row in rows], type=schema.field(name).type) for name in names]


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
    if "scene" not in row:  # DFEW/MAFW rows: every metadata column counts (folds, captions, labels)
        meta = {k: v for k, v in row.items() if k not in ("frames", "video")}
        digest.update(json.dumps(meta, sort_keys=True, ensure_ascii=False).encode() + b"\n")
        return
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


# Worker-process state, set by init_worker in each forkserver (or spawn) worker.
_WORKER: Dict[str, Any] = {}


def init_worker(layout: Layout, options: Dict[str, Any], tmp_dir: Path, progress: Any) -> None:
    """A pool worker's initializer: the ShardWriter it writes with, and where it reports progress."""
    # Ctrl-C reaches the whole process group: the parent stops the pool and says so in one line; a worker
    # that took the KeyboardInterrupt itself would print its own traceback on the way out.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _WORKER["writer"] = ShardWriter(layout, options, tmp_dir)
    _WORKER["progress"] = progress


def write_in_worker(task: ShardTask) -> ShardResult:
    """Write one shard in a pool worker set up by :func:`init_worker`."""
    return _WORKER["writer"].write(task, _WORKER["progress"])
