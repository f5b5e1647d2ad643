"""Scorers behind one entry point, as pyiqa's `create_metric`.

    >>> scorer = load_scorer("runs/demo")                                # doctest: +SKIP
    >>> scorer("a.jpg"), scorer(["a.jpg", "b.jpg"])                      # doctest: +SKIP
    (3.91, array([3.91, 2.47]))
    >>> create_scorer("psdistill", path="runs/demo/student")             # doctest: +SKIP

A scorer maps images to scores on its rating scale in one forward pass per image (the teacher
pseudo-scores are the exception and say so). Trainers stay explicit; only scorers are registered.
"""
from __future__ import annotations

import difflib
import importlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from psdistill.core.errors import ConfigError

if TYPE_CHECKING:
    from psdistill.scoring.api import Scorer

WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")  # what read_state_dict (FGAesQ official) reads


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
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as e:  # a missing or unknown argument: say what the scorer takes, not Python's words
        raise ConfigError(f"scorer {name!r}: {e}; it takes {inspect.signature(factory)} "
                          f"({_SCORERS[name].description})") from None
    return factory(**kwargs)


def load_scorer(path_or_name: str | Path, **kwargs) -> "Scorer":
    """A scorer from a registered name (`kwargs` go to its factory) or from what training wrote: a
    pipeline run directory or its `student/` (psdistill), an FGAesQ run directory, its `checkpoint/`
    or an official FGAesQ state dict file (fgaesq)."""
    if str(path_or_name) in _SCORERS:
        return create_scorer(str(path_or_name), **kwargs)
    path = Path(path_or_name)
    from psdistill.scoring.spec import SPEC_FILE

    if (path / SPEC_FILE).is_file() or (path / "student" / SPEC_FILE).is_file():
        return create_scorer("psdistill", path=str(path), **kwargs)
    if (path / "checkpoint" / "model.safetensors").is_file():
        return create_scorer("fgaesq", path=str(path / "checkpoint"), **kwargs)
    if (path / "model.safetensors").is_file() or (path.is_file() and path.suffix in WEIGHT_SUFFIXES):
        return create_scorer("fgaesq", path=str(path), **kwargs)
    if not path.exists():
        raise ConfigError(f"{path_or_name}: neither a registered scorer ({', '.join(sorted(_SCORERS))}) "
                          "nor an existing path")
    raise ConfigError(f"{path}: no scorer here (expected a run directory, a student/ folder with {SPEC_FILE}, "
                      "an FGAesQ checkpoint/ or an official FGAesQ weights file)")


register_scorer("psdistill", "psdistill.scoring.student:load_student",
                "the distilled single-pass student (path=<train_student output or checkpoint>)")
register_scorer("psdistill-vllm", "psdistill.scoring.vllm:load_vllm_student",
                "the same student (levels head) through vLLM, merged into its base by default (path=..., merge=True; "
                "pip install 'psdistill[vllm]')")
register_scorer("teacher-pointwise", "psdistill.scoring.teacher:teacher_pointwise",
                "the base VLM zero-shot, no adapter: expected level-word value after a pointwise prompt (Q-Align)")
register_scorer("fgaesq", "psdistill.baselines.fgaesq.scorer:create_fgaesq_scorer", "FGAesQ baseline (Yang et al.): CLIP ViT-B/16 + EMD head, coarse scores + fine series (path=<run>/checkpoint or an official .pth)")
