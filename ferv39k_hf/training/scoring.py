"""WAR/UAR for a Trainer (``compute_metrics``), and the per-clip predictions file that ``ferv39k-hf score`` reads."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ferv39k_hf.metrics import score
from ferv39k_hf.taxonomy import CLASS_WORDS, SCENES

__all__ = ["ClipScorer", "PREDICTIONS_FILE", "write_predictions"]

PREDICTIONS_FILE = "eval_predictions.csv"  # beside the checkpoint, one row per scored clip


class ClipScorer:
    """``compute_metrics`` for :class:`~transformers.Trainer`: WAR, UAR and the WAR/UAR of each scenario.

    ``scenes`` are the evaluated clips' scenes in the order the Trainer scores them (the split's
    ``scene`` column; ``None`` scores without the per-scene breakdown); ``labels`` the class words in
    the checkpoint's id order. After each call, ``last`` holds the whole score (per class, per scene,
    confusion matrix; :func:`ferv39k_hf.metrics.score`) and ``last_predictions`` the (clips, classes)
    array the Trainer passed, for :func:`write_predictions`.

    Example::

        scorer = ClipScorer(test["scene"], test.features["label"].names)
        trainer = ClipViewTrainer(..., eval_dataset=test, compute_metrics=scorer)
        trainer.evaluate()  # {"eval_war": ..., "eval_uar": ..., "eval_war_daily_life": ..., ...}
    """

    def __init__(self, scenes: Optional[Sequence[Any]], labels: Sequence[str]):
        self.scenes, self.labels = scenes, list(labels)
        self.last: Dict[str, Any] = {}
        self.last_predictions: Optional[np.ndarray] = None
        self.last_references: Optional[np.ndarray] = None

    def __call__(self, eval_pred) -> Dict[str, float]:
        """WAR/UAR (and per scenario) of an ``EvalPrediction`` whose predictions are one row of scores per clip."""
        self.last_predictions = np.asarray(eval_pred.predictions)
        self.last_references = np.asarray(eval_pred.label_ids)
        predictions = np.argmax(self.last_predictions, axis=1)
        self.last = score(predictions=predictions, references=self.last_references,
                          scenes=None if self.scenes is None else list(self.scenes), class_words=self.labels)
        metrics = {"war": self.last["war"], "uar": self.last["uar"]}
        for scenario, entry in self.last.get("per_scenario", {}).items():
            slug = scenario.lower().replace(" ", "_").replace("-", "_")
            metrics[f"war_{slug}"], metrics[f"uar_{slug}"] = entry["war"], entry["uar"]
        return metrics


def _scene_name(scene: Any) -> Any:
    if isinstance(scene, (int, np.integer)) and 0 <= int(scene) < len(SCENES):
        return SCENES[int(scene)]
    return scene


def write_predictions(path: "os.PathLike[str] | str", clip_ids: Sequence[str], scenes: Sequence[Any],
                      references: Sequence[int], scores: np.ndarray, labels: Sequence[str],
                      ranks: Optional[Sequence[int]] = None) -> Path:
    """Write one CSV row per clip in the format ``ferv39k-hf score`` reads (docs/scoring.md).

    Columns: ``clip_id``, ``scene``, ``label`` and ``prediction`` (class words), then, when the
    classes are FERV39k's seven, ``p_Angry`` .. ``p_Surprise`` (the softmax of ``scores``, views
    averaged), and ``rank`` (the process that scored the clip) when ``ranks`` is given. ``scores``
    is (clips, classes) in ``labels`` order: logits or log-probabilities. Written to a temporary
    name and renamed, so a reader never sees half a file. Returns the path.
    """
    path = Path(path)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape != (len(clip_ids), len(labels)):
        raise ValueError(f"{path}: scores of shape {scores.shape} for {len(clip_ids)} clips and {len(labels)} classes")
    probabilities = np.exp(scores - scores.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    columns = ["clip_id", "scene", "label", "prediction"]
    seven = sorted(labels) == sorted(CLASS_WORDS)
    if seven:
        columns += [f"p_{word}" for word in CLASS_WORDS]
    if ranks is not None:
        columns.append("rank")
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(columns)
        for index, clip_id in enumerate(clip_ids):
            row: List[Any] = [clip_id, _scene_name(scenes[index]), labels[int(references[index])],
                              labels[int(np.argmax(scores[index]))]]
            if seven:
                row += [f"{probabilities[index, labels.index(word)]:.8f}" for word in CLASS_WORDS]
            if ranks is not None:
                row.append(ranks[index])
            writer.writerow(row)
    os.replace(partial, path)
    return path
