"""Predictions of one scorer: `<run>/predictions/<scorer>.csv` with columns id,path,<dimension>...

Every scorer (student, teacher, pseudo-scores, FGAesQ) writes this format, so evaluation reads them
all the same way and puts them side by side.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Mapping, Sequence

from psdistill.data.records import ImageRecord
from psdistill.data.run_files import write_csv
from psdistill.core.errors import DataError


def write_predictions(path: str | Path, records: Sequence[ImageRecord],
                      scores: Mapping[str, Sequence[float]]) -> Path:
    """`scores` maps a dimension to one score per record (same order as `records`)."""
    dims = list(scores)
    for d in dims:
        if len(scores[d]) != len(records):
            raise ValueError(f"{d}: {len(scores[d])} scores for {len(records)} records")
    # Atomic: a killed run never leaves half a predictions file.
    return write_csv(path, ["id", "path"] + dims,
                     ([r.id, r.path] + [repr(float(scores[d][n])) for d in dims] for n, r in enumerate(records)))


def read_predictions(path: str | Path) -> dict[str, dict[str, float]]:
    """{dimension: {image id: score}}; a blank (or NaN) cell is a missing score, as blank is in the ground truth."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: predictions file not found")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        # `<d>_lo`, `<d>_hi` beside a column `d` are its interval's bounds (psdistill score --coverage), not dimensions.
        dims = [c for c in columns if c not in ("id", "path")
                and not (c.endswith(("_lo", "_hi")) and c[:-3] in columns)]
        if "id" not in (reader.fieldnames or []) or not dims:
            raise DataError(f"{path}: needs columns id,path,<dimension>... (found {reader.fieldnames})")
        out: dict[str, dict[str, float]] = {d: {} for d in dims}
        for line, row in enumerate(reader, start=2):
            for d in dims:
                text = row[d]
                if text is None:  # csv gives None for the fields of a short row: a truncated file, not a blank
                    raise DataError(f"{path}, line {line}: field {d!r} is missing (the row has too few fields)")
                if not text.strip():
                    continue
                try:
                    v = float(text)
                except ValueError:
                    raise DataError(f"{path}, line {line}: field {d!r} is not a number: {text!r}") from None
                if not math.isnan(v):
                    out[d][row["id"]] = v
    return out
