"""Pairwise judging prompts: one YAML file per image domain, one criterion per aesthetic dimension.

    name: painting                     # the bundled sets are psdistill/judge/prompts/*.yaml
    system: You are an expert critic ...
    labels: ["Image A:", "Image B:"]   # text shown before the first and the second image
    question: Which ... in terms of {criterion}? Answer with one letter only: A or B.
    answers: [A, B]                    # next-token words read out: P(first) = P(answers[0])
    dimensions: {composition: "composition (the arrangement ...)", ..., overall: overall aesthetic quality}

A prompt is rendered with the loaded model's own chat template, so the same set works for any chat
VLM; `prompt_hash` of the rendered text (and the answer words) names it in the judgment store, so
editing a prompt never mixes its judgments with the old ones.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import yaml

from psdistill.core.errors import ConfigError

PROMPT_DIR = Path(__file__).parent / "prompts"


@dataclass(frozen=True)
class PromptSet:
    name: str
    system: str
    labels: tuple[str, str]
    question: str
    answers: tuple[str, str]
    dimensions: dict[str, str]

    def messages(self, dimension: str) -> list[dict]:
        """Chat messages for one pair: label, image, label, image, question (images as placeholders)."""
        if dimension not in self.dimensions:
            raise ConfigError(f"prompt set {self.name!r} has no dimension {dimension!r}; "
                              f"it has {sorted(self.dimensions)} (add one to its YAML file)")
        user = [{"type": "text", "text": self.labels[0]}, {"type": "image"},
                {"type": "text", "text": self.labels[1]}, {"type": "image"},
                {"type": "text", "text": self.question.format(criterion=self.dimensions[dimension])}]
        system = [{"role": "system", "content": self.system}] if self.system else []
        return system + [{"role": "user", "content": user}]

    def render(self, processor, dimension: str) -> str:
        """The prompt text in the model's chat template, ending where the assistant's answer starts."""
        return processor.apply_chat_template(self.messages(dimension), add_generation_prompt=True, tokenize=False)


def prompt_hash(rendered: str, answers: tuple[str, str]) -> str:
    """Identifies a prompt in the store: the rendered text and the answer words read out."""
    return hashlib.blake2b("\0".join([rendered, *answers]).encode(), digest_size=8).hexdigest()


def list_prompt_sets() -> list[str]:
    return sorted(p.stem for p in PROMPT_DIR.glob("*.yaml"))


def load_prompt_set(name_or_path: str) -> PromptSet:
    """A bundled set by name ("painting", "photo") or a YAML file of the same layout."""
    path = PROMPT_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        path = Path(name_or_path)
    if not path.is_file():
        raise ConfigError(f"judge.vlm.prompt_set: {name_or_path!r} is neither a bundled prompt set "
                          f"({', '.join(list_prompt_sets())}) nor a YAML file")
    data = yaml.safe_load(path.read_text()) or {}
    keys = {"name", "system", "labels", "question", "answers", "dimensions"}
    if set(data) != keys:
        raise ConfigError(f"{path}: a prompt set needs exactly the keys {sorted(keys)}; "
                          f"missing {sorted(keys - set(data))}, unknown {sorted(set(data) - keys)}")
    labels, answers = tuple(data["labels"]), tuple(str(a) for a in data["answers"])
    if len(labels) != 2 or len(answers) != 2 or answers[0] == answers[1]:
        raise ConfigError(f"{path}: labels and answers need two entries each, the answers different")
    if "{criterion}" not in data["question"]:
        raise ConfigError(f"{path}: the question must contain {{criterion}}")
    if not data["dimensions"]:
        raise ConfigError(f"{path}: no dimensions")
    return PromptSet(name=data["name"], system=data["system"] or "", labels=labels, question=data["question"],
                     answers=answers, dimensions=dict(data["dimensions"]))
