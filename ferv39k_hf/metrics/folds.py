"""5-fold scoring of a built DFEW or MAFW folder: one predictions file per fold, per-fold and mean ± std WAR/UAR.

Each file k is paired with fold k's test clips (the ``test_fold`` column);
WAR and UAR are computed per class only (these datasets have no scenes), over
the dataset's classes. The mean over folds is what the papers report; its
interval is a percentile bootstrap that resamples the clips of every fold.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ferv39k_hf.dfer_taxonomy import FOLDS, PUBLISHED_FOLDS, facts
from ferv39k_hf.metrics.predictions import PredictionFileError
from ferv39k_hf.metrics.resampling import percentile_interval, resample_cells
from ferv39k_hf.metrics.scoring import class_recalls, confusion_matrix, war_uar

CONFIDENCE = 0.95


@dataclass
class FoldClips:
    """The scored columns of a built DFEW or MAFW folder (no frame is read)."""

    dataset: str
    label_order: str
    words: List[str]
    clip_ids: List[str]
    labels: List[int]
    test_folds: List[Optional[int]]
    synthetic: bool = False  # built from a `ferv39k-hf sample` archive: never ranked among published results


def read_fold_clips(folder: Any) -> Optional[FoldClips]:
    """The clips of a DFEW/MAFW build (its card says ``ferv39k_dataset``); None for any other folder."""
    import pyarrow.parquet as pq

    from ferv39k_hf.dataset.card import read_card, split_files
    from ferv39k_hf.errors import Ferv39kError

    folder = Path(folder)
    try:
        meta = read_card(folder) if (folder / "README.md").is_file() else {}
    except Ferv39kError as err:
        raise PredictionFileError(str(err)) from None
    if meta.get("ferv39k_dataset") not in ("dfew", "mafw"):
        return None
    if meta.get("ferv39k_config") == "compound":
        raise PredictionFileError(f"{folder}: the compound (multi-label) set has no single-label WAR/UAR to score")
    paths = [path for files in split_files(meta, str(folder), str(folder / "README.md")).values() for path in files]
    table = pq.read_table(paths, columns=["clip_id", "label", "test_fold"])
    words = facts(meta["ferv39k_dataset"]).label_names(meta["ferv39k_label_order"])
    return FoldClips(meta["ferv39k_dataset"], meta["ferv39k_label_order"], words,
                     table.column("clip_id").to_pylist(), table.column("label").to_pylist(),
                     table.column("test_fold").to_pylist(), bool(meta.get("ferv39k_synthetic")))


def _clip_id(text: str) -> str:
    """A clip id as written in a predictions file: a path, an .mp4 name or a bare number -> 5 digits."""
    name = re.split(r"[/\\]", str(text).strip().rstrip("/\\"))[-1]
    stem = name[:-4] if name.lower().endswith(".mp4") else name
    return f"{int(stem):05d}" if stem.isdigit() else stem


def _rows(path: Path) -> List[tuple]:
    text = path.read_text(encoding="utf-8-sig")
    if text.lstrip().startswith("{"):
        return [(n, json.loads(line)) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    reader = csv.DictReader(text.splitlines(), skipinitialspace=True)
    return [(reader.line_num, row) for row in reader]


def read_fold_predictions(path: Any, words: Sequence[str], order_given: bool) -> Dict[str, tuple]:
    """clip id -> (class index, line) of a CSV or JSON Lines file of ``clip_id`` and ``prediction``."""
    path = Path(path)
    lower = {w.lower(): i for i, w in enumerate(words)}
    found: Dict[str, tuple] = {}
    for line, row in _rows(path):
        clip, value = row.get("clip_id", row.get("clip")), str(row.get("prediction", "")).strip()
        if clip is None or value == "":
            raise PredictionFileError(f"{path} line {line}: needs clip_id and prediction")
        if value.lower() in lower:
            index = lower[value.lower()]
        elif value.lstrip("-").isdigit() and order_given and 0 <= int(value) < len(words):
            index = int(value)
        else:
            hint = "" if order_given else " (an integer id needs --label-order naming the ids' order)"
            raise PredictionFileError(f"{path} line {line}: prediction {value!r} is not one of "
                                      f"{', '.join(words)}{hint}")
        clip_id = _clip_id(clip)
        if clip_id in found:
            raise PredictionFileError(f"{path} line {line}: clip {clip_id} repeated "
                                      f"(first at line {found[clip_id][1]})")
        found[clip_id] = (index, line)
    return found


def _fold_cm(clips: FoldClips, k: int, predictions: Dict[str, tuple], path: Any, remap: List[int]) -> np.ndarray:
    test = {c: lab for c, lab, f in zip(clips.clip_ids, clips.labels, clips.test_folds) if f == k}
    missing = sorted(set(test) - set(predictions))
    unknown = sorted(set(predictions) - set(test))
    if missing or unknown:
        raise PredictionFileError(
            f"{path}: fold {k}'s test set has {len(test)} clips; {len(missing)} missing ({', '.join(missing[:5])}), "
            f"{len(unknown)} not in it ({', '.join(f'{c} (line {predictions[c][1]})' for c in unknown[:5])})")
    ids = sorted(test)
    return confusion_matrix(predictions=[remap[predictions[c][0]] for c in ids], references=[test[c] for c in ids],
                            num_classes=len(clips.words))


def score_folds(files: Sequence[Any], folder: Any, *, label_order: Optional[str] = None,
                resamples: int = 10_000, seed: int = 0) -> Dict[str, Any]:
    """Score five predictions files (fold 1..5, in order) against a built DFEW or MAFW folder."""
    clips = read_fold_clips(folder)
    if clips is None:
        raise PredictionFileError(f"{folder}: not a DFEW or MAFW folder made by 'ferv39k-hf build'")
    if len(files) != len(FOLDS):
        raise PredictionFileError(f"give {len(FOLDS)} predictions files, one per fold in order 1..5; got {len(files)}")
    info = facts(clips.dataset)
    pred_words = info.label_names(label_order) if label_order else clips.words
    remap = [clips.words.index(w) for w in pred_words]  # prediction ids -> the folder's label ids
    cms = [_fold_cm(clips, k, read_fold_predictions(path, pred_words, label_order is not None), path, remap)
           for k, path in zip(FOLDS, files)]
    per_fold = []
    for k, path, cm in zip(FOLDS, files, cms):
        war, uar = war_uar(cm)
        recalls = class_recalls(cm)
        per_fold.append({"fold": k, "file": str(path), "clips": int(cm.sum()), "war": war, "uar": uar,
                         "per_class_recall": {w: (None if np.isnan(r) else float(r))
                                              for w, r in zip(clips.words, recalls)}})
    wars, uars = np.array([f["war"] for f in per_fold]), np.array([f["uar"] for f in per_fold])
    war_ci, uar_ci = _mean_interval(cms, resamples, seed)
    return {"dataset": clips.dataset, "label_order": clips.label_order, "class_words": clips.words,
            "synthetic": clips.synthetic,
            "folds": per_fold, "war_mean": float(wars.mean()), "war_std": float(wars.std(ddof=1)),
            "uar_mean": float(uars.mean()), "uar_std": float(uars.std(ddof=1)),
            "war_mean_ci": war_ci, "uar_mean_ci": uar_ci,
            "bootstrap": {"resamples": resamples, "seed": seed, "confidence": CONFIDENCE,
                          "method": "percentile bootstrap of the 5-fold mean, clips resampled within each fold"},
            "std": "sample standard deviation over the 5 folds (ddof=1)"}


def _mean_interval(cms: Sequence[np.ndarray], resamples: int, seed: int) -> tuple:
    rng = np.random.default_rng(seed)
    wars, uars = [], []
    for cm in cms:
        k = cm.shape[0]
        draws = resample_cells(cm.ravel(), resamples, rng).reshape(-1, k, k)
        wars.append(np.trace(draws, axis1=1, axis2=2) / cm.sum())
        uars.append(np.nanmean(class_recalls(draws), axis=1))
    return (percentile_interval(np.mean(wars, axis=0), CONFIDENCE),
            percentile_interval(np.mean(uars, axis=0), CONFIDENCE))


def render_folds(report: Dict[str, Any]) -> str:
    """The text ``ferv39k-hf score`` prints for five fold files, with the published 5-fold means ranked."""
    pct = lambda v: f"{100 * v:.2f}"  # noqa: E731
    lines = [f"{report['dataset'].upper()}: 5-fold mean over one predictions file per fold "
             f"(label order {report['label_order']})",
             f"  WAR {pct(report['war_mean'])} ± {pct(report['war_std'])}  "
             f"(95% CI of the mean {pct(report['war_mean_ci'][0])}-{pct(report['war_mean_ci'][1])})",
             f"  UAR {pct(report['uar_mean'])} ± {pct(report['uar_std'])}  "
             f"(95% CI of the mean {pct(report['uar_mean_ci'][0])}-{pct(report['uar_mean_ci'][1])})",
             "  ± is the sample standard deviation over the folds", "", "  fold  clips    WAR    UAR  file"]
    lines += [f"  {f['fold']:>4} {f['clips']:>6} {pct(f['war']):>6} {pct(f['uar']):>6}  {f['file']}"
              for f in report["folds"]]
    if report.get("synthetic"):  # drawn faces, not the dataset: a rank among real results would mean nothing
        return "\n".join(lines + ["", "synthetic data: not ranked against published results (the folder was built "
                                       "from a 'ferv39k-hf sample' archive)."])
    entries = [(m, war, uar, src) for m, war, uar, src in PUBLISHED_FOLDS[report["dataset"]]]
    entries.append(("this run", round(100 * report["war_mean"], 2), round(100 * report["uar_mean"], 2), ""))
    lines += ["", "  published 5-fold means (WAR / UAR), ranked by WAR:"]
    lines += [f"  {m:<12} {war:6.2f} {uar:6.2f}  {src}" for m, war, uar, src in sorted(entries, key=lambda e: -e[1])]
    return "\n".join(lines)


def run_fold_score(args: Any) -> Optional[int]:
    """``ferv39k-hf score F1 .. F5 --dataset DIR`` on a DFEW/MAFW folder; None when DIR is FERV39k's."""
    if read_fold_clips(args.dataset) is None:
        return None
    report = score_folds(args.predictions, args.dataset, label_order=args.label_order, resamples=args.resamples,
                         seed=args.seed)
    print(json.dumps(report, indent=2) if args.json else render_folds(report))
    return 0


def aggregate_folds(results: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Mean and sample std (ddof=1) of WAR and UAR over per-fold results ``[{"fold", "war", "uar", ...}]``."""
    if len(results) < 2:
        raise PredictionFileError(f"a mean ± std over folds needs at least 2 folds, got {len(results)}")
    wars = np.array([float(r["war"]) for r in results])
    uars = np.array([float(r["uar"]) for r in results])
    return {"folds": [dict(r) for r in results], "war_mean": float(wars.mean()), "war_std": float(wars.std(ddof=1)),
            "uar_mean": float(uars.mean()), "uar_std": float(uars.std(ddof=1))}


def run_folds(dataset: Any, train_and_score: Any, folds: Sequence[int] = FOLDS) -> Dict[str, Any]:
    """Run ``train_and_score(split, k)`` on each fold's ``DatasetDict`` (train/test, see ``ferv39k_hf.fold``) and
    aggregate: what an example's ``--fold all`` needs. ``train_and_score`` returns a dict with ``war`` and ``uar``
    (fractions; ``eval_war``/``eval_uar``, as a Trainer's metrics name them, are accepted too).

    Example::

        summary = run_folds(datasets.load_dataset("dfew"), lambda split, k: my_train(split["train"], split["test"]))
        summary["war_mean"], summary["war_std"], [f["war"] for f in summary["folds"]]
    """
    from ferv39k_hf.dataset.dfer_rows import fold

    results = []
    for k in folds:
        metrics = dict(train_and_score(fold(dataset, k), k))
        war, uar = metrics.get("war", metrics.get("eval_war")), metrics.get("uar", metrics.get("eval_uar"))
        if war is None or uar is None:
            raise PredictionFileError(f"fold {k}: train_and_score returned no war/uar (got {sorted(metrics)})")
        results.append({**metrics, "fold": k, "war": float(war), "uar": float(uar)})
    return aggregate_folds(results)
