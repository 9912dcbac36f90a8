"""WAR and UAR for FERV39k, with per-scene and per-scenario breakdowns.

WAR (weighted average recall) is plain accuracy. UAR (unweighted average
recall) is the mean recall over the classes present in the references; on
the official test set that is all 7, and a subset or scene that lacks a
class averages the classes it has (``uar_classes`` counts them). It is *not* scikit-learn's
``recall_score(average="macro")`` without ``labels=``, which also averages in
classes that only appear among the predictions (at recall 0).

Numpy only, so training scripts and the CLI can score without ``evaluate``;
the ``evaluate`` module in ``war_uar/`` wraps :func:`score`. Every function
takes ``predictions`` and ``references`` as keywords, as ``evaluate`` does, so
the scikit-learn argument order (``y_true, y_pred``) cannot be swapped in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ferv39k_hf.errors import Ferv39kError
from ferv39k_hf.metrics.resampling import ResamplingError, check_settings, percentile_interval, resample_cells
from ferv39k_hf.taxonomy import CLASS_WORDS, DEFAULT_LABEL_ORDER, SCENARIOS, SCENE_TO_SCENARIO, SCENES, label_names

# The number of FERV39k classes: ids run 0..NUM_CLASSES-1.
NUM_CLASSES = len(CLASS_WORDS)

Interval = Tuple[float, float]


class ScoringError(Ferv39kError, ValueError):
    """Input that would give a wrong number: the message says which argument and where."""


# ---------------------------------------------------------------- input checks


def as_numpy(values) -> np.ndarray:
    """``values`` (a sequence, array or torch tensor on any device) as a numpy array."""
    if hasattr(values, "detach"):  # a torch tensor, possibly on a GPU or with grad
        values = values.detach().cpu()
    return np.asarray(values)


def checked_class_ids(values, name: str, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """A 1-D int64 array of class ids in 0..num_classes-1, or ScoringError."""
    array = as_numpy(values)
    if array.ndim != 1:
        raise ScoringError(f"{name} must be a 1-D sequence of class ids, got shape {array.shape}")
    if array.size == 0:
        raise ScoringError(f"{name} is empty: there is nothing to score")
    if array.dtype == bool or not np.issubdtype(array.dtype, np.integer):
        raise ScoringError(
            f"{name} must hold integer class ids, got dtype {array.dtype} "
            f"(first value {array[0]!r}); pass argmax of the scores, not the scores"
        )
    bad = np.flatnonzero((array < 0) | (array >= num_classes))
    if bad.size:
        raise ScoringError(
            f"{name}[{bad[0]}] = {array[bad[0]]} is not a class id 0..{num_classes - 1} "
            f"({bad.size} such value(s))"
        )
    return array.astype(np.int64)


def checked_pairs(predictions, references, num_classes: int = NUM_CLASSES) -> Tuple[np.ndarray, np.ndarray]:
    """Predictions and references as checked class-id arrays of one length, or ScoringError."""
    preds = checked_class_ids(predictions, "predictions", num_classes)
    refs = checked_class_ids(references, "references", num_classes)
    if preds.shape != refs.shape:
        raise ScoringError(f"{len(preds)} predictions but {len(refs)} references; they must pair up one to one")
    return preds, refs


def resolve_class_words(
    label_order: Optional[str] = None, class_words: Optional[Sequence[str]] = None
) -> List[str]:
    """The class word of each id: from ``class_words``, else ``label_order`` (alphabetical by default).

    Raises :class:`ScoringError` when ``class_words`` are not the 7 class words or contradict ``label_order``.

    Example:
        >>> resolve_class_words("dfew")[:2]
        ['Happy', 'Sad']
    """
    if class_words is None:
        return label_names(label_order or DEFAULT_LABEL_ORDER)
    words = [str(word) for word in class_words]
    if sorted(words) != sorted(CLASS_WORDS):
        raise ScoringError(f"class_words must be the 7 FERV39k class words in some order, got {words}")
    if label_order is not None and words != label_names(label_order):
        raise ScoringError(f"class_words {words} contradict label_order {label_order!r} ({label_names(label_order)})")
    return words


def _scene_names(scenes, count: int) -> np.ndarray:
    """Scene names (or ClassLabel ids into taxonomy.SCENES), one per example, as a str array."""
    values = list(as_numpy(scenes).tolist()) if hasattr(scenes, "detach") else list(scenes)
    if len(values) != count:
        raise ScoringError(f"{len(values)} scenes but {count} predictions; give one scene per example")
    names = []
    for index, value in enumerate(values):
        if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
            if not 0 <= value < len(SCENES):
                raise ScoringError(f"scenes[{index}] = {value} is not a scene id 0..{len(SCENES) - 1}")
            value = SCENES[value]
        if value not in SCENE_TO_SCENARIO:
            raise ScoringError(f"scenes[{index}] = {value!r} is not a FERV39k scene; known: {', '.join(SCENES)}")
        names.append(value)
    return np.asarray(names, dtype=object)


NO_SCENE = ""  # what scene_column stores for an example given without a scene


def scene_column(scenes, count: int) -> List[str]:
    """Scene names for ``count`` examples, checked: ``scenes`` as names or ids, or ``NO_SCENE`` each if None.

    The evaluate module stores this column with every batch, so the scenes
    travel with their examples through ``add_batch`` and distributed runs.
    Example: ``scene_column([5, "War"], 2) == ["Crime", "War"]``.
    """
    if scenes is None:
        return [NO_SCENE] * count
    return [str(name) for name in _scene_names(scenes, count)]


# ---------------------------------------------------------------- the numbers


def confusion_matrix(*, predictions, references, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Counts, rows = references, columns = predictions, over all ``num_classes`` ids.

    ``predictions`` and ``references``: 1-D integer class ids (lists, numpy or
    torch), one per example. Returns an int64 (num_classes, num_classes) array.

    Example:
        >>> confusion_matrix(predictions=[0, 1, 1], references=[0, 1, 2], num_classes=3).tolist()
        [[1, 0, 0], [0, 1, 0], [0, 1, 0]]
    """
    preds, refs = checked_pairs(predictions, references, num_classes)
    cells = np.bincount(refs * num_classes + preds, minlength=num_classes * num_classes)
    return cells.reshape(num_classes, num_classes)


def class_recalls(cm: np.ndarray) -> np.ndarray:
    """Recall per class (row); NaN for a class with no references.

    ``cm``: a (K, K) confusion matrix, or a stack (..., K, K). Returns float64 (..., K).
    """
    cm = np.asarray(cm)
    support = cm.sum(axis=-1)
    diagonal = np.diagonal(cm, axis1=-2, axis2=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, diagonal / np.maximum(support, 1), np.nan)


def war_uar(cm: np.ndarray) -> Tuple[float, float]:
    """(WAR, UAR) of a confusion matrix; UAR averages the classes present in the references.

    Returns two floats in [0, 1]: WAR = trace / total, UAR = mean of the row recalls.

    Example:
        >>> war_uar([[3, 1], [0, 1]])
        (0.8, 0.875)
    """
    cm = np.asarray(cm)
    total = cm.sum()
    if total == 0:
        raise ScoringError("the confusion matrix is empty: there is nothing to score")
    return float(np.trace(cm) / total), float(np.nanmean(class_recalls(cm)))


def bootstrap_ci(
    *, predictions, references, resamples: int = 1000, seed: int = 0, confidence: float = 0.95
) -> Dict[str, Interval]:
    """Percentile-bootstrap intervals for WAR and UAR: ``{"war_ci": (lo, hi), "uar_ci": (lo, hi)}``.

    Resamples examples with replacement (drawn as multinomial counts over the
    49 confusion cells, the same distribution; see :mod:`.resampling`), so
    10,000 resamples of any number of clips take milliseconds. The same seed
    gives the same interval. A resample that misses a class averages UAR over
    the classes it has, as :func:`war_uar` does.

    Example:
        >>> ci = bootstrap_ci(predictions=[0, 1, 1, 2] * 25, references=[0, 1, 2, 2] * 25, resamples=200)
        >>> low, high = ci["war_ci"]
        >>> low < 0.75 < high
        True
    """
    preds, refs = checked_pairs(predictions, references)
    try:
        check_settings(resamples, confidence)
    except ResamplingError as error:
        raise ScoringError(str(error)) from None
    k, n = NUM_CLASSES, len(refs)
    cm = np.bincount(refs * k + preds, minlength=k * k)
    cms = resample_cells(cm, resamples, np.random.default_rng(seed)).reshape(-1, k, k)
    wars = np.trace(cms, axis1=1, axis2=2) / n
    uars = np.nanmean(class_recalls(cms), axis=1)
    return {"war_ci": percentile_interval(wars, confidence), "uar_ci": percentile_interval(uars, confidence)}


def _summary(preds: np.ndarray, refs: np.ndarray, bootstrap: int, seed: int, confidence: float) -> dict:
    cm = confusion_matrix(predictions=preds, references=refs)
    war, uar = war_uar(cm)
    entry = {"war": war, "uar": uar, "support": int(len(refs)), "uar_classes": int((cm.sum(axis=1) > 0).sum())}
    if bootstrap:
        entry.update(
            bootstrap_ci(predictions=preds, references=refs, resamples=bootstrap, seed=seed, confidence=confidence)
        )
    return entry


def _breakdown(preds, refs, groups: np.ndarray, order: Sequence[str], bootstrap, seed, confidence) -> Dict[str, dict]:
    """Scores of each group present, in ``order``."""
    return {
        name: _summary(preds[groups == name], refs[groups == name], bootstrap, seed, confidence)
        for name in order
        if np.any(groups == name)
    }


def score(
    *,
    predictions,
    references,
    scenes=None,
    label_order: Optional[str] = None,
    class_words: Optional[Sequence[str]] = None,
    bootstrap: int = 0,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict:
    """WAR, UAR, per-class recall, support and confusion matrix; per scene and scenario with ``scenes``.

    ``predictions`` and ``references`` are class ids 0..6 whose words follow
    ``class_words`` or ``label_order`` (alphabetical by default). ``scenes``
    gives each example's scene name (or its id in ``taxonomy.SCENES``, as the
    dataset's ``scene`` column holds it). ``bootstrap`` > 0 adds seeded
    percentile intervals ``war_ci`` and ``uar_ci`` at ``confidence``, overall
    and for every scene and scenario.

    Returns a dict: ``war``, ``uar`` (floats in [0, 1]), ``per_class_recall``
    and ``support`` (class word -> value), ``confusion_matrix`` (7x7 list),
    ``class_words``, ``uar_classes``; with ``scenes`` also ``per_scene`` and
    ``per_scenario`` (name -> ``{war, uar, support, uar_classes}``). Bad input
    raises :class:`ScoringError` naming the argument and position.

    Example:
        >>> result = score(predictions=[0, 1, 2, 2], references=[0, 1, 1, 2], scenes=["Crime"] * 4)
        >>> result["war"], round(result["uar"], 4), result["per_scenario"]["Strong-Interactive Activities"]["war"]
        (0.75, 0.8333, 0.75)
    """
    preds, refs = checked_pairs(predictions, references)
    words = resolve_class_words(label_order, class_words)
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, (int, np.integer)) or bootstrap < 0:
        raise ScoringError(f"bootstrap is the number of resamples (0 = off), got {bootstrap!r}")
    if not 0 < confidence < 1:
        raise ScoringError(f"confidence must lie strictly between 0 and 1, got {confidence!r}")
    scene_names = None if scenes is None else _scene_names(scenes, len(refs))
    cm = confusion_matrix(predictions=preds, references=refs)
    overall = _summary(preds, refs, bootstrap, seed, confidence)
    result = {"war": overall.pop("war"), "uar": overall.pop("uar")}
    result["per_class_recall"] = {w: (None if np.isnan(r) else float(r)) for w, r in zip(words, class_recalls(cm))}
    result["support"] = {w: int(n) for w, n in zip(words, cm.sum(axis=1))}
    result["confusion_matrix"] = cm.tolist()
    result["class_words"] = words
    result["uar_classes"] = overall["uar_classes"]
    result.update((key, overall[key]) for key in ("war_ci", "uar_ci") if key in overall)
    if scene_names is not None:
        scenarios = np.asarray([SCENE_TO_SCENARIO[s] for s in scene_names], dtype=object)
        result["per_scene"] = _breakdown(preds, refs, scene_names, SCENES, bootstrap, seed, confidence)
        result["per_scenario"] = _breakdown(preds, refs, scenarios, SCENARIOS, bootstrap, seed, confidence)
    return result


# ---------------------------------------------------------------- figure


def plot_confusion_matrix(
    cm, class_words: Sequence[str], path: Union[str, Path], *, title: Optional[str] = None, dpi: int = 150
) -> Path:
    """Write a row-normalised confusion matrix as a PNG (rows: references, columns: predictions).

    Each row shows the share of that class's clips given each prediction, so
    the diagonal holds the per-class recalls. Needs matplotlib
    (``pip install ferv39k-hf[plot]``); pyplot's global state is not touched.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError("plot_confusion_matrix needs matplotlib: pip install 'ferv39k-hf[plot]'") from error
    counts = np.asarray(cm)
    words = [str(word) for word in class_words]
    if counts.ndim != 2 or counts.shape != (len(words), len(words)) or (counts < 0).any():
        raise ScoringError(f"cm must be a non-negative {len(words)}x{len(words)} matrix, got shape {counts.shape}")
    support = counts.sum(axis=1)
    shares = counts / np.maximum(support, 1)[:, None]

    figure = Figure(figsize=(1.0 + 0.9 * len(words), 0.8 + 0.8 * len(words)), dpi=dpi)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of the reference class")
    ticks = range(len(words))
    axes.set_xticks(ticks, words, rotation=45, ha="right")
    axes.set_yticks(ticks, [f"{word} (n={n})" for word, n in zip(words, support)])
    axes.set_xlabel("prediction")
    axes.set_ylabel("reference")
    for row in ticks:
        for col in ticks:
            value = shares[row, col]
            axes.text(col, row, f"{value:.0%}", ha="center", va="center", fontsize=8,
                      color="white" if value > 0.5 else "black")
    if title:
        axes.set_title(title)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, format="png")
    return path
