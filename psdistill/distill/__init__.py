"""Distill the judge's pseudo-scores into a single-pass scorer (see trainer.py, losses.py, scorer.py)."""
from psdistill.distill.config import DistillConfig

__all__ = ["DistillConfig", "DistillTrainer", "ScorerSpec", "StudentScorer", "export_merged", "score_images",
           "train_student"]

_LAZY = {"DistillTrainer": "trainer", "train_student": "trainer", "ScorerSpec": "scorer",
         "StudentScorer": "scorer", "export_merged": "scorer", "score_images": "scorer"}


def __getattr__(name):
    # torch and the transformers Trainer load when training or scoring is asked for, not when a
    # pipeline config merely names DistillConfig.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"psdistill.distill.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'psdistill.distill' has no attribute {name!r}")
