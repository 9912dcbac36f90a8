"""Archive -> a Hub-ready Parquet folder, written atomically and reproducibly.

Rows come from the builder's own pieces (:func:`~ferv39k_hf.dataset.builder.clip_features`,
:class:`~ferv39k_hf.archive.clipfiles.ClipReader`, :func:`~ferv39k_hf.dataset.builder.make_example`)
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
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from ferv39k_hf.archive.annotations import ClipRecord, Problem
from ferv39k_hf.archive.buildlock import lock_out
from ferv39k_hf.archive.layout import Layout, find_layout
from ferv39k_hf.archive.listcheck import ListsUsed, check_frame_counts
from ferv39k_hf.archive.lists import open_lists
from ferv39k_hf.archive.outdirs import (
    check_build_out,
    discard_partial,
    place_build,
    remove_superseded,
    seal_build,
    start_build,
)
from ferv39k_hf.archive.splits import plan_splits
from ferv39k_hf.dataset.builder import clip_features
from ferv39k_hf.dataset.card import render_card
from ferv39k_hf.dataset.diskspace import check_free_space, is_disk_full, needed_bytes, payload_bytes, shortage
from ferv39k_hf.dataset.shards import deal_rows
from ferv39k_hf.dataset.shardwriter import ShardResult, ShardTask, ShardWriter, init_worker, write_in_worker
from ferv39k_hf.errors import BuildError
from ferv39k_hf.taxonomy import DEFAULT_LABEL_ORDER

# The most clips per shard (the count then rounds up to what ranks divide; see dataset.shards):
# about 300 MB of face crops, fewer of the larger scene frames and videos.
ROWS_PER_SHARD = {"faces": 1024, "scenes": 256, "videos": 512}
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
    warnings: List[Problem] = field(default_factory=list)  # clips built with a gap in their frame numbers

    def summary(self) -> str:
        lines = [f"built {self.out} (config {self.config}) in {self.seconds:.1f} s, {self.nbytes / 1e6:.1f} MB"]
        lines += [f"  {split:<10} {n:>7} clips in {len(self.shards[split])} shard(s)"
                  for split, n in self.counts.items()]
        if self.skipped:
            report = self.out / "build_report.json"
            lines.append(f"  skipped    {len(self.skipped):>7} split-file line(s); see {report}")
            lines += [f"    {p}" for p in self.skipped[:10]]
            if len(self.skipped) > 10:
                lines.append(f"    ... and {len(self.skipped) - 10} more")
        if self.frame_count_mismatches:
            lines.append(f"  frame counts: {len(self.frame_count_mismatches)} list line(s) claim a frame count the "
                         f"archive contradicts (not used); see {self.out / 'build_report.json'}")
            lines += [f"    {m}" for m in self.frame_count_mismatches[:5]]
        if self.warnings:
            lines.append(f"  warning: {len(self.warnings)} clip(s) built with a gap in their frame numbers; see "
                         f"{self.out / 'build_report.json'}")
            lines += [f"    clip {p.clip_id}: {p.reason}" for p in self.warnings[:5]]
        lines += [f"  note: {note}" for note in self.notes]
        lines.append(f'  load it: datasets.load_dataset("{self.out}")')
        return "\n".join(lines)


def plan_shards(records: Dict[str, List[ClipRecord]], config: str) -> List[ShardTask]:
    """Each split's records dealt into shards that ranks and workers can share whole (see dataset.shards)."""
    tasks = []
    for split, recs in records.items():
        shards = deal_rows(recs, ROWS_PER_SHARD[config])
        tasks.extend(ShardTask(split, index, len(shards), list(part)) for index, part in enumerate(shards))
    return tasks


def _run_tasks(layout: Layout, options: Dict[str, Any], tmp_data: Path, tasks: List[ShardTask],
               num_clips: int) -> List[ShardResult]:
    from tqdm.auto import tqdm

    # Not fork: a worker forked while another thread of the caller holds a lock (a notebook, a server, a
    # test runner) waits for ever on its copy of that lock. forkserver forks from a clean single-threaded
    # server; spawn where it is missing. Workers get the layout and options by pickle, not by inheritance.
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    progress = context.Value("q", 0)
    bar = tqdm(total=num_clips, unit="clip", desc=f"build {options['config']}", disable=None)
    results: List[ShardResult] = []
    try:
        if options["num_proc"] <= 1:
            writer = ShardWriter(layout, options, tmp_data)
            for task in tasks:
                results.append(writer.write(task, progress))
                bar.update(progress.value - bar.n)
        else:
            with context.Pool(options["num_proc"], init_worker, (layout, options, tmp_data, progress)) as pool:
                pending = pool.imap(write_in_worker, tasks)
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


run_shard_tasks = _run_tasks  # the shard writing that DFEW and MAFW builds share (dataset/dfer_build.py)


def build_dataset_folder(
    root: "os.PathLike[str] | str",
    out: "os.PathLike[str] | str",
    *,
    config: Optional[str] = None,
    label_order: Optional[str] = None,
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
    dataset: Optional[str] = None,
) -> BuildResult:
    """Build ``out`` from the archive at ``root``; see ``ferv39k-hf build --help``.

    ``train_list`` and ``test_list`` (both or neither) take the splits from
    community split lists instead of the official split files (see
    :func:`ferv39k_hf.archive.lists.open_lists`); the card records them.
    ``dataset`` (``"ferv39k"``, ``"dfew"``, ``"mafw"``; default: told from the
    archive) sends DFEW and MAFW through :mod:`ferv39k_hf.dataset.dfer_build`.
    ``config`` and ``label_order`` default to the dataset's (FERV39k: faces, alphabetical).
    """
    from ferv39k_hf.dataset.dfer_build import build_dfer_folder, resolve_dataset

    dataset = resolve_dataset(root, dataset)
    if dataset != "ferv39k":  # DFEW/MAFW: their configs and label orders, the same shard writer
        if train_list or test_list or validation_fraction:
            raise BuildError(f"train_list/test_list and validation_fraction are FERV39k options; {dataset.upper()} "
                             "builds keep the official folds as columns (see docs/dfew-mafw.md)")
        return build_dfer_folder(root, out, dataset, config=config, label_order=label_order,
                                 num_proc=num_proc, on_error=on_error, frames=frames, overwrite=overwrite)
    config, label_order = config or "faces", label_order or DEFAULT_LABEL_ORDER  # FERV39k's defaults
    started = time.perf_counter()
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    out = Path(out).absolute()
    check_build_out(out, root, overwrite)  # before reading the archive: a refused --out fails at once
    out.parent.mkdir(parents=True, exist_ok=True)
    with lock_out(out):  # held to the end: a second build into the same --out fails at once, naming this one
        layout = find_layout(root)
        layout.part(config)  # fail early, naming the root, if the part is absent
        lists = open_lists(train_list, test_list, list_format)
        plan = plan_splits(layout, validation_fraction=validation_fraction, seed=seed, on_error=on_error,
                           lists=lists)
        listed = ListsUsed(lists, *check_frame_counts(lists, layout, [r for rs in plan.records.values() for r in rs]))
        options = {"config": config, "label_order": label_order, "frames": frames, "on_error": on_error,
                   "num_proc": num_proc}
        result = _build_locked(layout, plan, listed, options, out, root, overwrite, validation_fraction, seed,
                               command)
    result.seconds = time.perf_counter() - started
    return result


def _build_locked(layout: Layout, plan: Any, listed: ListsUsed, options: Dict[str, Any], out: Path, root: Any,
                  overwrite: bool, validation_fraction: float, seed: int, command: Optional[str]) -> BuildResult:
    """The build proper, with ``out``'s lock held: temporary folder, shards, card and report, placement."""
    config = options["config"]
    tasks = plan_shards(plan.records, config)
    tmp, notes, kept = start_build(out, root, overwrite)  # also handles dead builds' leftovers: count their space
    needed = 0
    try:
        needed = needed_bytes(payload_bytes(layout.part(config), plan.records.values())
                              if options["frames"] == "copy" else 0)
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
    result.notes = notes + place_build(tmp, out, overwrite)
    result.notes += remove_superseded(kept)
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
    warnings: List[Problem] = []
    for res in results:  # in task order: split by split, shard by shard
        shards.setdefault(res.split, []).append(f"data/{config}/{res.filename}")
        counts[res.split] = counts.get(res.split, 0) + res.rows
        split_bytes[res.split] = split_bytes.get(res.split, 0) + res.nbytes
        class_counts.setdefault(res.split, Counter()).update(res.class_counts)
        scenario_counts.setdefault(res.split, Counter()).update(res.scenario_counts)
        skipped.extend(res.skipped)
        warnings.extend(res.warnings)
    if command is None:
        command = _build_command(root, out, options, validation_fraction, seed) + listed.command_words()
    card = render_card(
        config, clip_features(config, options["label_order"]), shards, class_counts, scenario_counts, split_bytes,
        options["label_order"], options["frames"], len(skipped), command, split_lists=listed.describe(),
        synthetic=_is_sample(root),
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
        # clips built as they are whose frame numbers have a gap: a frame may have been lost
        "warnings": [{"clip_id": p.clip_id, "split": p.split, "line": p.line, "reason": p.reason, "source": p.source}
                     for p in warnings],
    }
    report.update(listed.report())
    (tmp / "build_report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    nbytes = sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file())
    return BuildResult(out, config, counts, skipped, shards, nbytes, 0.0,
                       frame_count_mismatches=list(listed.mismatches), warnings=warnings)


def _is_sample(root: Any) -> bool:
    from ferv39k_hf.samplemark import is_sample_archive

    return is_sample_archive(root)


def _build_command(root: Any, out: Path, options: Dict[str, Any], validation_fraction: float, seed: int) -> str:
    # Only the options that change the content; paths are shown by name only,
    # so the card (and the build) does not depend on where the archive lives.
    words = ["ferv39k-hf", "build", Path(root).name or "ROOT", "--out", out.name, "--config", options["config"]]
    if options["label_order"] != DEFAULT_LABEL_ORDER:
        words += ["--label-order", options["label_order"]]
    if validation_fraction:
        words += ["--validation-fraction", str(validation_fraction), "--seed", str(seed)]
    return " ".join(shlex.quote(w) for w in words + reading_words(options))


def reading_words(options: Dict[str, Any]) -> List[str]:
    """The card's build command's words for how the archive was read, where not the defaults (every dataset)."""
    words = [] if options["on_error"] == "raise" else ["--on-error", options["on_error"]]
    return words + ([] if options["frames"] == "copy" else ["--frames", options["frames"]])


def run_build_command(args: Any) -> int:
    from ferv39k_hf.dataset.dfer_build import dfer_summary, run_dfer_build

    dfer = run_dfer_build(args)  # None for FERV39k (told from the archive, or --dataset ferv39k)
    if dfer is not None:
        print(dfer_summary(dfer))
        return 0
    result = build_dataset_folder(
        args.root, args.out, config=args.config or "faces", label_order=args.label_order or DEFAULT_LABEL_ORDER,
        validation_fraction=args.validation_fraction, seed=args.seed, num_proc=args.num_proc,
        on_error=args.on_error, frames=args.frames, overwrite=args.overwrite,
        train_list=args.train_list, test_list=args.test_list, list_format=args.list_format, dataset="ferv39k",
    )
    print(result.summary())
    return 0
