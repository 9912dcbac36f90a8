"""DFEW and MAFW through the package's one build path: their fold plan into the shard writer, card and report.

Discovery (:mod:`~ferv39k_hf.archive.dfer_layout`) and the fold lists
(:mod:`~ferv39k_hf.archive.dfer_folds`) are the dataset-specific part; the
rows are read by the same ClipReader and written by the same shard writer as
FERV39k's (:mod:`~ferv39k_hf.dataset.export`), into one split ``clips`` whose
``test_fold``/``train_folds`` columns carry the folds.
"""

from __future__ import annotations

import json
import shlex
import time
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ferv39k_hf.archive.buildlock import lock_out
from ferv39k_hf.archive.dfer_folds import FoldPlan, plan_folds
from ferv39k_hf.archive.dfer_layout import DferLayout, find_dfer_layout
from ferv39k_hf.archive.outdirs import (
    check_build_out,
    discard_partial,
    place_build,
    remove_superseded,
    seal_build,
    start_build,
)
from ferv39k_hf.dataset.dfer_card import dfer_card_metadata, render_dfer_card
from ferv39k_hf.dataset.dfer_rows import dfer_features
from ferv39k_hf.dataset.diskspace import check_free_space, needed_bytes, payload_bytes
from ferv39k_hf.dataset.export import BuildResult, plan_shards, reading_words, run_shard_tasks
from ferv39k_hf.dfer_taxonomy import CLIPS_SPLIT, FOLDS, facts
from ferv39k_hf.errors import BuildError
from ferv39k_hf.samplemark import is_sample_archive


def dfer_options(dataset: str, config: Optional[str], label_order: Optional[str], frames: str, on_error: str,
                 num_proc: int, plan: Optional[FoldPlan] = None) -> Dict[str, Any]:
    """The shard writer's options for a DFEW or MAFW build; the config and order default to the dataset's."""
    info = facts(dataset)
    config = config or info.configs[0]
    if config not in info.configs:
        raise BuildError(f"unknown {info.title} config {config!r}; choose one of {', '.join(info.configs)}")
    order = label_order or info.default_order
    if order not in info.orders:
        raise BuildError(f"unknown {info.title} label order {order!r}; choose one of {', '.join(info.orders)}")
    captions = bool(plan and any(any(r.captions) for r in plan.records)) and config != "videos"
    return {"dataset": dataset, "config": config, "label_order": order, "frames": frames, "on_error": on_error,
            "num_proc": num_proc, "captions": captions}


def fold_sizes(records: List[Any]) -> Dict[int, Tuple[int, int]]:
    """fold -> (train clips, test clips) of the records."""
    return {k: (sum(k in r.train_folds for r in records), sum(r.test_fold == k for r in records)) for k in FOLDS}


def build_dfer_folder(root: Any, out: Any, dataset: str, *, config: Optional[str] = None,
                      label_order: Optional[str] = None, num_proc: int = 1, on_error: str = "raise",
                      frames: str = "copy", overwrite: bool = False) -> BuildResult:
    """Build ``out`` from a DFEW or MAFW archive at ``root``: one row per listed clip, folds as columns."""
    started = time.perf_counter()
    out = Path(out).absolute()
    check_build_out(out, root, overwrite)  # before reading the archive: a refused --out fails at once
    out.parent.mkdir(parents=True, exist_ok=True)
    with lock_out(out):  # held to the end: a second build into the same --out fails at once, naming this one
        layout = find_dfer_layout(root, dataset)
        options = dfer_options(dataset, config, label_order, frames, on_error, num_proc)
        plan = plan_folds(layout, options["config"], on_error)
        options = dfer_options(dataset, config, label_order, frames, on_error, num_proc, plan)
        tasks = plan_shards({CLIPS_SPLIT: plan.records}, "videos" if options["config"] == "videos" else "faces")
        tmp, notes, kept = start_build(out, root, overwrite)  # also handles dead builds' leftovers
        try:
            part = layout.part(options["config"])
            check_free_space(f"building {dataset} {options['config']}", out,
                             needed_bytes(payload_bytes(part, [plan.records]) if frames == "copy" else 0))
            tmp_data = tmp / "data" / options["config"]
            tmp_data.mkdir(parents=True)
            results = run_shard_tasks(layout, options, tmp_data, tasks, len(plan.records))
            result = _finish(tmp, out, layout, plan, results, options, root)
            seal_build(tmp)
        except BaseException:
            discard_partial(tmp)
            raise
        result.notes = notes + plan.notes[:20] + place_build(tmp, out, overwrite)
        result.notes += remove_superseded(kept)
    result.seconds = time.perf_counter() - started
    return result


def _finish(tmp: Path, out: Path, layout: DferLayout, plan: FoldPlan, results: List[Any],
            options: Dict[str, Any], root: Any) -> BuildResult:
    config, dataset = options["config"], options["dataset"]
    shards = [f"data/{config}/{res.filename}" for res in results]
    rows = sum(res.rows for res in results)
    nbytes = sum(res.nbytes for res in results)
    skipped = list(plan.problems) + [p for res in results for p in res.skipped]
    written = {r.clip_id for r in plan.records} - {p.clip_id for res in results for p in res.skipped}
    kept = [r for r in plan.records if r.clip_id in written]
    classes: Counter = Counter(word for r in kept for word in r.labels)
    features = dfer_features(dataset, config, options["label_order"], options["captions"])
    meta = dfer_card_metadata(dataset, config, features, shards, rows, nbytes, options["label_order"],
                              options["frames"], synthetic=is_sample_archive(root))
    source = layout.part(config).kind
    command = _command(root, out, options)
    card = render_dfer_card(meta, classes, fold_sizes(kept), len(plan.unlisted), len(skipped), command, source)
    (tmp / "README.md").write_text(card, encoding="utf-8")
    report = {
        "dataset": dataset, "config": config, "label_order": options["label_order"], "frames": options["frames"],
        "source": source, "counts": {CLIPS_SPLIT: rows},
        "folds": {str(k): list(v) for k, v in fold_sizes(kept).items()},
        "lines": rows + len(skipped),
        "skipped": [p.as_dict() for p in skipped],
        "unlisted": {"count": len(plan.unlisted), "clips": plan.unlisted},
        "encodings": plan.encodings, "notes": plan.notes,
    }
    (tmp / "build_report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    size = sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file())
    result = BuildResult(out, config, {CLIPS_SPLIT: rows}, skipped, {CLIPS_SPLIT: shards}, size, 0.0)
    result.dataset, result.unlisted = dataset, len(plan.unlisted)
    return result


def _command(root: Any, out: Path, options: Dict[str, Any]) -> str:
    words = ["ferv39k-hf", "build", Path(root).name or "ROOT", "--out", out.name, "--dataset", options["dataset"],
             "--config", options["config"], "--label-order", options["label_order"]]
    return " ".join(shlex.quote(w) for w in words + reading_words(options))


def dfer_summary(result: BuildResult) -> str:
    """The build's summary lines, saying which dataset was found and how many clips no list names."""
    lines = [f"found a {result.dataset.upper()} archive", result.summary()]
    lines.insert(1, f"  unlisted   {result.unlisted:>7} clip(s) in the frame folders that no fold list names "
                    "(counted in build_report.json, not rows)")
    return "\n".join(lines)


def resolve_dataset(root: Any, dataset: Optional[str]) -> str:
    """The dataset to read ``root`` as: ``dataset`` when given, else told from the archive's names (FERV39k when
    nothing says otherwise, so that FERV39k's own messages name what is missing)."""
    from ferv39k_hf.archive.dfer_layout import detect_dataset
    from ferv39k_hf.dfer_taxonomy import DATASETS

    if dataset is not None:
        if dataset not in DATASETS:
            raise BuildError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
        return dataset
    return detect_dataset(str(root)) or "ferv39k"


def run_dfer_build(args: Any) -> Optional[BuildResult]:
    """``ferv39k-hf build`` for a DFEW or MAFW archive; None when the archive is FERV39k's."""
    dataset = resolve_dataset(args.root, getattr(args, "dataset", None))
    if dataset == "ferv39k":
        return None
    if getattr(args, "train_list", None) or getattr(args, "validation_fraction", 0):
        raise BuildError(f"--train-list/--test-list and --validation-fraction are FERV39k options; {dataset.upper()} "
                         "builds keep the official folds as columns (see docs/dfew-mafw.md)")
    return build_dfer_folder(args.root, args.out, dataset, config=args.config, label_order=args.label_order,
                             num_proc=args.num_proc, on_error=args.on_error, frames=args.frames,
                             overwrite=args.overwrite)
