"""Bootstrap resampling of clips, drawn as multinomial counts over the outcome cells the statistic reads.

WAR and UAR depend on a test set only through how many clips fall in each
cell of the confusion matrix (or, for a paired comparison, in each cell of
class x model A right x model B right). Resampling n clips with replacement
gives the cells counts distributed as Multinomial(n, cell counts / n), so
drawing those counts directly is the same bootstrap, exactly in distribution,
at a cost that does not grow with the number of clips: 10,000 resamples of the
7,847 test clips take milliseconds instead of seconds.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np

from ferv39k_hf.errors import Ferv39kError


class ResamplingError(Ferv39kError, ValueError):
    """A resampling setting that cannot give an interval or a p-value."""


def check_settings(resamples: int, confidence: float) -> None:
    """Raise ResamplingError unless ``resamples`` is a positive int and 0 < ``confidence`` < 1."""
    if isinstance(resamples, bool) or not isinstance(resamples, (int, np.integer)) or resamples < 1:
        raise ResamplingError(f"bootstrap resamples must be a positive integer, got {resamples!r}")
    if not 0 < confidence < 1:
        raise ResamplingError(f"confidence must lie strictly between 0 and 1, got {confidence!r}")


def resample_cells(counts, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """``resamples`` bootstrap draws of the cell counts: an int64 array (resamples, cells).

    ``counts`` is a 1-D array of non-negative cell counts summing to n; every
    row of the result sums to n too. Example: ``resample_cells([3, 1], 5, rng)``
    gives 5 rows like ``[4, 0]``, ``[2, 2]``.
    """
    counts = np.asarray(counts, dtype=np.int64).ravel()
    total = int(counts.sum())
    if total <= 0 or (counts < 0).any():
        raise ResamplingError(f"cell counts must be non-negative with a positive sum, got {counts.tolist()}")
    return rng.multinomial(total, counts / total, size=int(resamples)).astype(np.int64)


def percentile_interval(values: np.ndarray, confidence: float) -> Tuple[float, float]:
    """The central ``confidence`` percentile interval of ``values`` (linear interpolation), as floats."""
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(np.asarray(values, dtype=np.float64), [tail, 100 - tail])
    return float(low), float(high)
