"""Distill the judge's pseudo-scores into a single-pass scorer (see trainer.py, losses.py, scorer.py)."""
from psdistill.distill.config import DistillConfig
from psdistill.distill.scorer import ScorerSpec, StudentScorer, export_merged, score_images
from psdistill.distill.trainer import DistillTrainer, train_student

__all__ = ["DistillConfig", "DistillTrainer", "ScorerSpec", "StudentScorer", "export_merged", "score_images",
           "train_student"]
