"""Comparisons with intervals: paired statistics (stats), files at other revisions (revisions), the reports (run)."""

from petseg.compare.run import compare_against, compare_models, summarize_runs
from petseg.compare.stats import PairedDifference, paired_difference

__all__ = ["PairedDifference", "compare_against", "compare_models", "paired_difference", "summarize_runs"]
