"""A paired difference with its uncertainty: bootstrap interval and Wilcoxon signed-rank test (scipy.stats).

Two sets of per-image scores on the same images are compared through their
per-image differences: the mean difference, a 95% percentile interval from a
seeded paired bootstrap over images (``scipy.stats.bootstrap`` with
``paired=True``), and the two-sided Wilcoxon signed-rank p-value of the
differences (``scipy.stats.wilcoxon``; 1.0 when every difference is zero).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats

RESAMPLES = 10_000
CONFIDENCE = 0.95
SEED = 0


@dataclass(frozen=True)
class PairedDifference:
    """mean(a - b) over ``n`` paired images, its 95% bootstrap interval and the Wilcoxon p-value."""

    diff: float
    low: float
    high: float
    p_value: float
    n: int

    @property
    def detectable(self) -> bool:
        """False when the interval contains 0: no detectable difference."""
        return not (self.low <= 0.0 <= self.high)


def _mean_difference(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(a - b, axis=axis)


def paired_difference(
    a: np.ndarray, b: np.ndarray, *, resamples: int = RESAMPLES, seed: int = SEED
) -> PairedDifference:
    """Compare per-image scores ``a`` and ``b`` of the same images (same order)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError(f"paired scores need two equal 1-D arrays of at least 2 values, got {a.shape} and {b.shape}")
    differences = a - b
    diff = float(differences.mean())
    if np.all(differences == differences[0]):  # no spread: the bootstrap is degenerate, the interval a point
        low = high = diff
    else:
        result = stats.bootstrap(
            (a, b),
            _mean_difference,
            paired=True,
            vectorized=True,
            n_resamples=resamples,
            confidence_level=CONFIDENCE,
            method="percentile",
            random_state=np.random.default_rng(seed),
        )
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    if np.all(differences == 0):
        p_value = 1.0
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy's note on ties and zeros: the method it picks handles them
            p_value = float(stats.wilcoxon(differences).pvalue)
    return PairedDifference(diff, low, high, p_value, len(a))
