"""The judge and fit stages' artefacts in a run directory, one reader and writer each.

    <run>/comparisons.csv    first_id,second_id,p_first_preferred: every judgment the pool asked for
    <run>/pool.json          reference ids, posterior mean/variance of every training image (pool scale)
    <run>/pseudo_scores.csv  id,score,variance,is_reference: posterior on the rating scale

Predictions have their own module (`predictions.py`). Every file is written to a temporary name and
renamed, so a killed run never leaves half a file behind.
"""
from __future__ import annotations

import csv
import json
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from psdistill.errors import DataError
from psdistill.storage import writing


@dataclass
class PoolFile:
    ids: list[str]  # the training images, in pool index order
    reference_ids: list[str]
    mu: list[float]  # posterior mean per image, on the pool's latent (logit) scale
    var: list[float]
    judge_id: str
    simulated: bool


@contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    """A temporary name to write, renamed to `path` at the end; removed if the write fails (a full disk
    must not keep half a file, nor the space it took)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with writing(path):  # a failed write() names no file: this does
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            yield tmp
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        tmp.replace(path)


def write_csv(path: str | Path, header: Sequence[str], rows: Iterable[Sequence]) -> Path:
    """`header` and `rows` to `path`, atomically (here and for predictions.py)."""
    path = Path(path)
    with _atomic(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def write_comparisons(path: str | Path, ids: Sequence[str], comparisons) -> Path:
    """`comparisons`: rows (i, j, P(first preferred)) with i, j indexing `ids`, in presentation order."""
    return write_csv(path, ["first_id", "second_id", "p_first_preferred"],
                     ([ids[int(i)], ids[int(j)], repr(float(p))]
                      for i, j, p in np.asarray(comparisons, dtype=float).reshape(-1, 3)))


def write_pool(path: str | Path, pool: PoolFile) -> Path:
    path = Path(path)
    with _atomic(path) as tmp:
        tmp.write_text(json.dumps(asdict(pool)))
    return path


def read_pool(path: str | Path) -> PoolFile:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: not found; run the judge stage first")
    return PoolFile(**json.loads(path.read_text()))


def write_pseudo_scores(path: str | Path, ids: Sequence[str], score, var, reference_ids: Sequence[str]) -> Path:
    refs = set(reference_ids)
    return write_csv(path, ["id", "score", "variance", "is_reference"],
                     ([rid, repr(float(score[i])), repr(float(var[i])), int(rid in refs)] for i, rid in enumerate(ids)))


def read_pseudo_scores(path: str | Path) -> dict[str, tuple[float, float]]:
    """{image id: (score, variance)} on the rating scale."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: not found; run the fit stage first")
    with open(path, newline="") as f:
        return {row["id"]: (float(row["score"]), float(row["variance"])) for row in csv.DictReader(f)}


def read_comparisons(path: str | Path) -> list[tuple[str, str, float]]:
    """(first id, second id, P(first preferred)) per judgment, in presentation order."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: not found; run the judge stage first")
    with open(path, newline="") as f:
        return [(row["first_id"], row["second_id"], float(row["p_first_preferred"])) for row in csv.DictReader(f)]
