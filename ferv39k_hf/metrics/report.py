"""The ``ferv39k-hf score`` command: score a predictions file, or compare two, against a built split.

:func:`score_file` and :func:`compare_files` return plain dicts (what
``--json`` prints); :func:`render_text` and :func:`plot_report` show them.
Intervals are percentile-bootstrap intervals over clips (10,000 resamples,
seed 0 by default); comparisons are paired (see :mod:`.comparison`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from ferv39k_hf.errors import Ferv39kError
from ferv39k_hf.metrics.comparison import compare
from ferv39k_hf.metrics.predictions import (
    PredictionFileError,
    check_same_clips,
    other_splits,
    pair,
    read_predictions,
    read_split,
)
from ferv39k_hf.metrics.published import published_table
from ferv39k_hf.metrics.scoring import score
from ferv39k_hf.taxonomy import CLASS_WORDS, OFFICIAL_SPLIT_TOTALS

DEFAULT_RESAMPLES = 10_000
CONFIDENCE = 0.95


def _file_report(paired, name: str, resamples: int, seed: int) -> Dict[str, Any]:
    result = score(predictions=paired.predictions, references=paired.references, scenes=paired.scenes,
                   bootstrap=resamples, seed=seed, confidence=CONFIDENCE)
    result.pop("class_words")
    return {
        "file": name,
        "clips_scored": int(len(paired.clip_ids)),
        "clips_in_split": int(paired.split_size),
        "missing": paired.missing,
        "unknown": [{"clip_id": clip, "line": line} for clip, line in paired.unknown],
        "unknown_count": int(paired.unknown_count),
        "ignored": paired.ignored,
        **result,
    }


def _header(dataset_dir, split: str, clips, resamples: int, seed: int) -> Dict[str, Any]:
    return {
        "dataset": str(dataset_dir), "split": split, "skipped_by_build": clips.skipped_by_build,
        "synthetic": clips.synthetic,
        "bootstrap": {"method": "percentile bootstrap over clips", "resamples": resamples, "seed": seed,
                      "confidence": CONFIDENCE},
        "class_words": list(CLASS_WORDS),
    }


def _paired(pred, clips, others: Dict[str, str], label_order: Optional[str], allow_partial: bool):
    """A file paired with the split, read row by row keeping only the split's rows (memory follows the split,
    not the file); its clips of the folder's other splits (``others``) are counted as ignored, not errors."""
    predictions = read_predictions(pred, label_order, keep=frozenset(clips.clip_ids), all_unknown=allow_partial,
                                   others=others)
    return pair(predictions, clips, allow_partial=allow_partial)


def score_file(pred, dataset_dir, *, split: str = "test", label_order: Optional[str] = None,
               allow_partial: bool = False, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> Dict[str, Any]:
    """Score a predictions file against ``split`` of a built folder: the dict ``--json`` prints.

    Keys: ``war``, ``uar`` (fractions), ``war_ci``, ``uar_ci``,
    ``per_class_recall``, ``support``, ``per_scene``, ``per_scenario``,
    ``confusion_matrix`` (rows references, columns predictions, in
    ``class_words`` order), ``clips_scored``, ``missing`` (clips of ``split``
    without a prediction), ``ignored`` (other split -> the file's clips of it,
    not scored), ``unknown`` (clips in no split), ``synthetic`` (the folder was
    built from ``ferv39k-hf sample``), and the bootstrap settings. Raises
    ``PredictionFileError`` (one line naming the file and lines) for a file
    that cannot be scored.

    Example (``ferv39k`` a built folder, ``preds.csv`` its test clips' predictions)::

        report = score_file("preds.csv", "ferv39k")
        report["war"], report["uar"], report["war_ci"]
    """
    clips = read_split(dataset_dir, split)
    paired = _paired(pred, clips, other_splits(dataset_dir, split), label_order, allow_partial)
    return {**_header(dataset_dir, split, clips, resamples, seed), **_file_report(paired, str(pred), resamples, seed)}


def compare_files(pred_a, pred_b, dataset_dir, *, split: str = "test", label_order: Optional[str] = None,
                  allow_partial: bool = False, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> Dict[str, Any]:
    """Score two predictions files and compare them, paired over their common clips: ``{"a", "b", "comparison"}``.

    ``comparison`` is :class:`ferv39k_hf.metrics.comparison.Comparison` as a dict
    (differences are A - B). With ``allow_partial`` both files must still
    cover the same clips.

    Example::

        comparison = compare_files("new.csv", "old.csv", "ferv39k")["comparison"]
        comparison["war_diff"], comparison["war_diff_ci"], comparison["war_p"], comparison["mcnemar_p"]
    """
    clips = read_split(dataset_dir, split)
    others = other_splits(dataset_dir, split)  # read once for both files
    paired_a = _paired(pred_a, clips, others, label_order, allow_partial)
    paired_b = _paired(pred_b, clips, others, label_order, allow_partial)
    check_same_clips(paired_a, paired_b)
    result = compare(predictions_a=paired_a.predictions, predictions_b=paired_b.predictions,
                     references=paired_a.references, resamples=resamples, seed=seed, confidence=CONFIDENCE)
    return {
        **_header(dataset_dir, split, clips, resamples, seed),
        "a": _file_report(paired_a, str(pred_a), resamples, seed),
        "b": _file_report(paired_b, str(pred_b), resamples, seed),
        "comparison": {**result.to_dict(), "p_value_test": "paired permutation (sign flip per clip), two-sided",
                       "mcnemar": "exact binomial on discordant clips, two-sided"},
    }


# ---------------------------------------------------------------- text


def _pct(value: Optional[float]) -> str:
    return "   n/a" if value is None else f"{100 * value:6.2f}"


def _ci(interval) -> str:
    return f"[{100 * interval[0]:.2f}, {100 * interval[1]:.2f}]"


def _p(value: float) -> str:
    return f"{value:.4f}" if value >= 1e-4 else f"{value:.1e}"


def _coverage(report: Dict[str, Any]) -> List[str]:
    """What of the file was not scored: other splits' clips (ignored), and PARTIAL only when split clips are missing."""
    lines = [f"  ignored {n} clip(s) of split {name}" for name, n in report.get("ignored", {}).items()]
    if report["unknown_count"]:
        lines.append(f"  ignored {report['unknown_count']} clip(s) that are in no split of the folder")
    if report["missing"]:
        lines.append(f"  PARTIAL: {report['clips_scored']} of {report['clips_in_split']} clips scored; "
                     f"{len(report['missing'])} missing. Not comparable with full-test-set numbers.")
    return lines


def _summary_lines(report: Dict[str, Any]) -> List[str]:
    lines = [f"{report['file']}: {report['clips_scored']} clips", *_coverage(report),
             f"  WAR {_pct(report['war'])} %  95% CI {_ci(report['war_ci'])}",
             f"  UAR {_pct(report['uar'])} %  95% CI {_ci(report['uar_ci'])}  (mean recall of "
             f"{report['uar_classes']} classes)", "", "  per-class recall %   (clips)"]
    for word in CLASS_WORDS:
        lines.append(f"    {word:<9} {_pct(report['per_class_recall'][word])}   ({report['support'][word]})")
    for key, title in (("per_scenario", "scenario"), ("per_scene", "scene")):
        lines += ["", f"  per {title:<29}  WAR %  95% CI             UAR %  clips"]
        for name, entry in report[key].items():
            lines.append(f"    {name:<31}{_pct(entry['war'])}  {_ci(entry['war_ci']):<17}{_pct(entry['uar'])}"
                         f"  {entry['support']}")
    return lines


SYNTHETIC_NOTE = "synthetic data: not ranked against published results"


def _table_lines(entries: List[Dict[str, Any]], rank_by: str, split: str, synthetic: bool = False) -> List[str]:
    if synthetic:  # drawn faces, not FERV39k: a rank among real results would mean nothing
        return ["", f"{SYNTHETIC_NOTE} (the folder was built from a 'ferv39k-hf sample' archive)."]
    official = OFFICIAL_SPLIT_TOTALS.get("test")
    rows = []
    for r in entries:
        note = f"95% CI WAR {_ci(r['war_ci'])}, UAR {_ci(r['uar_ci'])}"
        if split != "test" or r["clips_in_split"] != official or r["missing"]:
            note = (f"NOT comparable: {r['clips_scored']} clips of split {split!r}, "
                    f"not the {official} official test clips")
        rows.append((Path(r["file"]).name, 100 * r["war"], 100 * r["uar"], note))
    return ["", f"Published FERV39k results (official test set, ranked by {rank_by.upper()}), this file marked >:",
            published_table(rows, rank_by=rank_by, markdown=False)]


def _comparison_lines(report: Dict[str, Any]) -> List[str]:
    c = report["comparison"]
    lines = [f"A = {report['a']['file']}, B = {report['b']['file']}: paired over the same {c['clips']} clips"]
    for key in ("a", "b"):
        lines += [f"{key.upper()}:{line}" for line in _coverage(report[key])]
    lines += ["",
              "            A %      B %   A - B %   95% CI of A - B (paired bootstrap)   p (paired permutation)"]
    for key in ("war", "uar"):
        lines.append(f"  {key.upper():<5} {_pct(c[key + '_a'])}   {_pct(c[key + '_b'])}   "
                     f"{100 * c[key + '_diff']:+7.2f}   {_ci(c[key + '_diff_ci']):<37}{_p(c[key + '_p'])}")
    lines.append(f"  McNemar's exact test (WAR): A right and B wrong on {c['a_only']} clips, B right and A wrong on "
                 f"{c['b_only']}: p = {_p(c['mcnemar_p'])}")
    return lines


def _class_lines(report: Dict[str, Any]) -> List[str]:
    lines = ["", "  per-class recall %     A        B"]
    for word in CLASS_WORDS:
        lines.append(f"    {word:<12} {_pct(report['a']['per_class_recall'][word])}   "
                     f"{_pct(report['b']['per_class_recall'][word])}")
    return lines


def render_text(report: Dict[str, Any], rank_by: str = "war", full: bool = False) -> str:
    """The report of :func:`score_file` or :func:`compare_files` as text; every number is named WAR or UAR.

    A comparison shows the comparison alone unless ``full``: then also per-class recall, both files'
    full reports and the published table.
    """
    boot = report["bootstrap"]
    lines = [f"Split {report['split']!r} of {report['dataset']}."]
    if report["skipped_by_build"]:
        lines.append(f"Note: the build skipped {report['skipped_by_build']} {report['split']} clips "
                     "(build_report.json); they are in no score.")
    if "comparison" in report:
        lines += _comparison_lines(report)
        if report.get("synthetic"):
            lines.append(f"  ({SYNTHETIC_NOTE})")
        if not full:
            lines += ["", "Both files' full reports and the published table: --full (or --json)."]
            return "\n".join(lines)
        lines += _class_lines(report)
        entries = [report["a"], report["b"]]
        for key in ("a", "b"):
            lines += ["", *_summary_lines(report[key])]
    else:
        lines += _summary_lines(report)
        entries = [report]
    lines += _table_lines(entries, rank_by, report["split"], bool(report.get("synthetic")))
    lines += ["", f"Intervals: {boot['method']}, {boot['resamples']} resamples, seed {boot['seed']}. "
              "They cover test-set sampling, not training randomness: compare with your seed-to-seed spread "
              "(docs/scoring.md)."]
    return "\n".join(lines)


# ---------------------------------------------------------------- figure


def plot_report(report: Dict[str, Any], path, *, dpi: int = 120) -> Path:
    """Per-class recall and per-scene WAR (with 95% intervals) as a PNG; both files side by side for a comparison."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    entries = [report["a"], report["b"]] if "comparison" in report else [report]
    figure = Figure(figsize=(12, 8), dpi=dpi)
    FigureCanvasAgg(figure)
    top, bottom = figure.subplots(2, 1, gridspec_kw={"height_ratios": [1, 1.3]})
    width = 0.8 / len(entries)
    scenes = list(entries[0]["per_scene"])
    for index, entry in enumerate(entries):
        name = Path(entry["file"]).name
        offsets = np.arange(len(CLASS_WORDS)) + (index - (len(entries) - 1) / 2) * width
        recalls = [100 * (entry["per_class_recall"][w] or 0.0) for w in CLASS_WORDS]
        top.bar(offsets, recalls, width, label=f"{name} (UAR {100 * entry['uar']:.2f} %)")
        wars = np.array([100 * entry["per_scene"][s]["war"] for s in scenes])
        cis = np.array([[100 * v for v in entry["per_scene"][s]["war_ci"]] for s in scenes]).reshape(-1, 2)
        offsets = np.arange(len(scenes)) + (index - (len(entries) - 1) / 2) * width
        bottom.bar(offsets, wars, width, yerr=[wars - cis[:, 0], cis[:, 1] - wars], capsize=2,
                   label=f"{name} (WAR {100 * entry['war']:.2f} %)")
    top.set_xticks(range(len(CLASS_WORDS)), CLASS_WORDS)
    top.set_ylabel("recall %")
    top.set_title("Per-class recall (their mean is UAR)")
    bottom.set_xticks(range(len(scenes)), scenes, rotation=60, ha="right")
    bottom.set_ylabel("WAR %")
    bottom.set_title("WAR per scene, with 95% bootstrap intervals")
    for axes in (top, bottom):
        axes.set_ylim(0, 115)  # room above 100 % for the legend
        axes.set_yticks(range(0, 101, 20))
        axes.legend(loc="upper center", ncol=2, fontsize=8)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, format="png")
    return path


# ---------------------------------------------------------------- the command


def _check_plot_target(plot: Optional[str]) -> None:
    if plot is None:
        return
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise Ferv39kError("--plot needs matplotlib: pip install 'ferv39k-hf[plot]'") from None
    parent = Path(plot).resolve().parent
    if not parent.is_dir():
        raise Ferv39kError(f"--plot {plot}: the folder {parent} does not exist")


def run_score_command(args: Any) -> int:
    """``ferv39k-hf score``: print the report (text or ``--json``), draw ``--plot``; 0 on success."""
    _check_plot_target(args.plot)
    if args.resamples < 1:
        raise PredictionFileError(f"--resamples must be at least 1, got {args.resamples}")
    options = dict(split=args.split, label_order=args.label_order, allow_partial=args.allow_partial,
                   resamples=args.resamples, seed=args.seed)
    if args.compare:
        report = compare_files(args.predictions, args.compare, args.dataset, **options)
    else:
        report = score_file(args.predictions, args.dataset, **options)
    if args.plot:
        plot_report(report, args.plot)
    print(json.dumps(report, indent=2) if args.json else render_text(report, args.rank_by, args.full))
    return 0
