"""A LoRA student merged into its base model: one folder of full weights that any transformers code loads."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from psdistill.scoring.student import StudentScorer


def export_merged(path, out_dir) -> Path:
    """Merge a LoRA student into its base and save full safetensors weights + processor + spec.

    The result loads with `StudentScorer.from_pretrained(out_dir)` and, minus the scalar head, with any
    transformers `from_pretrained`.
    """
    scorer = StudentScorer.from_pretrained(path, device="cpu")
    model = scorer.model
    if scorer.spec.weights == "adapter":
        model = model.merge_and_unload()  # also swaps the trained scalar head in for its wrapper
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    scorer.processor.save_pretrained(out_dir)
    dataclasses.replace(scorer.spec, weights="full").save(out_dir)
    return out_dir
