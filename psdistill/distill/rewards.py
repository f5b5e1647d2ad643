"""The rewards of the `grpo` objective, as TRL reward functions:
`f(prompts=, completions=, completion_ids=, **dataset_columns) -> list[float]`, one per completion.

An answer is read as a level word (`LevelAnswers`) and valued on the rating scale exactly as the
levels head values it, so what GRPO rewards is what the scorer reads afterwards. Two rewards:

    closeness_i = confidence_i * (1 - |v_i - mu_i| / (hi - lo))
    order_i     = mean over j of the same dimension, j != i, of |2 C_ij - 1| * sign(v_i - v_j) sign(mu_i - mu_j)

v the answer's value, mu the pseudo-score, confidence the image's (signal.py), C_ij = pair_confidence
(the ranking loss's). The pairs are the batch's completions: two answers for the same image have
C = 0.5 and weigh 0, as do pairs the pseudo-scores cannot order. An answer that is no level word gets
`unparseable` from both (GrpoConfig.unparseable_reward says why it is a penalty, not 0) and leaves
the other answers' pairs.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from psdistill.distill.losses import confidence_matrix

_FIRST_WORD = re.compile(r"\s*([^\W\d_]+)")


@dataclass(frozen=True)
class LevelAnswers:
    """Values answers by their first word: a level word (case-insensitive) -> its value on the rating
    scale; anything else -> None. `values` are already on the scale (`Readout.values`)."""

    words: tuple[str, ...]
    values: tuple[float, ...]

    def value(self, completion) -> Optional[float]:
        match = _FIRST_WORD.match(_text(completion))
        if match is None:
            return None
        lookup = {w.lower(): v for w, v in zip(self.words, self.values)}
        return lookup.get(match.group(1).lower())

    def values_of(self, completions: Sequence) -> np.ndarray:
        """Values of `completions`, NaN where unparseable."""
        return np.array([np.nan if (v := self.value(c)) is None else v for c in completions], dtype=float)


def _text(completion) -> str:
    """The text of a completion: a string, or (conversational) a list of messages whose last one answers."""
    if isinstance(completion, str):
        return completion
    content = completion[-1]["content"]
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if part.get("type") == "text")


def closeness_reward(values, mu, confidence, scale: Sequence[float], unparseable: float) -> np.ndarray:
    """confidence * (1 - |v - mu| / (hi - lo)); `unparseable` where v is NaN."""
    lo, hi = scale
    values, mu, confidence = (np.asarray(a, float) for a in (values, mu, confidence))
    out = confidence * (1 - np.abs(values - mu) / (hi - lo))
    return np.where(np.isnan(values), unparseable, out)


def order_reward(values, mu, var, dimension: Sequence[str], unparseable: float) -> np.ndarray:
    """Confidence-weighted order agreement of each answer with the others of its dimension (module doc)."""
    values, mu, var = (np.asarray(a, float) for a in (values, mu, var))
    n = len(values)
    weight = np.abs(2 * confidence_matrix(mu, var) - 1)  # the ranking loss's pair weights
    parsed = ~np.isnan(values)
    dims = np.asarray(dimension)
    pairs = (dims[:, None] == dims[None, :]) & parsed[:, None] & parsed[None, :] & ~np.eye(n, dtype=bool)
    agree = np.sign(np.nan_to_num(values[:, None] - values[None, :])) * np.sign(mu[:, None] - mu[None, :])
    total = np.where(pairs, weight * agree, 0.0).sum(axis=1)
    out = total / np.maximum(pairs.sum(axis=1), 1)
    return np.where(parsed, out, unparseable)


@dataclass(frozen=True)
class GrpoRewards:
    """The two rewards bound to one level reading, scale and penalty; `closeness` and `order` are the
    reward functions handed to TRL (which logs them under these names)."""

    answers: LevelAnswers
    scale: tuple[float, float]
    unparseable: float

    def closeness(self, prompts, completions, pseudo_score, confidence, **_) -> list[float]:
        values = self.answers.values_of(completions)
        return closeness_reward(values, pseudo_score, confidence, self.scale, self.unparseable).tolist()

    def order(self, prompts, completions, pseudo_score, variance, dimension, **_) -> list[float]:
        values = self.answers.values_of(completions)
        return order_reward(values, pseudo_score, variance, dimension, self.unparseable).tolist()

    def functions(self) -> list:
        return [self.closeness, self.order]  # the order of grpo_config.REWARDS and reward_weights
