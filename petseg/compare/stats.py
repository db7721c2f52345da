"""Differences with their uncertainty: one run a side over test images, and several runs (seeds) a side.

One run a side (:func:`paired_difference`): two sets of per-image scores on the
same images are compared through their per-image differences: the mean
difference, a 95% percentile interval from a seeded paired bootstrap over images
(``scipy.stats.bootstrap`` with ``paired=True``), and the two-sided Wilcoxon
signed-rank p-value of the differences (``scipy.stats.wilcoxon``; 1.0 when every
difference is zero).

Several runs a side (:func:`seed_difference`): a Student-t interval over seeds
and test images from a variance-components model of runs x images, calibrated
at 2 to 8 seeds (tests/test_calibration.py runs the A/A check), with the
smallest detectable difference (``mde``), the seeds a given difference needs,
and the probability of improvement over seeds.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np
from scipy import special, stats

from petseg.compare.variance import Components, Spread, estimate

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


# --- Seed-level differences: training runs x test images (the variance: petseg.compare.variance) ---------------

POWER = 0.8  # the power at which the smallest detectable difference (mde) is stated
MAX_SEEDS = 1_000  # seeds_needed searches up to this many seeds per side
NONCENTRALITY_LIMIT = 200.0  # P(a > b) = Phi(nc / scale ...) is 0 or 1 to double precision well before this


def _detectable(spread: Spread, alpha: float, power: float = POWER) -> float:
    """The true difference a two-sided test at level ``alpha`` detects with probability ``power``: (t_(1 - alpha/2)
    + t_power) x se, each quantile the Cochran-Cox mix of :class:`Spread`."""
    return (spread.quantile(1 - alpha / 2) + spread.quantile(power)) * math.sqrt(spread.variance)


@dataclass(frozen=True)
class SeedDifference:
    """mean(a) - mean(b) over training runs and test images, with a 95% interval over both.

    The interval is diff +- q x se, q the Cochran-Cox mix of the runs' and the images' Student-t quantiles (see
    petseg.compare.variance). ``includes_training_noise`` is True when both sides have at least 2 runs
    (seeds): only then does the interval carry the run-to-run spread, and only then may it be called a
    detectable difference. ``alpha`` is the level the verdict uses: 0.05, or 0.05 / m as one of a family of m
    comparisons (:meth:`adjusted`, Bonferroni).
    """

    diff: float
    low: float
    high: float
    n_seeds_a: int
    n_seeds_b: int
    n_images: int
    spread: Spread
    alpha: float = 1 - CONFIDENCE
    family: int = 1  # the comparisons this one is corrected over (Bonferroni), 1 when none
    runs_a: tuple[float, ...] = field(default=(), repr=False)  # each run's mean (of a - b when paired)
    runs_b: tuple[float, ...] = field(default=(), repr=False)
    components: Components | None = field(default=None, repr=False, compare=False)

    @property
    def includes_training_noise(self) -> bool:
        return self.n_seeds_a >= 2 and self.n_seeds_b >= 2

    @property
    def paired(self) -> bool:
        """Two models of the same runs (``same_runs``): ``runs_a`` holds each run's a - b."""
        return not self.runs_b

    @property
    def se(self) -> float:
        return math.sqrt(self.spread.variance)

    def interval(self, alpha: float | None = None) -> tuple[float, float]:
        """The two-sided interval at level ``alpha`` (default: the verdict's, corrected where a family is)."""
        half = self.spread.quantile(1 - (self.alpha if alpha is None else alpha) / 2) * self.se
        return self.diff - half, self.diff + half

    @property
    def excludes_zero(self) -> bool:
        low, high = self.interval()
        return not (low <= 0.0 <= high)

    @property
    def detectable(self) -> bool:
        """Training noise included, and the interval at the verdict's level excludes 0."""
        return self.includes_training_noise and self.excludes_zero

    @property
    def mde(self) -> float | None:
        """The smallest true difference detected with 80% power at the verdict's level; None with one seed a side."""
        if not self.includes_training_noise:
            return None
        return _detectable(self.spread, self.alpha)

    def adjusted(self, family: int) -> SeedDifference:
        """The same difference judged as one of ``family`` comparisons: Bonferroni, level 0.05 / family."""
        return replace(self, alpha=(1 - CONFIDENCE) / family, family=family)

    def seeds_needed(self, delta: float, max_seeds: int = MAX_SEEDS) -> int | None:
        """Seeds per side at which a true difference ``delta`` is detected with 80% power, from these spreads.

        None when no number of seeds up to ``max_seeds`` would do (see :meth:`images_limit`), or when a side has
        one seed (no run-to-run spread to project from).
        """
        if self.components is None or not self.includes_training_noise:
            return None
        clamp = {k: max(getattr(self.components, k), 0.0) for k in ("run_a", "run_b") if getattr(self.components, k)}
        expected = replace(self.components, **clamp)  # at other seed counts: the run variances, at least 0
        for seeds in range(2, max_seeds + 1):
            if _detectable(expected.spread(seeds, seeds, self.n_images), self.alpha) <= abs(delta):
                return seeds
        return None

    def images_limit(self) -> float:
        """What the test images allow: the smallest difference detectable at 80% power with unlimited seeds."""
        images = self.components.images / self.n_images if self.components is not None else 0.0
        return float((stats.norm.ppf(1 - self.alpha / 2) + stats.norm.ppf(POWER)) * math.sqrt(images))

    @cached_property
    def p_improvement(self) -> tuple[float, float, float] | None:
        """P(a > b) over seeds and its 95% interval (:func:`probability_of_improvement`); None with one seed a side."""
        if not self.includes_training_noise:
            return None
        return probability_of_improvement(self.runs_a, None if self.paired else self.runs_b)


def seed_difference(a: np.ndarray, b: np.ndarray, *, same_runs: bool = False) -> SeedDifference:
    """Compare per-image scores of several training runs: ``a`` (runs x images) minus ``b`` (runs x images).

    The same test images, in one order, in every run. ``same_runs``: a and b come from the same runs (two
    models of one recipe, paired by run: row r of a and of b is one run); otherwise the runs are independent
    (two recipes). The interval covers the seeds and the test images (a population of images, not these).
    """
    a, b = np.atleast_2d(np.asarray(a, dtype=np.float64)), np.atleast_2d(np.asarray(b, dtype=np.float64))
    if a.shape[1] != b.shape[1] or a.shape[1] < 2:
        raise ValueError(f"runs x images tables need the same images (at least 2), got {a.shape} and {b.shape}")
    if same_runs and a.shape != b.shape:
        raise ValueError(f"same_runs needs tables of one shape, got {a.shape} and {b.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("runs x images tables hold a NaN or infinite score")
    components = estimate(a, b, same_runs)
    spread = components.spread(a.shape[0], b.shape[0], a.shape[1])
    diff = float(a.mean() - b.mean())
    half = spread.quantile((1 + CONFIDENCE) / 2) * math.sqrt(spread.variance)
    if same_runs:
        runs_a, runs_b = tuple((a - b).mean(axis=1).tolist()), ()
    else:
        runs_a, runs_b = tuple(a.mean(axis=1).tolist()), tuple(b.mean(axis=1).tolist())
    shape = (a.shape[0], b.shape[0], a.shape[1])
    return SeedDifference(
        diff, diff - half, diff + half, *shape, spread, runs_a=runs_a, runs_b=runs_b, components=components
    )


def probability_of_improvement(
    a: Sequence[float], b: Sequence[float] | None = None, confidence: float = CONFIDENCE
) -> tuple[float, float, float]:
    """P(a > b) over seeds: that a run of a scores above a run of b; its median-unbiased estimate and interval.

    ``a`` and ``b``: each run's mean score (independent runs, two recipes): P(X > Y) for one run of each.
    ``b`` None: ``a`` holds each run's a - b (two models in the same runs): P(a run's a beats its b).
    Run means are taken as normal with one spread per comparison (pooled between recipes), so that
    P = Phi(delta / sqrt 2) (independent) or Phi(delta) (paired), delta the standardized difference. The interval
    inverts the noncentral t distribution of the t statistic (exact under that model at any number of seeds,
    where a bootstrap over 2-5 runs is not); the estimate is where that distribution puts the statistic at its
    median, so it always lies inside the interval.
    """
    x = np.asarray(a, dtype=np.float64)
    y = None if b is None else np.asarray(b, dtype=np.float64)
    if len(x) < 2 or (y is not None and len(y) < 2):
        raise ValueError("the probability of improvement needs at least 2 runs a side")
    if y is None:
        df, scale, mean, spread = len(x) - 1, math.sqrt(len(x)), float(x.mean()), float(x.std(ddof=1))
        to_p = 1.0
    else:
        df = len(x) + len(y) - 2
        scale = 1 / math.sqrt(1 / len(x) + 1 / len(y))
        mean = float(x.mean() - y.mean())
        spread = math.sqrt(((len(x) - 1) * x.var(ddof=1) + (len(y) - 1) * y.var(ddof=1)) / df)
        to_p = 1 / math.sqrt(2)
    if spread == 0:  # every run alike: a certainty either way, or a tie
        point = 0.5 if mean == 0 else float(mean > 0)
        return point, point, point
    t_value = mean / spread * scale

    def noncentrality(tail: float) -> float:  # where P(T <= t_value) = tail, T ~ noncentral t(df, nc)
        found = float(special.nctdtrinc(df, tail, t_value))
        if math.isfinite(found):
            return min(max(found, t_value - NONCENTRALITY_LIMIT), t_value + NONCENTRALITY_LIMIT)
        return t_value + (NONCENTRALITY_LIMIT if tail < 0.5 else -NONCENTRALITY_LIMIT)  # far out: P is 0 or 1

    tail = (1 - confidence) / 2
    to_probability = [float(stats.norm.cdf(noncentrality(q) / scale * to_p)) for q in (0.5, 1 - tail, tail)]
    return to_probability[0], to_probability[1], to_probability[2]
