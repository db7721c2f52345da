"""Variance components of a seed-level difference: runs x test images, crossed, both random.

Each run's per-image score is modelled as a crossed two-way layout, y[r, i] = mu + run[r] + image[i] + e[r, i]
(runs and test images both random). The difference of two means has the variance
    s_a / R_a + s_b / R_b + img / N + e_a / (R_a N) + e_b / (R_b N)
(s: run-to-run variance, e: the run x image residual, img: the variance over images of the per-image
difference of the two sides, N test images). Each component is estimated from the ANOVA mean squares, with
the residual counted once (the per-run image noise sits in both the run means and the image means; a naive
sum counts it twice). The variance falls in two parts: the runs' (mean squares with
R - 1 degrees of freedom, combined Welch-Satterthwaite: a paired t-test on run means within a recipe, Welch's
between recipes) and the images' (N - 1 and more). The critical value is the Cochran-Cox mix of the two
parts' t quantiles, weighted by their variances: at 2-3 seeds the runs' part has 1-2 degrees of freedom and
must keep its own wide quantile (one Satterthwaite df over both parts is liberal there: it grows exactly when
the runs' spread happens to come out small); with many test images and little run noise the interval
approaches a paired t-interval over images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special


def _satterthwaite(terms: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """A sum of mean-square terms (value, df): its value and Welch-Satterthwaite degrees of freedom."""
    total = sum(value for value, _ in terms)
    spread = sum(value**2 / df for value, df in terms if df > 0)
    return max(total, 0.0), (total**2 / spread if spread > 0 and total > 0 else math.inf)


@dataclass(frozen=True)
class Spread:
    """The variance of a seed-level difference in two parts: the runs' and the images', each with its df."""

    runs: float
    runs_df: float
    images: float
    images_df: float

    @property
    def variance(self) -> float:
        return self.runs + self.images

    def quantile(self, q: float) -> float:
        """The Cochran-Cox mix of the two parts' Student-t quantiles at ``q``, weighted by their variances."""
        if self.variance == 0:
            return float(special.ndtri(q))
        parts = [(v, df) for v, df in ((self.runs, self.runs_df), (self.images, self.images_df)) if v > 0]
        return sum(v * float(special.stdtrit(df, q)) for v, df in parts) / sum(v for v, _ in parts)


@dataclass(frozen=True)
class Components:
    """Variance components of a seed-level difference (see above); ``None`` where a side has one run."""

    run_a: float | None
    run_b: float | None
    residual_a: float | None
    residual_b: float | None
    images: float
    paired: bool  # one set of runs (within a recipe): the b-side terms are folded into a's

    def spread(self, seeds_a: int, seeds_b: int, n_images: int) -> Spread:
        """The two parts of the variance of the difference of means at these seed counts (expected mean squares).

        Runs' part: MS_run / (R N) per side, which covers s / R and e / (R N), as a t-test on run means does.
        It stays as it is even below the residual: clamping it up makes the interval conservative, and swapping
        in the residual's many degrees of freedom just when the runs' spread comes out small makes it liberal.
        Images' part: img / N = (MS_image - sum e / R) / N where img is above 0.
        """
        runs, images = [], []
        image_ms = self.images  # the expected mean square over images of the per-image differences of run means
        sides = [(self.run_a, self.residual_a, seeds_a)]
        if not self.paired:
            sides.append((self.run_b, self.residual_b, seeds_b))
        for run, residual, seeds in sides:
            if residual is None:  # one run: its noise cannot be told from the images'
                continue
            image_ms += residual / seeds
            runs.append(((n_images * run + residual) / (seeds * n_images), seeds - 1))
            if self.images > 0:
                images.append((-residual / (seeds * n_images), (seeds - 1) * (n_images - 1)))
        if self.images > 0 or all(residual is None for _, residual, _ in sides):
            images.append((image_ms / n_images, n_images - 1))
        # the images' part keeps the N - 1 degrees of freedom of its one noisy input, MS_image: Satterthwaite's
        # formula would collapse them towards 0 where the residual it subtracts (near-exact, many df) is close to it
        return Spread(*_satterthwaite(runs), max(sum(value for value, _ in images), 0.0), n_images - 1)


def _mean_squares(table: np.ndarray) -> tuple[float, float]:
    """Runs x images: the run-to-run variance component (unclamped: MS_run is what enters) and the residual MS."""
    runs, images = table.shape
    run_means = table.mean(axis=1)
    residual = table - run_means[:, None] - table.mean(axis=0)[None, :] + table.mean()
    residual_ms = float((residual**2).sum() / ((runs - 1) * (images - 1)))
    run_ms = images * float(run_means.var(ddof=1))
    return (run_ms - residual_ms) / images, residual_ms  # below 0 where the runs agree better than chance has it


def estimate(a: np.ndarray, b: np.ndarray, same_runs: bool) -> Components:
    """Estimate the variance components from the runs x images tables of the two sides."""
    tables = [a - b] if same_runs else [a, b]
    per_image = np.mean(a - b, axis=0) if same_runs else a.mean(axis=0) - b.mean(axis=0)
    estimates = [_mean_squares(table) if table.shape[0] > 1 else (None, None) for table in tables]
    if same_runs:
        estimates.append((None, None))
    (run_a, residual_a), (run_b, residual_b) = estimates
    known = sum(r / t.shape[0] for r, t in zip((residual_a, residual_b), tables) if r is not None)
    images = max(float(per_image.var(ddof=1)) - known, 0.0)
    return Components(run_a, run_b, residual_a, residual_b, images, same_runs)
