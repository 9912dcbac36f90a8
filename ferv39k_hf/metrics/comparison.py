"""Paired comparison of two models on the same clips: WAR and UAR differences, intervals, p-values.

Both models are scored on the same test clips, so the comparison is paired:

- intervals for A - B come from a paired bootstrap (clips resampled with
  replacement, the same resampled clips for both models);
- p-values come from a paired permutation test (also called approximate
  randomisation): under "no difference", A's and B's predictions of a clip are
  exchangeable, so each clip's pair is swapped with probability 1/2. Its null
  is exactly the hypothesis being tested, and its p-value is valid at any
  number of clips, where a bootstrap p-value needs the resampled differences
  re-centred on an assumed null. Only clips the two models disagree on
  (one right, one wrong) move the statistic;
- McNemar's exact test for WAR: a two-sided binomial test with p = 1/2 on the
  discordant clips. It is the exact version of the permutation test for WAR.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Tuple

import numpy as np

from ferv39k_hf.metrics.resampling import ResamplingError, check_settings, percentile_interval, resample_cells
from ferv39k_hf.metrics.scoring import NUM_CLASSES, ScoringError, checked_pairs

Interval = Tuple[float, float]


@dataclass(frozen=True)
class Comparison:
    """Model A against model B on the same clips; every rate is a fraction in [0, 1], differences are A - B.

    ``war_p`` and ``uar_p`` are two-sided paired permutation p-values;
    ``mcnemar_p`` is McNemar's exact two-sided p-value for WAR, from
    ``a_only`` (clips A gets right and B wrong) and ``b_only``. The intervals
    are paired-bootstrap percentile intervals at ``confidence``.

    Example:
        >>> result = compare(predictions_a=[0, 1, 1], predictions_b=[0, 1, 1], references=[0, 1, 2])
        >>> result.war_diff, result.war_p, result.mcnemar_p, result.to_dict()["war_diff_ci"]
        (0.0, 1.0, 1.0, [0.0, 0.0])
    """

    clips: int
    war_a: float
    war_b: float
    uar_a: float
    uar_b: float
    war_diff: float
    uar_diff: float
    war_diff_ci: Interval
    uar_diff_ci: Interval
    war_p: float
    uar_p: float
    a_only: int
    b_only: int
    mcnemar_p: float
    uar_classes: int
    resamples: int
    seed: int
    confidence: float

    def to_dict(self) -> dict:
        """The fields as a plain dict (intervals as lists), ready for ``json.dumps``."""
        return {key: (list(value) if isinstance(value, tuple) else value) for key, value in asdict(self).items()}


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """McNemar's exact two-sided p-value: ``min(1, 2 P(X <= min(a_only, b_only)))``, X ~ Binomial(a_only + b_only, 1/2).

    Computed with exact integers, so it is right for any count (no normal
    approximation, no underflow). Equal counts give 1.

    Example:
        >>> mcnemar_exact(1, 5)  # 2 * (C(6,0) + C(6,1)) / 2**6
        0.21875
    """
    for name, value in (("a_only", a_only), ("b_only", b_only)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ScoringError(f"{name} must be a non-negative count of clips, got {value!r}")
    total, low = int(a_only) + int(b_only), min(int(a_only), int(b_only))
    if total == 0:
        return 1.0
    term = tail = 1  # C(total, 0); each next binomial coefficient from the last, in exact integers
    for k in range(low):
        term = term * (total - k) // (k + 1)
        tail += term
    return min(1.0, 2 * tail / 2**total)


def _outcome_cells(preds_a: np.ndarray, preds_b: np.ndarray, refs: np.ndarray) -> np.ndarray:
    """Clip counts (classes, A right, B right): an int64 array (7, 2, 2)."""
    right_a = (preds_a == refs).astype(np.int64)
    right_b = (preds_b == refs).astype(np.int64)
    cells = np.bincount(refs * 4 + right_a * 2 + right_b, minlength=NUM_CLASSES * 4)
    return cells.reshape(NUM_CLASSES, 2, 2)


def _rates(cells: np.ndarray) -> Tuple[np.ndarray, ...]:
    """WAR and UAR of A and of B from cells (..., 7, 2, 2); UAR over the classes with clips."""
    support = cells.sum(axis=(-1, -2))
    right_a = cells[..., 1, :].sum(axis=-1)
    right_b = cells[..., :, 1].sum(axis=-1)
    clips = support.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall_a = np.where(support > 0, right_a / np.maximum(support, 1), np.nan)
        recall_b = np.where(support > 0, right_b / np.maximum(support, 1), np.nan)
    return (right_a.sum(axis=-1) / clips, right_b.sum(axis=-1) / clips,
            np.nanmean(recall_a, axis=-1), np.nanmean(recall_b, axis=-1))


def _permutation_p(cells: np.ndarray, observed: Tuple[float, float], resamples: int,
                   rng: np.random.Generator) -> Tuple[float, float]:
    """Two-sided sign-flip p-values for the WAR and UAR differences, with the +1 correction (never 0)."""
    support = cells.sum(axis=(1, 2))
    discordant = cells[:, 1, 0] + cells[:, 0, 1]
    # After swapping each discordant clip's pair with probability 1/2, the number A gets right is Binomial(d, 1/2).
    a_wins = rng.binomial(discordant, 0.5, size=(int(resamples), NUM_CLASSES))
    net = 2 * a_wins - discordant  # per class: A's right clips minus B's, after the swaps
    present = support > 0
    war = net.sum(axis=1) / support.sum()
    uar = (net[:, present] / support[present]).mean(axis=1)
    tolerance = 1e-12  # a permuted difference equal to the observed one counts as at least as extreme
    p_values = []
    for permuted, value in ((war, observed[0]), (uar, observed[1])):
        extreme = int(np.count_nonzero(np.abs(permuted) >= abs(value) - tolerance))
        p_values.append((extreme + 1) / (int(resamples) + 1))
    return p_values[0], p_values[1]


def compare(
    *,
    predictions_a,
    predictions_b,
    references,
    resamples: int = 10_000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Comparison:
    """Compare model A with model B on the same clips, paired; see the module docstring for the tests.

    ``predictions_a``, ``predictions_b`` and ``references`` are 1-D class ids
    0..6 (lists, numpy arrays or tensors), one per clip, in the same clip order
    and the same label order. ``resamples`` is used both for the bootstrap and
    for the permutation test; ``seed`` makes both repeatable.

    Returns a :class:`Comparison`. Bad input raises ``ScoringError``.

    Example:
        >>> labels = [0, 1, 2, 3] * 50
        >>> result = compare(predictions_a=labels, predictions_b=[0, 1, 0, 0] * 50, references=labels)
        >>> result.war_diff, result.a_only, result.b_only, result.war_p < 0.001, result.mcnemar_p < 0.001
        (0.5, 100, 0, True, True)
        >>> low, high = result.war_diff_ci
        >>> low <= 0.5 <= high
        True
    """
    preds_a, refs = checked_pairs(predictions_a, references)
    preds_b, _ = checked_pairs(predictions_b, references)
    try:
        check_settings(resamples, confidence)
    except ResamplingError as error:
        raise ScoringError(str(error)) from None
    cells = _outcome_cells(preds_a, preds_b, refs)
    war_a, war_b, uar_a, uar_b = (float(value) for value in _rates(cells))
    rng = np.random.default_rng(seed)
    draws = resample_cells(cells.ravel(), resamples, rng).reshape(-1, NUM_CLASSES, 2, 2)
    boot_war_a, boot_war_b, boot_uar_a, boot_uar_b = _rates(draws)
    war_p, uar_p = _permutation_p(cells, (war_a - war_b, uar_a - uar_b), resamples, rng)
    a_only, b_only = int(cells[:, 1, 0].sum()), int(cells[:, 0, 1].sum())
    return Comparison(
        clips=int(len(refs)),
        war_a=war_a, war_b=war_b, uar_a=uar_a, uar_b=uar_b,
        war_diff=war_a - war_b, uar_diff=uar_a - uar_b,
        war_diff_ci=percentile_interval(boot_war_a - boot_war_b, confidence),
        uar_diff_ci=percentile_interval(boot_uar_a - boot_uar_b, confidence),
        war_p=war_p, uar_p=uar_p,
        a_only=a_only, b_only=b_only, mcnemar_p=mcnemar_exact(a_only, b_only),
        uar_classes=int((cells.sum(axis=(1, 2)) > 0).sum()),
        resamples=int(resamples), seed=int(seed), confidence=float(confidence),
    )
