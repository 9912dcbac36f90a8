"""A run's own files beside its model: marked as written, an earlier run's moved aside, evaluation saved, a plot."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

logger = logging.getLogger(__name__)

__all__ = ["RUN_RECORD", "PLOT_FILE", "set_aside_earlier_run", "mark_written", "save_evaluation", "plot_training"]

RUN_RECORD = "ferv39k_run.json"  # which files of the output folder this run wrote, and when it started
PLOT_FILE = "training_curves.png"
PREVIOUS = "previous-run-"


def _stamp(seconds: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(seconds))


def _read_record(path: Path) -> Dict[str, Any]:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: not the run record this package writes ({error}); move it away and rerun") from None
    if not isinstance(record, dict) or not isinstance(record.get("files"), list):
        raise ValueError(f"{path}: not the run record this package writes (no list of files); move it away and rerun")
    return record


def set_aside_earlier_run(output_dir: "os.PathLike[str] | str") -> Optional[Path]:
    """Move the files an earlier run wrote into ``output_dir`` aside, then start this run's record.

    Only the files named in the earlier run's ``ferv39k_run.json`` (evaluation results, predictions,
    ``all_results.json``, model card, plot: what this package and its Trainer wrote) are moved, with
    that record, into ``previous-run-<its start, UTC>/``; weights, checkpoints and anything else stay.
    So a run whose evaluation fails never leaves the earlier run's scores beside its new model, and
    ``all_results.json`` holds one run. Files of the same names without a record (written by
    something else) are left where they are, with a warning. Returns the folder moved into, or None.
    Call it on one process (the main one) when a run starts; :class:`ClipViewTrainer` does.
    """
    folder = Path(output_dir)
    record_path, moved_to = folder / RUN_RECORD, None
    if record_path.is_file():
        record = _read_record(record_path)
        present = [name for name in dict.fromkeys(record["files"])
                   if isinstance(name, str) and "/" not in name and name != RUN_RECORD and (folder / name).is_file()]
        if present:  # else the earlier run left nothing of its own: its record is simply replaced
            started = str(record.get("started") or _stamp(record_path.stat().st_mtime))
            moved_to = _free_name(folder, PREVIOUS + "".join(c for c in started if c.isalnum()))
            moved_to.mkdir()
            for name in present:
                os.replace(folder / name, moved_to / name)
            os.replace(record_path, moved_to / RUN_RECORD)
            logger.warning("%s was used by an earlier run: its %s moved to %s", folder, ", ".join(present), moved_to)
    else:
        unmarked = [name for name in _OUTPUTS if (folder / name).is_file()]
        if unmarked:
            logger.warning("%s holds %s, not marked as written by a run of this package: left as they are, and "
                           "all_results.json is merged into by this run", folder, ", ".join(unmarked))
    folder.mkdir(parents=True, exist_ok=True)
    record = {"started": _stamp(time.time()), "files": []}
    record_path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return moved_to


_OUTPUTS = ("all_results.json", "train_results.json", "eval_results.json", "eval_per_scene.json",
            "eval_predictions.csv", PLOT_FILE)


def _free_name(folder: Path, name: str) -> Path:
    candidate, number = folder / name, 1
    while candidate.exists():
        number += 1
        candidate = folder / f"{name}-{number}"
    return candidate


def mark_written(output_dir: "os.PathLike[str] | str", *names: str) -> None:
    """Add ``names`` (files directly in ``output_dir``) to this run's record, so the next run moves them aside.

    Starts a record if there is none (a run that did not call :func:`set_aside_earlier_run`).
    """
    path = Path(output_dir, RUN_RECORD)
    record = _read_record(path) if path.is_file() else {"started": _stamp(time.time()), "files": []}
    record["files"] = list(dict.fromkeys([*record["files"], *names]))
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, path)


def save_evaluation(trainer: Any, metrics: Dict[str, float], scorer: Any, *, split: str, num_clips: int,
                    protocol: Optional[Dict[str, Any]] = None) -> None:
    """After a successful evaluation: log ``metrics``; write ``eval_results.json`` (and ``eval_*`` into
    ``all_results.json``) and ``eval_per_scene.json`` (the whole score of ``scorer.last``), marked as this run's."""
    trainer.log_metrics("eval", metrics)
    trainer.save_metrics("eval", metrics)
    if trainer.is_world_process_zero():
        report = {"split": split, "num_clips": num_clips, "protocol": protocol, **scorer.last}
        Path(trainer.args.output_dir, "eval_per_scene.json").write_text(json.dumps(report, indent=2) + "\n")
        written = ["eval_results.json", "all_results.json", "eval_per_scene.json"]
        if Path(trainer.args.output_dir, "eval_predictions.csv").is_file():
            written.append("eval_predictions.csv")
        mark_written(trainer.args.output_dir, *written)


def plot_training(output_dir: "os.PathLike[str] | str", log_history: Sequence[Dict[str, Any]]) -> Optional[Path]:
    """``training_curves.png``: the training loss by step, and the evaluation WAR and UAR by step where logged.

    Skipped, with one info line, when matplotlib is not installed or nothing was logged. Returns the path.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.info("matplotlib is not installed: no %s (pip install matplotlib to get one)", PLOT_FILE)
        return None
    loss = [(entry["step"], entry["loss"]) for entry in log_history if "loss" in entry and "step" in entry]
    scores = {key: [(entry["step"], entry[key]) for entry in log_history if key in entry and "step" in entry]
              for key in ("eval_war", "eval_uar")}
    if not loss and not any(scores.values()):
        logger.info("nothing was logged: no %s", PLOT_FILE)
        return None
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    _curve(left, loss, "training loss", "loss")
    for key, points in scores.items():
        _curve(right, points, key.replace("eval_", "").upper(), "evaluation score")
    right.set_ylim(0, 1)
    if any(scores.values()):
        right.legend(loc="lower right")
    figure.tight_layout()
    path = Path(output_dir, PLOT_FILE)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    mark_written(output_dir, PLOT_FILE)
    logger.info("training curves: %s", path)
    return path


def _curve(axes: Any, points: List[tuple], label: str, ylabel: str) -> None:
    if points:
        steps, values = zip(*points)
        axes.plot(steps, values, marker="o" if len(points) < 30 else None, label=label)
    axes.set_xlabel("optimizer step")
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
