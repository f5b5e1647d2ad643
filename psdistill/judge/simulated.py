"""A SIMULATED judge: a noisy oracle that reads the ground truth.

It exists so that the demo and the tests can show the pipeline learning with random-weight models,
which have no taste of their own. Everything it produces is labelled simulated (`simulated=True`,
"simulated" in its `judge_id`). It never stands in for a real VLM in a reported result.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.special import expit, logit

from psdistill.errors import ConfigError
from psdistill.judge.base import Pair


@dataclass
class SimulatedJudgeConfig:
    """`accuracy`: share of pairs with different ground truth that it orders correctly.
    `position_bias`: logit added in favour of the first-shown image. `seed`: noise seed."""

    accuracy: float = 0.85
    position_bias: float = 0.3
    seed: int = 0

    def __post_init__(self):
        if not 0.5 <= self.accuracy < 1:
            raise ConfigError(f"judge.simulated.accuracy: must be in [0.5, 1), got {self.accuracy}")


class SimulatedJudge:
    """Calibrated by construction: when it is right it says p = accuracy for the better image.

    Each answer is a deterministic function of (seed, both ids, order, dimension), so judging a pair
    again, in another process or after a restart, gives the same answer, like a cached real judge.
    Ties in ground truth get p = 0.5 before the position bias.
    """

    simulated = True

    def __init__(self, config: SimulatedJudgeConfig = SimulatedJudgeConfig()):
        self.config = config
        self.judge_id = f"simulated(accuracy={config.accuracy},position_bias={config.position_bias},seed={config.seed})"

    def prefer(self, pairs: Sequence[Pair], dimension: str) -> np.ndarray:
        strength = logit(self.config.accuracy)
        out = np.empty(len(pairs))
        for n, (a, b) in enumerate(pairs):
            gap = a.score(dimension) - b.score(dimension)
            if np.isnan(gap):
                raise ConfigError(
                    f"judge.kind=simulated needs ground truth {dimension!r} for {a.id!r} and {b.id!r}")
            sign = float(np.sign(gap))
            if sign != 0 and self._uniform(a.id, b.id, dimension) >= self.config.accuracy:
                sign = -sign  # a wrong answer, with the same confidence as a right one
            out[n] = expit(sign * strength + self.config.position_bias)
        return out

    def _uniform(self, id_a: str, id_b: str, dimension: str) -> float:
        # Order-independent key: both presentation orders of a pair share one verdict, as a judge
        # with a consistent opinion plus a position bias would.
        key = "|".join([str(self.config.seed), dimension, *sorted((id_a, id_b))]).encode()
        return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") / 2**64
