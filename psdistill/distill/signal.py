"""The training signal every distillation objective reads: one row per (training image, dimension).

    image         path of the image file (`with_images` makes it a `datasets.Image` column for TRL)
    prompt        the scoring prompt for the row's dimension, unrendered (no chat template)
    dimension     which aesthetic dimension the pseudo-score is for
    pseudo_score  posterior mean on the rating scale
    variance      posterior variance on the rating scale
    confidence    how reliably the pseudo-scores place this image: the mean, over the other images of
                  the same dimension, of the ranking loss's pair weight |2 C_ij - 1| with
                  C_ij = pair_confidence (losses.py); 1 = ordered against every other image for sure
    series        the image's series (or its id), which the ranking objective's sampler groups by

A `datasets.Dataset`, so the same table can be saved, pushed and fed to other TRL trainers.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from psdistill.data.records import ImageRecord
from psdistill.core.errors import DataError
from psdistill.ranking import pair_confidence

COLUMNS = ("image", "prompt", "dimension", "pseudo_score", "variance", "confidence", "series")
_CHUNK = 1024  # rows of the pair-confidence matrix held at once: memory stays O(chunk * N)


def image_confidence(mu: Sequence[float], var: Sequence[float]) -> np.ndarray:
    """Per image i: mean over j != i of |2 pair_confidence(mu, var, i, j) - 1| (0 for a lone image)."""
    mu, var = np.asarray(mu, float), np.asarray(var, float)
    n = len(mu)
    out = np.zeros(n)
    if n < 2:
        return out
    cols = np.arange(n)
    for start in range(0, n, _CHUNK):
        rows = np.arange(start, min(start + _CHUNK, n))
        i, j = np.repeat(rows, n), np.tile(cols, len(rows))
        w = np.abs(2 * pair_confidence(mu, var, i, j) - 1).reshape(len(rows), n)
        w[np.arange(len(rows)), rows] = 0.0  # the diagonal (C_ii = 0.5) already weighs 0; exact here
        out[rows] = w.sum(axis=1) / (n - 1)
    return out


def training_signal(records: Sequence[ImageRecord], pseudo_scores: Mapping[str, Mapping[str, Sequence[float]]],
                    prompts: Mapping[str, str]):
    """The Dataset of COLUMNS for `records`, from `pseudo_scores` {dimension: {image id: (mean, variance)}}
    and `prompts` {dimension: prompt}. Rows are grouped by dimension, records in the given order."""
    import datasets

    columns: dict[str, list] = {c: [] for c in COLUMNS}
    for dim, scores in pseudo_scores.items():
        if dim not in prompts:
            raise DataError(f"training signal: no prompt for dimension {dim!r} (have {sorted(prompts)})")
        missing = [r.id for r in records if r.id not in scores]
        if missing:
            raise DataError(f"training signal: {len(missing)} training images have no pseudo-score for {dim!r} "
                            f"(first: {missing[:3]}); score them in the fit stage or drop them")
        mu, var = (np.array([float(scores[r.id][k]) for r in records]) for k in (0, 1))
        bad = [(r.id, m, v) for r, m, v in zip(records, mu, var) if not (math.isfinite(m) and math.isfinite(v) and v >= 0)]
        if bad:
            rid, m, v = bad[0]
            raise DataError(f"training signal: {dim!r} pseudo-score of {rid!r} is ({m}, {v}); "
                            "need a finite mean and a variance >= 0")
        columns["image"] += [r.path for r in records]
        columns["prompt"] += [prompts[dim]] * len(records)
        columns["dimension"] += [dim] * len(records)
        columns["pseudo_score"] += mu.tolist()
        columns["variance"] += var.tolist()
        columns["confidence"] += image_confidence(mu, var).tolist()
        columns["series"] += [r.series or r.id for r in records]
    return datasets.Dataset.from_dict(columns)


def with_images(signal):
    """`signal` with its `image` column decoded to PIL images on access (what TRL's VLM trainers and
    `push_to_hub` expect); the files are read lazily, not copied."""
    import datasets

    return signal.cast_column("image", datasets.Image())
