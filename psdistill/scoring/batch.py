"""Scoring a list of images into a predictions CSV, resumable after a kill (any registered scorer)."""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
from tqdm.auto import tqdm

from psdistill.core.errors import ConfigError, DataError
from psdistill.core.logs import bar_disable
from psdistill.data.predictions import write_predictions
from psdistill.data.records import ImageRecord
from psdistill.scoring.api import SCORE_BATCH_SIZE, ImageInput
from psdistill.scoring.conformal import CALIBRATION_FILE, Intervals, check_coverage

logger = logging.getLogger(__name__)


def score_images(scorer, images: Sequence[Union[ImageInput, ImageRecord]], out_csv,
                 batch_size: int = SCORE_BATCH_SIZE, on_bad_image: str = "error", overwrite: bool = False,
                 coverage: Optional[float] = None) -> Union[np.ndarray, Intervals]:
    """Score images with a tqdm bar into `out_csv` in the predictions format (id,path,<dimension>...).

    Records keep their ids; a path's id is its file name without suffix. Scores are appended to
    `<out_csv>.partial` batch by batch, so a killed run loses at most one batch: rerun the same call
    and only the images missing from `out_csv` and the partial file (or scored NaN there) are scored.
    `<out_csv>.scorer.json` records which scorer wrote them: scores of another scorer (other weights,
    dimensions, prompts or head) are never resumed; they stop the call, or are replaced with `overwrite`.
    `on_bad_image="skip"` scores an unreadable image as NaN (a missing score) and names it in a warning
    instead of stopping. With `coverage` (a calibrated scorer, psdistill/scoring/conformal.py) each dimension
    gets `<dimension>_lo` and `<dimension>_hi` columns beside it and `Intervals(score, lo, hi)` is returned.
    """
    if on_bad_image not in ("error", "skip"):
        raise ConfigError(f"on_bad_image: 'error' or 'skip', got {on_bad_image!r}")
    if coverage is not None:
        coverage = check_coverage(coverage)
        if getattr(scorer, "calibration", None) is None:
            raise ConfigError(f"coverage: scorer {scorer.name!r} has no calibration ({CALIBRATION_FILE} in a "
                              "trained student's folder), so no intervals")
    records = [im if isinstance(im, ImageRecord) else ImageRecord(id=Path(im).stem, path=str(im)) for im in images]
    dims = list(scorer.dimensions)
    if coverage is not None:  # each dimension's score, then its bounds
        dims = [c for d in dims for c in (d, f"{d}_lo", f"{d}_hi")]
    out_csv, partial = Path(out_csv), Path(str(out_csv) + ".partial")
    _claim(out_csv, partial, scorer, overwrite, coverage)
    done = {**_scored(out_csv, dims), **_scored(partial, dims)}  # path -> scores, from an earlier run
    todo = [r for r in records if str(r.path) not in done]
    skipped = []
    partial.parent.mkdir(parents=True, exist_ok=True)
    with open(partial, "a", newline="") as f, tqdm(total=len(records), initial=len(records) - len(todo),
                                                  desc=f"scoring ({scorer.name})", unit="img", disable=bar_disable()) as bar:
        w = csv.writer(f, lineterminator="\n")  # LF, as every other text file we write
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            try:
                scores = score_columns(scorer, [r.path for r in chunk], batch_size, coverage)
            except DataError:
                if on_bad_image == "error":
                    raise
                scores = [_score_or_nan(scorer, r.path, skipped, len(dims), coverage) for r in chunk]  # find the bad one(s)
            for r, v in zip(chunk, scores):
                done[str(r.path)] = [float(x) for x in v]
                w.writerow([str(r.path), *map(repr, done[str(r.path)])])
            f.flush()
            bar.update(len(chunk))
    if skipped:
        logger.warning("skipped %d unreadable image(s): %s", len(skipped), "; ".join(skipped[:10]))
    scores = np.array([done[str(r.path)] for r in records], dtype=float).reshape(len(records), len(dims))
    write_predictions(out_csv, records, {d: scores[:, k] for k, d in enumerate(dims)})
    partial.unlink()
    return from_columns(scores, coverage)


def from_columns(scores: np.ndarray, coverage: Optional[float]) -> Union[np.ndarray, Intervals]:
    """What `scorer.score` returns, from `score_columns`' (n, columns): (n,) or (n, D), or their Intervals."""
    parts = [scores[:, k::3] for k in range(3)] if coverage is not None else [scores]
    parts = [p[:, 0] if p.shape[1] == 1 else p for p in parts]
    return Intervals(*parts) if coverage is not None else parts[0]


def score_columns(scorer, paths: list, batch_size: int, coverage: Optional[float]) -> np.ndarray:
    """(n, columns): the scores, or with `coverage` each dimension's score, lo and hi side by side."""
    if coverage is None:
        return scorer.score(paths, batch_size=batch_size).reshape(len(paths), -1)
    parts = [np.asarray(x).reshape(len(paths), -1) for x in scorer.score(paths, batch_size=batch_size, coverage=coverage)]
    return np.stack(parts, 2).reshape(len(paths), -1)  # d0, d0_lo, d0_hi, d1, ...


def _claim(out_csv: Path, partial: Path, scorer, overwrite: bool, coverage: Optional[float] = None) -> None:
    """Make `out_csv` this scorer's: keep what it wrote, refuse (or, overwriting, delete) another's scores."""
    stamp = Path(str(out_csv) + ".scorer.json")
    # Bounds depend on the coverage and the calibration too; scores alone keep the stamp they always had.
    intervals = [[coverage, scorer.calibration.to_dict()]] if coverage is not None else []
    mine = {"scorer": scorer.name, "dimensions": list(scorer.dimensions),
            "fingerprint": hashlib.sha256(json.dumps(
                [scorer.name, list(scorer.dimensions), getattr(scorer, "identity", {}), *intervals],
                sort_keys=True, default=str).encode()).hexdigest()}
    existing = [p for p in (out_csv, partial) if p.is_file()]
    theirs = json.loads(stamp.read_text()) if stamp.is_file() else None
    if existing and (theirs or {}).get("fingerprint") != mine["fingerprint"]:
        by = f"scorer {theirs['scorer']!r} with other weights or settings" if theirs else "an unknown scorer"
        if not overwrite:
            raise ConfigError(f"{existing[0]}: holds scores of {by}, not of this {scorer.name!r}; "
                              "score into another file, or pass --overwrite to replace them")
        logger.warning("%s: replacing the scores of %s", out_csv, by)
        for p in existing:
            p.unlink()
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(mine, indent=2) + "\n")


def _scored(path: Path, dims: list[str]) -> dict[str, list[float]]:
    """{image path: [score per dimension]} of a predictions file or a partial file (path,score...); a row
    without its line end (cut off by a kill mid-write, so its number may be cut short too) is left out."""
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        rows = list(csv.reader(line for line in f.readlines() if line.endswith("\n")))
    if rows and rows[0][:2] == ["id", "path"]:  # a finished predictions file
        if not set(dims) <= set(rows[0]):
            return {}
        cols = [rows[0].index(d) for d in dims]
        return {r[1]: [float(r[c]) for c in cols] for r in rows[1:]
                if len(r) > max(cols) and all(r[c] and not math.isnan(float(r[c])) for c in cols)}
    out = {}
    for r in rows:
        try:
            if len(r) == len(dims) + 1 and not any(math.isnan(float(x)) for x in r[1:]):  # NaN: retried
                out[r[0]] = [float(x) for x in r[1:]]
        except ValueError:
            continue
    return out


def _score_or_nan(scorer, path, skipped: list, n_dims: int, coverage: Optional[float] = None) -> list[float]:
    try:
        return [float(x) for x in score_columns(scorer, [path], 1, coverage).reshape(-1)]
    except DataError as e:
        skipped.append(str(e))
        return [float("nan")] * n_dims
