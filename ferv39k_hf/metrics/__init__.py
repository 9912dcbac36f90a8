"""Scoring FERV39k predictions: WAR, UAR, per-class, per-scene and per-scenario.

``WAR_UAR`` is the path of the ``evaluate`` metric module shipped with the
package, so ``evaluate.load(ferv39k_hf.metrics.WAR_UAR)`` works offline. The
numbers come from :mod:`.scoring` (numpy only), which can be used without
``evaluate``.
"""

from __future__ import annotations

from pathlib import Path

from .scoring import (
    NUM_CLASSES,
    ScoringError,
    average_views,
    bootstrap_ci,
    class_recalls,
    clip_labels,
    confusion_matrix,
    plot_confusion_matrix,
    resolve_class_words,
    scenes_from_clip_ids,
    score,
    war_uar,
)

# The path of the evaluate metric module shipped with the package: evaluate.load(WAR_UAR) works offline.
WAR_UAR: str = str(Path(__file__).resolve().parent / "war_uar" / "war_uar.py")

__all__ = [
    "WAR_UAR",
    "NUM_CLASSES",
    "ScoringError",
    "average_views",
    "bootstrap_ci",
    "class_recalls",
    "clip_labels",
    "confusion_matrix",
    "plot_confusion_matrix",
    "resolve_class_words",
    "scenes_from_clip_ids",
    "score",
    "war_uar",
]
