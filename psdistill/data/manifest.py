"""The image folder + CSV manifest: the format the demo writes and users bring their images in.

    path,id,category,series,rank,overall,composition
    portraits/astronaut_0.png,astronaut_0,portraits,astronaut,0,10.0,9.5

`path` is required and relative to the manifest's folder (or absolute). `id` defaults to the path
without its suffix. Every column that is not one of the fixed columns is a score dimension; a blank
cell means "no score". The file may be UTF-8 (with or without Excel's BOM) or GBK, or a `.jsonl`
manifest with the same keys; another encoding is named with `encoding=` (the pipeline's
`data.encoding`). In JSONL, scores are either top-level numbers (as CSV columns) or a "scores"
object, null = no score:

    {"path": "landscape/001.jpg", "id": "001", "category": "landscape", "scores": {"overall": 7.5}}

One reader in two modes: `load_manifest` reports bad rows and goes on (see `psdistill.data.reading`),
`read_manifest` (the pipeline's) stops at the first; every message names the file, the line and the field.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Iterable, Optional, Sequence

from psdistill.data.reading import (ENCODINGS, LoadReport, LoadResult, check_file, parse_score, read_csv, read_text,
                                    require_columns)
from psdistill.data.records import ImageRecord
from psdistill.core.errors import DataError

FIXED_COLUMNS = ("path", "id", "category", "series", "rank", "comment")


def load_manifest(path: str | Path, *, strict: bool = False, check_files: bool = True,
                  score_range: Optional[tuple[float, float]] = None, encoding: Optional[str] = None) -> LoadResult:
    """Records of a `.csv` or `.jsonl` manifest; paths are relative to its folder (or absolute).

    `score_range` (low, high), when given, bounds every score dimension. `encoding`: the file's text
    encoding (default: a CSV is tried as UTF-8 with or without BOM, GBK, GB18030; JSONL is UTF-8).
    """
    path = Path(path)
    report = LoadReport(str(path), strict=strict)
    if path.suffix.lower() == ".csv":
        header, rows = read_csv(path, report, (encoding,) if encoding else ENCODINGS)
        require_columns(path, header, ("path",))
    elif path.suffix.lower() in (".jsonl", ".ndjson"):
        rows = _jsonl_rows(path, report, encoding or "utf-8")
    else:
        raise DataError(f"{path}: unknown manifest type; use .csv or .jsonl")
    root, seen, records = path.parent.resolve(), {}, []
    for line, row in rows:
        rec = _record(row, f"{path}, line {line}", root, report, check_files, score_range, seen, line)
        if rec is not None:
            records.append(rec)
    report.finish(records)
    return LoadResult(records, report)


def _jsonl_rows(path: Path, report: LoadReport, encoding: str):
    text, report.encoding = read_text(path, (encoding,))
    with io.StringIO(text) as f:
        for line, text in enumerate(f, start=1):
            if not text.strip():
                continue
            report.rows += 1
            try:
                row = json.loads(text)
            except json.JSONDecodeError as e:
                report.problem("malformed", f"{path}, line {line}", f"not JSON ({e.msg})")
                continue
            if not isinstance(row, dict):
                report.problem("malformed", f"{path}, line {line}", f"expected an object, got {type(row).__name__}")
                continue
            yield line, row


def text_cell(row: dict, key: str) -> str:
    """The row's `key` as stripped text; a missing key or None is ""."""
    value = row.get(key)
    return "" if value is None else str(value).strip()


def _record(row: dict, where: str, root: Path, report: LoadReport, check_files: bool,
            score_range, seen: dict, line: int) -> Optional[ImageRecord]:
    raw_path = text_cell(row, "path")
    if not raw_path:
        report.problem("malformed", where, "field 'path' is empty")
        return None
    path = Path(raw_path) if Path(raw_path).is_absolute() else root / raw_path
    if not check_file(report, where, path, check_files):
        return None
    rec_id = text_cell(row, "id") or Path(raw_path).with_suffix("").as_posix()
    if rec_id in seen:
        report.problem("duplicate_id", where, f"duplicate id {rec_id!r} (first on line {seen[rec_id]})")
        return None
    seen[rec_id] = line
    cells = {k: v for k, v in row.items() if k not in FIXED_COLUMNS and k != "scores"}
    nested = row.get("scores") or {}
    if not isinstance(nested, dict):
        report.problem("malformed", where, f"'scores' must be an object, got {type(nested).__name__}")
        nested = {}
    for dim in set(cells) & set(nested):
        report.problem("malformed", where, f"score {dim!r} given both top-level and in 'scores'; using 'scores'")
    cells.update(nested)
    scores = {}
    for dim, cell in cells.items():
        value = parse_score(report, where, f"field {dim!r}", cell, score_range)
        if value is not None:
            scores[dim] = value
    rank_text, rank = text_cell(row, "rank"), None
    if rank_text:
        try:
            rank = int(rank_text)
        except ValueError:
            report.problem("bad_value", where, f"field 'rank' is not an integer: {rank_text!r}")
    return ImageRecord(id=rec_id, path=str(path), category=text_cell(row, "category"), scores=scores,
                       series=text_cell(row, "series"), rank=rank, comment=text_cell(row, "comment"))


def read_manifest(path: str | Path, check_files: bool = True, encoding: Optional[str] = None) -> list[ImageRecord]:
    """The pipeline's reader: `load_manifest` (CSV or JSONL) stopping at the first bad row; image paths
    come back absolute. `encoding`: the file's, when it is none of those tried (see the module docstring)."""
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
        writer = csv.writer(f, lineterminator="\n")  # LF, as every other text file we write
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
