"""The judge and fit stages' artefacts in a run directory, one reader and writer each.

    <run>/comparisons.csv    dimension,first_id,second_id,p_first_preferred: every judgment each
                             dimension's pool asked for, in presentation order
    <run>/pool.json          {dimension: reference ids, posterior mean/variance of every training image
                             (pool scale)}
    <run>/pseudo_scores.csv  id, then per dimension <dim>,<dim>_variance,<dim>_is_reference: the
                             posterior on the rating scale

Every reader returns {dimension: ...}, dimensions in the order the run lists them (`data.dimensions`).

Predictions have their own module (`predictions.py`). Every file is written to a temporary name and
renamed, so a killed run never leaves half a file behind.
"""
from __future__ import annotations

import csv
import json
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np

from psdistill.core.errors import DataError
from psdistill.core.storage import writing


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
        w = csv.writer(f, lineterminator="\n")  # LF, as every other text file we write
        w.writerow(header)
        w.writerows(rows)
    return path


def write_comparisons(path: str | Path, ids: Sequence[str], comparisons: Mapping[str, np.ndarray]) -> Path:
    """`comparisons`: {dimension: rows (i, j, P(first preferred)) with i, j indexing `ids`, in presentation order}."""
    return write_csv(path, ["dimension", "first_id", "second_id", "p_first_preferred"],
                     ([dim, ids[int(i)], ids[int(j)], repr(float(p))] for dim, rows in comparisons.items()
                      for i, j, p in np.asarray(rows, dtype=float).reshape(-1, 3)))


def write_pool(path: str | Path, pools: Mapping[str, PoolFile]) -> Path:
    """{dimension: its pool}."""
    path = Path(path)
    with _atomic(path) as tmp:
        tmp.write_text(json.dumps({dim: asdict(pool) for dim, pool in pools.items()}))
    return path


def read_pool(path: str | Path) -> dict[str, PoolFile]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: not found; run the judge stage first")
    return {dim: PoolFile(**pool) for dim, pool in json.loads(path.read_text()).items()}


def write_pseudo_scores(path: str | Path, ids: Sequence[str], scores: Mapping[str, tuple], reference_ids: Mapping[str, Sequence[str]]) -> Path:
    """`scores`: {dimension: (score, variance) arrays in `ids` order}; `reference_ids`: {dimension: its references}."""
    refs = {dim: set(r) for dim, r in reference_ids.items()}
    header = ["id"] + [c for dim in scores for c in (dim, f"{dim}_variance", f"{dim}_is_reference")]
    return write_csv(path, header, ([rid] + [x for dim, (score, var) in scores.items() for x in
                                             (repr(float(score[i])), repr(float(var[i])), int(rid in refs[dim]))]
                                    for i, rid in enumerate(ids)))


def read_pseudo_scores(path: str | Path) -> dict[str, dict[str, tuple[float, float]]]:
    """{dimension: {image id: (score, variance)}} on the rating scale (what `training_signal` takes)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: not found; run the fit stage first")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        dims = [c for c in columns if f"{c}_variance" in columns]
        if "id" not in columns or not dims:
            raise DataError(f"{path}: needs columns id,<dimension>,<dimension>_variance... (found {columns})")
        out: dict[str, dict[str, tuple[float, float]]] = {d: {} for d in dims}
        for line, row in enumerate(reader, start=2):
            for d in dims:
                try:
                    out[d][row["id"]] = (float(row[d]), float(row[f"{d}_variance"]))
                except (TypeError, ValueError):
                    raise DataError(f"{path}, line {line}: {d!r} or its variance is not a number") from None
        return out


def read_comparisons(path: str | Path) -> dict[str, list[tuple[str, str, float]]]:
    """{dimension: (first id, second id, P(first preferred)) per judgment, in presentation order}."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: not found; run the judge stage first")
    out: dict[str, list[tuple[str, str, float]]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            out.setdefault(row["dimension"], []).append(
                (row["first_id"], row["second_id"], float(row["p_first_preferred"])))
    return out
