"""The pointwise teacher: the base VLM with no adapter, read zero-shot through the levels head (Q-Align).

It is the student before training (the same readout, no new parameter), so it scores the images
the same way in one pass each; the pipeline reports it next to the student (`teacher_pointwise`).
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

from psdistill.core.errors import ConfigError
from psdistill.data.records import DEFAULT_RATING_SCALE
from psdistill.models.loading import ModelConfig
from psdistill.scoring.spec import ReadoutConfig, ScorerSpec
from psdistill.scoring.student import StudentScorer


def teacher_pointwise(model: Union[str, dict, ModelConfig] = "tiny", dimensions: Sequence[str] = ("overall",),
                      device: Optional[str] = None, rating_scale: Sequence[float] = DEFAULT_RATING_SCALE,
                      readout: Optional[ReadoutConfig] = None, **readout_fields) -> StudentScorer:
    """The teacher scorer (the registry's "teacher-pointwise"). `model`: a ModelConfig, its dict, or a
    name/path. `readout`: what to read (a training config's: `DistillConfig.readout_config(dimensions)`);
    without it, `dimensions` with the defaults, which `readout_fields` (prompt, level_words, level_values)
    override."""
    model_cfg = model if isinstance(model, ModelConfig) else (
        ModelConfig(**model) if isinstance(model, dict) else ModelConfig(name_or_path=str(model)))
    readout = readout or ReadoutConfig.from_template(dimensions=dimensions, **readout_fields)
    if readout.head != "levels":
        raise ConfigError("distill.head: a scorer without training needs the 'levels' head "
                          "(a fresh scalar head is untrained)")
    return StudentScorer.from_spec(ScorerSpec.build(model_cfg, readout, weights="base", name="teacher-pointwise",
                                                    rating_scale=rating_scale), device=device)
