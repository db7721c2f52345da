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


SEED_RESAMPLES = 4_000  # two-level resamples (seeds, then images): the interval's ends move by < 0.001 beyond this


@dataclass(frozen=True)
class SeedDifference:
    """mean(a) - mean(b) over training runs and test images, with a two-level (hierarchical) 95% bootstrap interval.

    ``includes_training_noise`` is True when both sides have at least 2 runs (seeds): only then do the resampled
    seeds carry the run-to-run spread, and only then may the interval be called a detectable difference.
    """

    diff: float
    low: float
    high: float
    n_seeds_a: int
    n_seeds_b: int
    n_images: int

    @property
    def includes_training_noise(self) -> bool:
        return self.n_seeds_a >= 2 and self.n_seeds_b >= 2

    @property
    def excludes_zero(self) -> bool:
        return not (self.low <= 0.0 <= self.high)

    @property
    def detectable(self) -> bool:
        return self.includes_training_noise and self.excludes_zero


def _image_weights(rng: np.random.Generator, resamples: int, n_images: int) -> np.ndarray:
    """How often each test image is drawn in each resample (resamples x images), divided by the draw count."""
    picks = rng.integers(0, n_images, size=(resamples, n_images))
    offsets = np.arange(resamples)[:, None] * n_images
    counts = np.bincount((picks + offsets).ravel(), minlength=resamples * n_images)
    return counts.reshape(resamples, n_images) / n_images


def _seed_means(rng: np.random.Generator, run_means: np.ndarray) -> np.ndarray:
    """Resample the runs (columns) with replacement in every row and average them: one value per resample."""
    resamples, runs = run_means.shape
    picks = rng.integers(0, runs, size=(resamples, runs))
    return np.take_along_axis(run_means, picks, axis=1).mean(axis=1)


def seed_difference(
    a: np.ndarray,
    b: np.ndarray,
    *,
    same_runs: bool = False,
    resamples: int = SEED_RESAMPLES,
    seed: int = SEED,
) -> SeedDifference:
    """Compare per-image scores of several training runs: ``a`` (runs x images) minus ``b`` (runs x images).

    Each resample draws the runs of each side with replacement (seeds), then the test images with replacement,
    the same images for every run (they are paired across all runs), and takes the difference of the two means.
    ``same_runs``: a and b come from the same runs (two models of one recipe), so one draw of runs serves both.
    The interval is the 2.5th and 97.5th percentile of the resampled differences.
    """
    a, b = np.atleast_2d(np.asarray(a, dtype=np.float64)), np.atleast_2d(np.asarray(b, dtype=np.float64))
    if a.shape[1] != b.shape[1] or a.shape[1] < 2:
        raise ValueError(f"runs x images tables need the same images (at least 2), got {a.shape} and {b.shape}")
    if same_runs and a.shape != b.shape:
        raise ValueError(f"same_runs needs tables of one shape, got {a.shape} and {b.shape}")
    rng = np.random.default_rng(seed)
    weights = _image_weights(rng, resamples, a.shape[1])
    if same_runs:
        resampled = _seed_means(rng, weights @ (a - b).T)
    else:
        resampled = _seed_means(rng, weights @ a.T) - _seed_means(rng, weights @ b.T)
    low, high = np.quantile(resampled, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
    diff = float(a.mean(axis=1).mean() - b.mean(axis=1).mean())
    return SeedDifference(diff, float(low), float(high), a.shape[0], b.shape[0], a.shape[1])
