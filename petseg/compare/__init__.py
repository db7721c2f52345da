"""Comparisons with intervals: statistics (stats), runs at revisions and experiments (revisions, runs), seed studies
(seeds), the metrics side by side (table), and the reports (run)."""

from petseg.compare.run import compare_against, compare_models, compare_seeds, write_report
from petseg.compare.stats import PairedDifference, SeedDifference, paired_difference, seed_difference

__all__ = [
    "PairedDifference",
    "SeedDifference",
    "compare_against",
    "compare_models",
    "compare_seeds",
    "paired_difference",
    "seed_difference",
    "write_report",
]
