"""FGAesQ's two kinds of batch, from one manifest.

- coarse: single images with a score (`scores[data.dimensions[0]]`) or a vote histogram; the EMD target is
  the histogram when the record has columns `votes_1..votes_10`, else a discretised Gaussian on
  1..10 whose expectation is the score (after mapping `data.rating_scale` onto 1..10);
- fine: series (records sharing `category` and `series`) with at least two ranked members (rank
  0 = best), packed until a batch holds `fine_batch_images` images (paper: ~64, "with minor
  variations due to series length").
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
from PIL import Image

from psdistill.baselines.fgaesq.losses import NUM_BINS, gaussian_target, histogram_target
from psdistill.data.images import load_image
from psdistill.data.records import ImageRecord
from psdistill.core.errors import DataError


def to_bins(score: float, rating_scale: tuple[float, float]) -> float:
    """Map a score on the data's scale linearly onto 1..NUM_BINS."""
    lo, hi = rating_scale
    return 1.0 + (NUM_BINS - 1) * (score - lo) / (hi - lo)


def from_bins(score, rating_scale: tuple[float, float]):
    lo, hi = rating_scale
    return lo + (np.asarray(score) - 1.0) * (hi - lo) / (NUM_BINS - 1)


@dataclass
class CoarseItem:
    record: ImageRecord
    target: np.ndarray  # [NUM_BINS] probabilities


def coarse_items(records: Sequence[ImageRecord], dimension: str, rating_scale, sigma: float,
                 histogram_prefix: str = "votes_") -> list[CoarseItem]:
    """Records with a score (or a vote histogram) and their EMD targets."""
    items, gaussian = [], []
    lo, hi = rating_scale
    vote_keys = [f"{histogram_prefix}{k}" for k in range(1, NUM_BINS + 1)]
    for r in records:
        if histogram_prefix and all(k in r.scores for k in vote_keys):
            items.append(CoarseItem(r, histogram_target([[r.scores[k] for k in vote_keys]])[0]))
            continue
        s = r.score(dimension)
        if math.isnan(s):
            continue
        if not lo <= s <= hi:
            raise DataError(f"record {r.id}: {dimension}={s} is outside data.rating_scale {list(rating_scale)}; "
                            "set data.rating_scale to the data's scale")
        items.append(CoarseItem(r, None))
        gaussian.append((len(items) - 1, to_bins(s, rating_scale)))
    if gaussian:
        targets = gaussian_target([s for _, s in gaussian], sigma)
        for (k, _), t in zip(gaussian, targets):
            items[k].target = t
    return items


def fine_series(records: Sequence[ImageRecord]) -> list[list[ImageRecord]]:
    """Series with >= 2 ranked members, each sorted best first."""
    groups: dict[tuple[str, str], list[ImageRecord]] = {}
    for r in records:
        if r.series and r.rank is not None:
            groups.setdefault((r.category, r.series), []).append(r)
    return [sorted(g, key=lambda r: r.rank) for _, g in sorted(groups.items()) if len(g) >= 2]


def coarse_batches(n_items: int, batch_size: int, rng: np.random.Generator, world: int = 1) -> list[np.ndarray]:
    """One epoch of shuffled index batches; a last batch smaller than the world size is dropped."""
    perm = rng.permutation(n_items)
    batches = [perm[i:i + batch_size] for i in range(0, n_items, batch_size)]
    return [b for b in batches if len(b) >= world]


def fine_batches(series: Sequence[Sequence[ImageRecord]], images_per_batch: int, rng: np.random.Generator,
                 world: int = 1) -> list[list[int]]:
    """One epoch of shuffled series-index batches holding >= `images_per_batch` images (the last may hold fewer)."""
    batches, cur, n = [], [], 0
    for k in rng.permutation(len(series)):
        cur.append(int(k))
        n += len(series[k])
        if n >= images_per_batch:
            batches.append(cur)
            cur, n = [], 0
    if cur:
        batches.append(cur)
    return [b for b in batches if len(b) >= world]


class ImageCache:
    """Decoded RGB images by path, least recently used evicted."""

    def __init__(self, size: int = 1024):
        self.size = size
        self._d: OrderedDict[str, Image.Image] = OrderedDict()

    def __call__(self, path: str) -> Image.Image:
        im = self._d.get(path)
        if im is None:
            im = load_image(path)
            if self.size > 0:
                self._d[path] = im
                if len(self._d) > self.size:
                    self._d.popitem(last=False)
        else:
            self._d.move_to_end(path)
        return im


def cycle(make_epoch) -> Iterator:
    """Endless batches: `make_epoch(k)` gives epoch k's list."""
    k = 0
    while True:
        batches = make_epoch(k)
        if not batches:
            return
        yield from batches
        k += 1
