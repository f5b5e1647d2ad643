"""The training objectives: `distill.objective` names one of these, `train_student` (job.py) runs it.

Each entry is "module:function" (imported when that objective trains, so a config that names
DistillConfig loads neither torch nor trl). The function takes one `job.TrainingJob` and returns
the output folder, a scorer folder (`scorer_config.json` + weights + processor) that `psdistill score`,
the score stage and the evaluation read unchanged.

To add an objective: write `psdistill/distill/<name>.py` with `train_<name>(job: TrainingJob) -> Path`,
built from job.py's shared steps (`start`, `claim_output_dir`, `fit`, ...) as trainer.py and grpo.py
are, and add its line here. Its knobs, if any, go in a section of `DistillConfig` as `grpo` does
(grpo_config.py); checks that tie it to other fields go in `DistillConfig.__post_init__`.
"""
from __future__ import annotations

import importlib
from typing import Callable

OBJECTIVES = {
    # Confidence-weighted ranking + calibration loss on the levels (or scalar) readout.
    "ranking": "psdistill.distill.trainer:train_ranking",
    # Confidence-weighted GRPO through TRL: level-word answers rewarded against the pseudo-scores.
    "grpo": "psdistill.distill.grpo:train_grpo",
}


def objective_trainer(name: str) -> Callable:
    """The train function of objective `name` (a key of OBJECTIVES; DistillConfig has checked it)."""
    module, function = OBJECTIVES[name].split(":")
    return getattr(importlib.import_module(module), function)
