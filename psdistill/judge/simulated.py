"""SIMULATED judges: noisy oracles that read the ground truth.

They exist so that the demo and the tests can show the pipeline learning with random-weight models,
which have no taste of their own, and so that the ranking code can be measured against a known
truth. Everything they produce is labelled simulated (`simulated=True`, "simulated" in its
`judge_id`). They never stand in for a real VLM in a reported result.

`SimulatedJudge.rate` is its pointwise mode (the `fit.anchor=teacher` ratings under the simulated
judge): ground truth plus Gaussian noise, noisier than its preferences as human raters are (experts
agree more on preferences than on ratings).

One rule, two interfaces: `SimulatedJudge` answers for image records (the pipeline's `Judge`),
`simulated_judge` for item indices with a known quality array (a `psdistill.ranking.IndexJudge`,
for the ranking tests and benchmarks). Both give each unordered pair one verdict, whatever the
order or batch it is asked in, and add a position bias to the logit of the first-shown item, as a
real VLM judge with a consistent opinion and a bias toward the first image would.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.special import expit, logit, ndtr, ndtri

from psdistill.core.errors import ConfigError
from psdistill.data.records import ImageRecord
from psdistill.judge.base import Pair
from psdistill.ranking.utils import IndexJudge


@dataclass
class SimulatedJudgeConfig:
    """`accuracy`: share of pairs with different ground truth that it orders correctly.
    `position_bias`: logit added in favour of the first-shown image. `seed`: noise seed.
    `rating_noise`: sd of the Gaussian noise of its pointwise ratings, in ground-truth units."""

    accuracy: float = 0.85
    position_bias: float = 0.3
    seed: int = 0
    # 2.0 on the 1-10 scale: ordering two demo images by these ratings is right less often than
    # `accuracy` (tests/test_fit_anchor.py checks it), as ratings are noisier than preferences.
    rating_noise: float = 2.0

    def __post_init__(self):
        if not 0.5 <= self.accuracy < 1:
            raise ConfigError(f"judge.simulated.accuracy: must be in [0.5, 1), got {self.accuracy}")
        if not self.rating_noise > 0:
            raise ConfigError(f"judge.simulated.rating_noise: must be > 0, got {self.rating_noise}")


def constant_accuracy_answer(gap, uniform, accuracy: float, position_bias: float) -> np.ndarray:
    """P(first preferred) of a judge that orders every pair of distinct quality correctly with
    probability ``accuracy``, however far apart: p = expit(+-logit(accuracy) + position_bias), the
    sign wrong where the pair's ``uniform`` draw is >= accuracy. Calibrated by construction: when
    it is right it says p = accuracy for the better item. Equal quality gives 0.5 before the bias."""
    sign = np.sign(gap)
    sign = np.where(np.asarray(uniform) >= accuracy, -sign, sign)  # wrong, as confident as when right
    return expit(sign * logit(accuracy) + position_bias)


# Images without ground truth (a plain folder) are what a real judge is for: say how to get one.
REAL_JUDGE = ("; the simulated judge only replays ground truth (demo and tests): to judge your own images use "
              "judge.kind=vlm with model.name_or_path=<a Qwen-VL checkpoint>")


class SimulatedJudge:
    """The constant-accuracy rule over image records, reading ``record.score(dimension)``.

    Each answer is a deterministic function of (seed, both ids, dimension), so judging a pair
    again, in another process or after a restart, gives the same answer, like a cached real judge.
    """

    simulated = True

    def __init__(self, config: SimulatedJudgeConfig = SimulatedJudgeConfig()):
        self.config = config
        self.judge_id = f"simulated(accuracy={config.accuracy},position_bias={config.position_bias},seed={config.seed})"

    def prefer(self, pairs: Sequence[Pair], dimension: str) -> np.ndarray:
        gap, uniform = np.empty(len(pairs)), np.empty(len(pairs))
        for n, (a, b) in enumerate(pairs):
            gap[n] = a.score(dimension) - b.score(dimension)
            if np.isnan(gap[n]):
                raise ConfigError(
                    f"judge.kind=simulated needs ground truth {dimension!r} for {a.id!r} and {b.id!r}{REAL_JUDGE}")
            # Order-independent key: both presentation orders of a pair share one verdict.
            uniform[n] = self._uniform(dimension, *sorted((a.id, b.id)))
        return constant_accuracy_answer(gap, uniform, self.config.accuracy, self.config.position_bias)

    def rate(self, records: Sequence[ImageRecord], dimension: str) -> np.ndarray:
        """SIMULATED pointwise ratings: ground truth + N(0, rating_noise^2), one draw per (seed,
        dimension, id), so an image rated again gets the same rating."""
        truth = np.array([r.score(dimension) for r in records], dtype=float)
        missing = [r.id for r, t in zip(records, truth) if np.isnan(t)]
        if missing:
            raise ConfigError(f"judge.kind=simulated needs ground truth {dimension!r} to rate {missing[:5]}{REAL_JUDGE}")
        # "rate" in the key: a rating's noise is not drawn from any pair's verdict
        u = np.array([self._uniform(dimension, "rate", r.id) for r in records])
        return truth + self.config.rating_noise * ndtri(np.clip(u, 1e-12, 1 - 1e-12))

    def _uniform(self, *parts: str) -> float:
        key = "|".join([str(self.config.seed), *parts]).encode()
        return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") / 2**64


def _pair_uniform(i: np.ndarray, j: np.ndarray, seed: int) -> np.ndarray:
    """A uniform in [0, 1) per unordered pair, the same whatever the order or batch it comes in.

    splitmix64 (Steele et al. 2014) of the pair key: deterministic like a cached judge's answer.
    """
    lo, hi = np.minimum(i, j).astype(np.uint64), np.maximum(i, j).astype(np.uint64)
    with np.errstate(over="ignore"):
        z = (lo << np.uint64(32)) ^ hi ^ (np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15))
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / 2.0**53


def simulated_judge(quality, accuracy: float = 0.85, position_bias: float = 0.0, kind: str = "constant",
                    seed: int = 0) -> IndexJudge:
    """A SIMULATED judge over item indices of known ``quality``: ``judge(pairs) -> P(first preferred)``.

    - ``"constant"`` (the rule of `SimulatedJudge`, `constant_accuracy_answer`): every pair of
      distinct quality is ordered correctly with probability ``accuracy``, however far apart.
    - ``"graded"`` (Thurstone, 1927): the judge perceives ``s * (q_a - q_b) + e`` with
      e ~ N(0, 1) per pair and answers expit(perceived + position_bias). Close pairs are hard and
      distant ones easy; ``s`` is set so that the share of random pairs ordered correctly is ``accuracy``,
      and is the judge's attribute ``scale``.
    """
    q = np.asarray(quality, dtype=float)
    if kind == "constant":
        def judge(pairs):
            pairs = np.asarray(pairs)
            i, j = pairs[:, 0], pairs[:, 1]
            return constant_accuracy_answer(q[i] - q[j], _pair_uniform(i, j, seed), accuracy, position_bias)

        return judge
    if kind == "graded":
        # |gap| of random pairs (all pairs up to 500 items, a fixed sample of 10^5 beyond)
        if len(q) <= 500:
            gaps = np.abs(np.subtract.outer(q, q))[np.triu_indices(len(q), 1)]
        else:
            ij = np.random.default_rng(seed).integers(0, len(q), (100_000, 2))
            gaps = np.abs(q[ij[:, 0]] - q[ij[:, 1]])[ij[:, 0] != ij[:, 1]]
        lo, hi = 1e-6, 1e6
        for _ in range(60):  # bisection on log s: mean Phi(s |gap|) is increasing in s
            s = np.sqrt(lo * hi)
            lo, hi = (s, hi) if ndtr(s * gaps).mean() < accuracy else (lo, s)
        scale = np.sqrt(lo * hi)

        def judge(pairs):
            pairs = np.asarray(pairs)
            i, j = pairs[:, 0], pairs[:, 1]
            e = ndtri(np.clip(_pair_uniform(i, j, seed), 1e-12, 1 - 1e-12))
            e = np.where(i < j, e, -e)  # one perception per unordered pair, seen from either side
            return expit(scale * (q[i] - q[j]) + e + position_bias)

        judge.scale = scale  # the perceived gap per unit of quality: the latent scale, for calibration checks
        return judge
    raise ValueError(f"kind: use 'constant' or 'graded', got {kind!r}")
