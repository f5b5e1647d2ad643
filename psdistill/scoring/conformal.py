"""Calibrated intervals: the scorer's own spread scaled by split-conformal calibration.

    >>> scorer = psdistill.load_scorer("runs/demo")                       # doctest: +SKIP
    >>> s, lo, hi = scorer.score(["a.jpg", "b.jpg"], coverage=0.9)       # doctest: +SKIP

Split conformal with a normalized nonconformity score (Papadopoulos et al. 2008; Lei et al. 2018,
https://arxiv.org/abs/1604.04173; Angelopoulos & Bates 2021, https://arxiv.org/abs/2107.07511, sec. 2.3):
on n calibration images held out of training, with the scorer's score s_i, its spread u_i and a
target y_i,

    r_i = |y_i - s_i| / u_i,    q = the k-th smallest r_i,  k = ceil((n + 1) * coverage)   (q = inf if k > n)
    interval(x) = [s(x) - q u(x), s(x) + q u(x)], clipped to the rating scale for expert ratings

which covers a new image's target with probability >= coverage when the calibration images and the new
one are exchangeable (and < coverage + 1/(n + 1) without ties).
The spread u: for the levels head, the standard deviation of its distribution over the rating levels
(readout.py: softmax over the level words, values on the rating scale), floored at `SPREAD_FLOOR` of the
scale's width so that a head sure of one level does not divide by zero. For the scalar head, which gives a
point and nothing else, u = 1: the plain absolute residual of Lei et al. (constant width). Chosen over an
ensemble of checkpoints' readouts, which would cost a pass per checkpoint and need checkpoints kept.

The target: expert ratings ("expert ratings") where a calibration split has them, else the teacher's
pseudo-scores of pool images kept out of training ("teacher pseudo-scores"): the interval then covers
the teacher's score, not a human's. Expert ratings lie on the rating scale, so clipping to it loses no
coverage; anchored pseudo-scores may pass its ends (ranking.to_rating_scale does not clip), so their
intervals are not clipped (`clip`: null). `calibration.json` in the scorer folder keeps the sorted r per
dimension, so any coverage can be asked later, and the quantiles at `REPORTED` for reading.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Mapping, NamedTuple, Optional, Sequence

import numpy as np

from psdistill.core.errors import ConfigError, PsdistillError

CALIBRATION_FILE = "calibration.json"
FORMAT = "psdistill-calibration/1"
METHOD = "split conformal, |target - score| / spread"
TARGETS = {"ratings": "expert ratings", "teacher": "teacher pseudo-scores"}
SPREADS = {"levels": "levels-std", "scalar": "constant"}  # head -> the spread it gives
SPREAD_FLOOR = 0.01  # of the rating scale's width: the smallest spread a levels head is taken to have
REPORTED = (0.8, 0.9, 0.95)  # coverages whose quantile calibration.json shows (any other is computed)


@dataclass
class CalibrationConfig:
    """The pipeline's `calibration` section: what the student's intervals are calibrated on."""

    target: Literal["auto", "ratings", "teacher", "none"] = field(default="auto", metadata={
        "help": "'ratings': the expert ratings (ground truth) of the validation images (held out of training, "
                "validation_images); 'teacher': the teacher's pseudo-scores of the pool images kept out of "
                "training (calibration.pool_holdout), so the interval covers the teacher's score, not a human's; "
                "'auto': teacher where pool_holdout > 0 (images were kept out for it), else ratings where the "
                "validation images have them, else none"})
    pool_holdout: float = field(default=0.0, metadata={
        "help": "share of the pool's images (training categories) kept out of training for target=teacher; "
                "0: every pool image trains the student"})
    coverage: float = field(default=0.9, metadata={
        "help": "the nominal coverage the report checks (the scorer gives any coverage: calibration.json keeps "
                "every calibration score)"})

    def __post_init__(self):
        if not 0 <= self.pool_holdout < 1:
            raise ConfigError(f"calibration.pool_holdout: need a share in [0, 1), got {self.pool_holdout}")
        if not 0 < self.coverage < 1:
            raise ConfigError(f"calibration.coverage: need a number in (0, 1), got {self.coverage}")
        if self.target == "teacher" and not self.pool_holdout:
            raise ConfigError("calibration.target=teacher: needs calibration.pool_holdout > 0 (pool images kept "
                              "out of training to calibrate on), e.g. 0.2")
        if self.target == "ratings" and self.pool_holdout:
            raise ConfigError("calibration.pool_holdout: keeps pool images out of training for target=teacher "
                              "only; with target=ratings set it to 0")


class Intervals(NamedTuple):
    """What `scorer.score(images, coverage=c)` returns: `score`, `lo`, `hi`, each shaped as `score(images)`
    alone ((N,) for one dimension, (N, D) for several); unpack as `s, lo, hi = ...`."""

    score: np.ndarray
    lo: np.ndarray
    hi: np.ndarray


def check_coverage(coverage) -> float:
    """`coverage` as a float in (0, 1), or ConfigError in one line."""
    try:
        c = float(coverage)
    except (TypeError, ValueError):
        raise ConfigError(f"coverage: need a number in (0, 1), got {coverage!r}") from None
    if not 0 < c < 1:
        raise ConfigError(f"coverage: need a number in (0, 1) (e.g. 0.9 for 90% intervals), got {coverage!r}")
    return c


def conformal_quantile(scores: Sequence[float], coverage: float) -> float:
    """The ceil((n + 1) * coverage)-th smallest of the n nonconformity `scores`: inf when that rank exceeds n
    (too few calibration images for this coverage: the interval is the whole scale)."""
    coverage = check_coverage(coverage)
    r = np.sort(np.asarray(scores, dtype=float))
    # The small tolerance keeps e.g. (19 + 1) * 0.9 = 18.000000000000004 at rank 18.
    k = math.ceil((len(r) + 1) * coverage - 1e-9)
    return float(r[k - 1]) if k <= len(r) else math.inf


@dataclass
class Calibration:
    """What `calibration.json` holds: per dimension the sorted nonconformity scores of `n` images."""

    spread: str  # SPREADS' values: "levels-std" or "constant"
    target: str  # TARGETS' values
    rating_scale: list[float]
    scores: dict[str, list[float]]  # dimension -> sorted |target - score| / spread
    spread_floor: float = 0.0  # absolute, on the rating scale
    clip: Optional[list[float]] = None  # [lo, hi] the bounds are clipped to (where every target lies), or none
    images: dict[str, dict[str, float]] = field(default_factory=dict)  # dimension -> {image id: its score}
    method: str = METHOD
    format: str = FORMAT

    @classmethod
    def fit(cls, head: str, target: str, rating_scale: Sequence[float], scores: Mapping[str, np.ndarray],
            spreads: Mapping[str, np.ndarray], targets: Mapping[str, np.ndarray],
            images: Mapping[str, Sequence[str]] = None) -> "Calibration":
        """From the scorer's `scores` and `spreads` (raw, unfloored) and the `targets` of the calibration images,
        per dimension; `target` a TARGETS key; `head` the scorer's ('levels' or 'scalar'); `images` their ids."""
        lo, hi = (float(v) for v in rating_scale)
        floor = SPREAD_FLOOR * (hi - lo) if head == "levels" else 0.0
        cal = cls(SPREADS[head], TARGETS[target], [lo, hi], {}, floor, [lo, hi] if target == "ratings" else None)
        for dim, s in scores.items():
            y, s = np.asarray(targets[dim], dtype=float), np.asarray(s, dtype=float)
            if len(y) == 0:
                raise PsdistillError(f"calibration: no calibration image has a target for {dim!r}")
            r = [float(v) for v in np.abs(y - s) / cal.floored(spreads[dim])]
            cal.scores[dim] = sorted(r)
            cal.images[dim] = dict(zip(images[dim], r)) if images else {}
        return cal

    def floored(self, spreads) -> np.ndarray:
        """The spread intervals are scaled by: the head's own, at least `spread_floor`; 1 for a constant spread."""
        u = np.asarray(spreads, dtype=float)
        return np.ones_like(u) if self.spread == SPREADS["scalar"] else np.maximum(u, self.spread_floor)

    def quantile(self, dimension: str, coverage: float) -> float:
        if dimension not in self.scores:
            raise PsdistillError(f"calibration: no calibration for dimension {dimension!r} "
                                 f"(calibrated: {', '.join(self.scores)})")
        return conformal_quantile(self.scores[dimension], coverage)

    def bounds(self, dimension: str, scores, spreads, coverage: float) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) of the `coverage` interval around `scores` (any shape) with their `spreads`."""
        half = self.quantile(dimension, coverage) * self.floored(spreads)
        s = np.asarray(scores, dtype=float)
        lo, hi = self.clip or (-np.inf, np.inf)
        return np.clip(s - half, lo, hi), np.clip(s + half, lo, hi)

    def intervals(self, dimensions: Sequence[str], scores: np.ndarray, spreads: np.ndarray,
                  coverage: float) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi), each (N, D) as `scores` and `spreads` (N, D), the columns `dimensions`."""
        bounds = [self.bounds(d, scores[:, k], spreads[:, k], coverage) for k, d in enumerate(dimensions)]
        return tuple(np.stack([b[i] for b in bounds], 1) for i in (0, 1))

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["n"] = {d: len(r) for d, r in self.scores.items()}
        out["quantiles"] = {d: {str(c): finite_or_none(conformal_quantile(r, c)) for c in REPORTED}
                            for d, r in self.scores.items()}
        return out

    def save(self, folder) -> Path:
        path = Path(folder) / CALIBRATION_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, folder) -> "Calibration":
        path = Path(folder) / CALIBRATION_FILE
        if not path.is_file():
            raise PsdistillError(f"{folder}: no {CALIBRATION_FILE}, so no intervals; the pipeline's score stage "
                                 "writes it (calibration.target, see `psdistill run --help`)")
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT:
            raise PsdistillError(f"{path}: format {data.get('format')!r}, expected {FORMAT!r}")
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})


def folder_calibration(folder) -> Optional[Calibration]:
    """The scorer folder's `calibration.json`, or None where it has none."""
    return Calibration.load(folder) if folder is not None and (Path(folder) / CALIBRATION_FILE).is_file() else None


def required(calibration: Optional[Calibration], name: str, folder) -> Calibration:
    """`calibration`, or the one-line error of a scorer asked for intervals without one."""
    if calibration is None:
        raise PsdistillError(f"scorer {name!r} ({folder}): no {CALIBRATION_FILE}, so no intervals; "
                             "the pipeline's score stage writes it (calibration.target)")
    return calibration


def finite_or_none(q: float):
    return q if math.isfinite(q) else None  # strict JSON has no inf: null = the whole scale
