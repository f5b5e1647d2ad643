"""The image folder + CSV manifest: the format the demo writes and users bring their images in.

    path,id,category,series,rank,overall,composition
    portraits/astronaut_0.png,astronaut_0,portraits,astronaut,0,10.0,9.5

`path` is required and relative to the manifest's folder (or absolute). `id` defaults to the path
without its suffix. Every column that is not one of the fixed columns is a score dimension; a blank
cell means "no score". Rows are never dropped silently: a bad row raises `DataError` naming the
file, the line and the field.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Iterable, Sequence

from psdistill.data.records import ImageRecord
from psdistill.errors import DataError

FIXED_COLUMNS = ("path", "id", "category", "series", "rank", "comment")


def read_manifest(csv_path: str | Path, check_files: bool = True) -> list[ImageRecord]:
    """Read a manifest; image paths come back absolute."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: manifest not found")
    root = csv_path.parent.resolve()
    try:
        with open(csv_path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or "path" not in reader.fieldnames:
                raise DataError(f"{csv_path}: the header needs a 'path' column (found {reader.fieldnames})")
            dims = [c for c in reader.fieldnames if c not in FIXED_COLUMNS]
            records, seen = [], {}
            for line, row in enumerate(reader, start=2):  # line 1 is the header
                records.append(_parse_row(csv_path, root, line, row, dims, seen, check_files))
    except UnicodeDecodeError as e:
        raise DataError(f"{csv_path}: not UTF-8 text ({e})") from None
    if not records:
        raise DataError(f"{csv_path}: no rows")
    return records


def _parse_row(csv_path, root, line, row, dims, seen, check_files) -> ImageRecord:
    where = f"{csv_path}, line {line}"
    if None in row:  # more cells than header columns
        raise DataError(f"{where}: {len(row[None])} more cells than the header has columns")
    raw_path = (row.get("path") or "").strip()
    if not raw_path:
        raise DataError(f"{where}: field 'path' is empty")
    path = Path(raw_path) if Path(raw_path).is_absolute() else root / raw_path
    if check_files and not path.is_file():
        raise DataError(f"{where}: image file {path} not found")
    rec_id = (row.get("id") or "").strip() or Path(raw_path).with_suffix("").as_posix()
    if rec_id in seen:
        raise DataError(f"{where}: duplicate id {rec_id!r} (first on line {seen[rec_id]})")
    seen[rec_id] = line
    scores = {}
    for dim in dims:
        cell = (row.get(dim) or "").strip()
        if not cell:
            continue
        try:
            value = float(cell)
        except ValueError:
            raise DataError(f"{where}: field {dim!r} is not a number: {cell!r}") from None
        if not math.isfinite(value):
            raise DataError(f"{where}: field {dim!r} is not finite: {cell!r}")
        scores[dim] = value
    rank_cell = (row.get("rank") or "").strip()
    try:
        rank = int(rank_cell) if rank_cell else None
    except ValueError:
        raise DataError(f"{where}: field 'rank' is not an integer: {rank_cell!r}") from None
    return ImageRecord(
        id=rec_id,
        path=str(path),
        category=(row.get("category") or "").strip(),
        scores=scores,
        series=(row.get("series") or "").strip(),
        rank=rank,
        comment=(row.get("comment") or "").strip(),
    )


def write_manifest(records: Sequence[ImageRecord], csv_path: str | Path) -> Path:
    """Write records with paths relative to the manifest's folder where possible."""
    csv_path = Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    root = csv_path.parent.resolve()
    dims = sorted({d for r in records for d in r.scores})
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(list(FIXED_COLUMNS) + dims)
        for r in records:
            p = Path(r.path).resolve()
            rel = p.relative_to(root).as_posix() if p.is_relative_to(root) else str(p)
            writer.writerow([rel, r.id, r.category, r.series, "" if r.rank is None else r.rank, r.comment]
                            + [_fmt(r.scores.get(d)) for d in dims])
    return csv_path


def _fmt(v) -> str:
    return "" if v is None else repr(float(v))


def dimensions(records: Iterable[ImageRecord]) -> list[str]:
    return sorted({d for r in records for d in r.scores})
