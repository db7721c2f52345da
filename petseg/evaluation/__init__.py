"""Evaluation: scoring checkpoints on the test cache (scoring), the per-image tables (tables), the stage (run)."""

from petseg.evaluation.run import evaluate_models
from petseg.evaluation.scoring import ModelEvaluation, evaluate_checkpoint, summarize

__all__ = ["ModelEvaluation", "evaluate_checkpoint", "evaluate_models", "summarize"]
