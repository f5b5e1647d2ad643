"""The interface every registered scorer offers, and the image inputs it takes.

    >>> scorer = psdistill.load_scorer("runs/demo")          # doctest: +SKIP
    >>> scorer("a.jpg")                                      # one image: a float
    3.91
    >>> scorer(["a.jpg", pil_image, uint8_array])            # a list: an array, in input order
    array([3.91, 2.47, 4.02])

An image is a path, a PIL image (any mode) or a numpy HxWx3 uint8 array (RGB). `score(images)`
always returns an array (a single image counts as a list of one); calling the scorer returns a
float for a single image, as pyiqa's metrics return one value per image. A scorer of several
`dimensions` returns one column per dimension, (N, D), and a row of D for a single image.
A calibrated student (`calibration.json` in its folder) also gives intervals:
`s, lo, hi = scorer.score(images, coverage=0.9)` (psdistill/scoring/conformal.py: `Intervals`).
"""
from __future__ import annotations

from pathlib import Path
from collections.abc import Iterable
from typing import Protocol, Sequence, Union

import numpy as np
from PIL import Image

from psdistill.data.images import load_image, to_rgb
from psdistill.core.errors import DataError

ImageInput = Union[str, Path, Image.Image, np.ndarray]
SCORE_BATCH_SIZE = 16  # images per forward pass when scoring, unless a caller says otherwise
SINGLE_TYPES = (str, Path, Image.Image, np.ndarray)


class Scorer(Protocol):
    name: str
    score_range: tuple[float, float]
    lower_better: bool
    dimensions: tuple[str, ...]  # what the scores measure (the predictions column)

    @property
    def device(self): ...  # the torch.device the model runs on

    def score(self, images: Union[ImageInput, Sequence[ImageInput]]) -> np.ndarray: ...

    def __call__(self, images: Union[ImageInput, Sequence[ImageInput]]) -> Union[float, np.ndarray]: ...


def by_dimension(scorer, scores) -> dict[str, np.ndarray]:
    """{dimension: one score per image} from `scorer.score`'s array: (N,) for one dimension, (N, D) for several."""
    scores = np.asarray(scores, dtype=float).reshape(-1, len(scorer.dimensions))
    return {d: scores[:, k] for k, d in enumerate(scorer.dimensions)}


def as_image(x, index: int = 0) -> Image.Image:
    """An RGB PIL image from a path, a PIL image or an HxWx3 uint8 array; DataError names what is wrong."""
    if isinstance(x, Image.Image):
        return to_rgb(x)
    if isinstance(x, (str, Path)):
        return load_image(x)
    if isinstance(x, np.ndarray):
        if x.ndim != 3 or x.shape[2] != 3 or x.dtype != np.uint8:
            raise DataError(f"image {index}: a numpy image must be HxWx3 uint8 (RGB), got shape {x.shape} {x.dtype}")
        return Image.fromarray(x)
    raise DataError(f"image {index}: expected a path, a PIL image or an HxWx3 uint8 array, got {type(x).__name__}")


def as_batch(images) -> tuple[list, bool]:
    """(the inputs as a list, whether a single image was given); a str is one path, never characters."""
    if isinstance(images, SINGLE_TYPES):
        return [images], True
    if not isinstance(images, Iterable):
        raise DataError(f"expected an image (a path, a PIL image or an HxWx3 uint8 array) or a list of them, "
                        f"got {type(images).__name__}")
    return list(images), False


def weight_files(path) -> dict[str, list[int]]:
    """{file: [bytes, mtime_ns]} of a scorer's saved weights and configs (a folder's, or one file): what
    changes when it is retrained, without reading gigabytes."""
    path = Path(path)
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    return {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in files}


class CallableScorer:
    """Mixin: `scorer(x)` on top of the subclass's `score(list) -> np.ndarray`. `identity`: what makes two
    scorers give the same scores (name, weights, settings); batch scoring resumes only its own scores."""

    dimensions: tuple[str, ...] = ("overall",)
    identity: dict = {}

    def __call__(self, images, **kwargs) -> Union[float, np.ndarray]:
        batch, single = as_batch(images)
        scores = self.score(batch, **kwargs)
        if not single:
            return scores
        if isinstance(scores, tuple):  # with coverage: Intervals(score, lo, hi) of one image
            return type(scores)(*(float(x[0]) if x.ndim == 1 else x[0] for x in scores))
        return float(scores[0]) if scores.ndim == 1 else scores[0]
