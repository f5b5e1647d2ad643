"""The image folder + CSV manifest: the format the demo writes and users bring their images in.

    path,id,category,series,rank,overall,composition
    portraits/astronaut_0.png,astronaut_0,portraits,astronaut,0,10.0,9.5

`path` is required and relative to the manifest's folder (or absolute). `id` defaults to the path
without its suffix. Every column that is not one of the fixed columns is a score dimension; a blank
cell means "no score". The file may be UTF-8 (with or without Excel's BOM) or GBK, or a `.jsonl`
manifest with the same keys; another encoding is named with `encoding=` (the pipeline's `data.encoding`). One reader (`loaders.generic.load_manifest`) in two modes: it reports
bad rows and goes on, or, as `read_manifest` here (the pipeline's), stops at the first; every
message names the file, the line and the field.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterable, Optional, Sequence

from psdistill.data.records import ImageRecord
from psdistill.core.errors import DataError

FIXED_COLUMNS = ("path", "id", "category", "series", "rank", "comment")


def read_manifest(path: str | Path, check_files: bool = True, encoding: Optional[str] = None) -> list[ImageRecord]:
    """The pipeline's reader: `load_manifest` (CSV or JSONL) stopping at the first bad row; image paths
    come back absolute. `encoding`: the file's, when it is none of those tried (see the module docstring)."""
    # Imported here: the loaders import this module's columns and writer.
    from psdistill.data.loaders.generic import load_manifest

    records = load_manifest(path, strict=True, check_files=check_files, encoding=encoding).records
    if not records:
        raise DataError(f"{path}: no rows")
    return records


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
