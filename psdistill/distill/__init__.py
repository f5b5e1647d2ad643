"""Distill the judge's pseudo-scores into a single-pass scorer: `train_student` (job.py) runs the objective
`distill.objective` names (objectives.py: ranking in trainer.py, grpo in grpo.py); the scorer it writes is
psdistill/scoring/'s."""
from psdistill.distill.config import DistillConfig

__all__ = ["DistillConfig", "DistillTrainer", "ScorerSpec", "StudentScorer", "export_merged", "score_images",
           "train_student"]

_LAZY = {"DistillTrainer": "psdistill.distill.trainer", "train_student": "psdistill.distill.job",
         "ScorerSpec": "psdistill.scoring.spec", "StudentScorer": "psdistill.scoring.student",
         "export_merged": "psdistill.scoring.merge", "score_images": "psdistill.scoring.batch"}


def __getattr__(name):
    # torch and the transformers Trainer load when training or scoring is asked for, not when a
    # pipeline config merely names DistillConfig.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'psdistill.distill' has no attribute {name!r}")
