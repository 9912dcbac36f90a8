"""Scoring FERV39k predictions: WAR, UAR, per-class, per-scene and per-scenario; comparing two models.

``WAR_UAR`` is the path of the ``evaluate`` metric module shipped with the
package, so ``evaluate.load(ferv39k_hf.metrics.WAR_UAR)`` works offline. The
numbers come from :mod:`.scoring` (numpy only), which can be used without
``evaluate``. :func:`compare` tests two models on the same clips (paired
bootstrap intervals, permutation p-values, McNemar); :data:`PUBLISHED` holds
the published results; :func:`score_file` and :func:`compare_files` are the
``ferv39k-hf score`` command as functions.
"""

from __future__ import annotations

from pathlib import Path

from ferv39k_hf.metrics.comparison import Comparison, compare, mcnemar_exact
from ferv39k_hf.metrics.published import PUBLISHED, PublishedResult, published_table
from ferv39k_hf.metrics.report import compare_files, score_file
from ferv39k_hf.metrics.scoring import (
    NUM_CLASSES,
    ScoringError,
    bootstrap_ci,
    class_recalls,
    confusion_matrix,
    plot_confusion_matrix,
    resolve_class_words,
    score,
    war_uar,
)
from ferv39k_hf.metrics.views import average_views, clip_labels, scenes_from_clip_ids

# The path of the evaluate metric module shipped with the package: evaluate.load(WAR_UAR) works offline.
WAR_UAR: str = str(Path(__file__).resolve().parent / "war_uar" / "war_uar.py")

__all__ = [
    "WAR_UAR",
    "PUBLISHED",
    "Comparison",
    "PublishedResult",
    "compare",
    "compare_files",
    "mcnemar_exact",
    "published_table",
    "score_file",
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
