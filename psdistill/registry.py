"""Scorers behind one entry point, as pyiqa's `create_metric`.

    >>> scorer = create_scorer("psdistill", path="runs/demo/student")   # doctest: +SKIP
    >>> scorer.score(["a.jpg", "b.jpg"])                                  # doctest: +SKIP

A scorer maps images to scores on its rating scale in one forward pass per image (the teacher
pseudo-scores are the exception and say so). Trainers stay explicit; only scorers are registered.
"""
from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence, Union

import numpy as np
from PIL import Image

from psdistill.errors import ConfigError

ImageInput = Union[str, Path, Image.Image]


class Scorer(Protocol):
    name: str
    score_range: tuple[float, float]
    lower_better: bool

    def score(self, images: Sequence[ImageInput]) -> np.ndarray: ...


@dataclass(frozen=True)
class ScorerEntry:
    factory: str  # "module:function", imported on first use so optional dependencies stay optional
    description: str


_SCORERS: dict[str, ScorerEntry] = {}


def register_scorer(name: str, factory: str, description: str) -> None:
    if name in _SCORERS:
        raise ValueError(f"scorer {name!r} is already registered")
    _SCORERS[name] = ScorerEntry(factory, description)


def list_scorers() -> dict[str, str]:
    return {name: e.description for name, e in sorted(_SCORERS.items())}


def create_scorer(name: str, **kwargs) -> Scorer:
    """Build the scorer registered as `name`; keyword arguments go to its factory."""
    if name not in _SCORERS:
        hint = difflib.get_close_matches(name, _SCORERS, n=1)
        raise ConfigError(f"unknown scorer {name!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")
                          + f" (known: {', '.join(sorted(_SCORERS))})")
    module, func = _SCORERS[name].factory.split(":")
    factory: Callable[..., Scorer] = getattr(importlib.import_module(module), func)
    return factory(**kwargs)


register_scorer("psdistill", "psdistill.distill.scorer:load_student",
                "the distilled single-pass student (path=<train_student output or checkpoint>)")
register_scorer("teacher-pointwise", "psdistill.distill.scorer:teacher_pointwise",
                "the base VLM zero-shot, no adapter: expected level-word value after a pointwise prompt (Q-Align)")
register_scorer("fgaesq", "psdistill.baselines.fgaesq.scorer:create_fgaesq_scorer", "FGAesQ baseline (Yang et al.): CLIP ViT-B/16 + EMD head, coarse scores + fine series (path=<run>/checkpoint or an official .pth)")
