"""The scorer folder's format: `scorer_config.json` (`ScorerSpec`), and what a score is read with
(`ReadoutConfig`: the head, its level words and values, one prompt per dimension).

A trained scorer folder holds `scorer_config.json`, which says how to rebuild it: base model,
adapter or full weights, head, level words and values, one prompt per dimension, scale. Format 1
(one dimension: `dimension` and `prompt`) still loads.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

from psdistill.core.errors import ConfigError, PsdistillError
from psdistill.data.records import DEFAULT_RATING_SCALE

if TYPE_CHECKING:  # models.loading imports torch, which a config (DistillConfig) does not need
    from psdistill.models.loading import ModelConfig

SPEC_FILE = "scorer_config.json"
SPEC_FORMAT = "psdistill-scorer/2"
_FORMAT_1 = "psdistill-scorer/1"  # one dimension: `dimension` and `prompt` instead of `prompts`
HEADS = ("levels", "scalar")
# The defaults of the teacher and of DistillConfig: Q-Align's five levels, capitalised (one token each in Qwen3).
DEFAULT_PROMPT = "Rate the aesthetic quality of this image. Answer with one word."
DEFAULT_LEVEL_WORDS = ("Excellent", "Good", "Fair", "Poor", "Bad")
DEFAULT_LEVEL_VALUES = (5.0, 4.0, 3.0, 2.0, 1.0)


def check_levels(level_words: Sequence[str], level_values: Sequence[float]) -> None:
    """ConfigError (naming the distill.* key) unless the words are distinct and each has a value, not all equal."""
    if not level_words or len(set(level_words)) != len(level_words):
        raise ConfigError(f"distill.level_words: need distinct words, got {list(level_words)}")
    if len(level_values) != len(level_words):
        raise ConfigError(f"distill.level_values: {len(level_values)} values for {len(level_words)} level_words")
    if len(set(level_values)) < 2:
        raise ConfigError(f"distill.level_values: need at least two different values, got {list(level_values)}")


def render_prompts(prompt: str, dimensions: Sequence[str]) -> dict[str, str]:
    """{dimension: `prompt` with '{dimension}' replaced by its name}, in order; several dimensions need the
    placeholder (else they would all read the same prompt)."""
    if len(dimensions) > 1 and "{dimension}" not in prompt:
        raise ConfigError(f"distill.prompt: {list(dimensions)} would all get the same prompt {prompt!r}; "
                          "put '{dimension}' where the dimension's name goes")
    return {d: prompt.replace("{dimension}", d) for d in dimensions}


@dataclass(frozen=True)
class ReadoutConfig:
    """What a score is read with: `prompts` (dimension -> its user text, already formatted; one score column
    each, in order), the `head`, and the levels head's words and their values. A training config gives its
    own (DistillConfig.readout_config); `from_template` builds one from a prompt with '{dimension}'."""

    prompts: dict
    head: str = "levels"
    level_words: tuple = DEFAULT_LEVEL_WORDS
    level_values: tuple = DEFAULT_LEVEL_VALUES

    def __post_init__(self):
        if self.head not in HEADS:
            raise ConfigError(f"distill.head: {self.head!r} is not one of {', '.join(HEADS)}")
        check_levels(self.level_words, self.level_values)

    @classmethod
    def from_template(cls, prompt: str = DEFAULT_PROMPT, dimensions: Sequence[str] = ("overall",),
                      head: str = "levels", level_words: Sequence[str] = DEFAULT_LEVEL_WORDS,
                      level_values: Sequence[float] = DEFAULT_LEVEL_VALUES) -> "ReadoutConfig":
        return cls(render_prompts(prompt, dimensions), head, tuple(level_words), tuple(float(v) for v in level_values))


@dataclass
class ScorerSpec:
    """What `scorer_config.json` holds. `weights`: 'base' (the base model as is: the zero-shot teacher),
    'adapter' (a peft adapter in the folder, on top of `base_model`) or 'full' (full weights in the folder)."""

    base_model: dict
    weights: str
    head: str
    level_words: list[str]
    level_values: list[float]
    prompts: dict[str, str]  # dimension -> its user text, already formatted; one score column each, in order
    rating_scale: list[float]
    name: str = "psdistill"
    format: str = SPEC_FORMAT
    distill_config: dict = field(default_factory=dict)  # the resolved training config, for the record

    @property
    def dimensions(self) -> tuple[str, ...]:
        return tuple(self.prompts)

    @classmethod
    def build(cls, model_cfg: ModelConfig, readout: ReadoutConfig, weights: str, name: str,
              rating_scale: Sequence[float] = DEFAULT_RATING_SCALE,
              distill_config: Optional[dict] = None) -> "ScorerSpec":
        return cls(base_model=dataclasses.asdict(model_cfg), weights=weights, head=readout.head,
                   level_words=list(readout.level_words), level_values=[float(v) for v in readout.level_values],
                   prompts=dict(readout.prompts), rating_scale=[float(v) for v in rating_scale],
                   name=name, distill_config=distill_config or {})

    def save(self, folder) -> Path:
        path = Path(folder) / SPEC_FILE
        path.write_text(json.dumps(dataclasses.asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, folder) -> "ScorerSpec":
        path = Path(folder) / SPEC_FILE
        if not path.is_file():
            raise PsdistillError(f"{folder}: no {SPEC_FILE}; is this a folder written by train_student?")
        data = json.loads(path.read_text())
        if data.get("format") == _FORMAT_1:  # a one-dimension scorer saved before prompts per dimension
            data["prompts"] = {data.pop("dimension", "overall"): data.pop("prompt")}
            data["format"] = SPEC_FORMAT
        if data.get("format") != SPEC_FORMAT:
            raise PsdistillError(f"{path}: format {data.get('format')!r}, expected {SPEC_FORMAT!r}")
        return cls(**data)

    @property
    def model_config(self) -> ModelConfig:
        from psdistill.models.loading import ModelConfig

        return ModelConfig(**self.base_model)
