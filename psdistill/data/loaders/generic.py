"""Generic data: an image folder with a CSV or JSONL manifest, or a Hugging Face `datasets.Dataset`.

CSV: the format of `psdistill.data.manifest` (path,id,category,series,rank,comment + one column per
score dimension, blank = no score). JSONL: one object per line with the same keys; scores are either
top-level numbers (as CSV columns) or a "scores" object, null = no score:

    {"path": "landscape/001.jpg", "id": "001", "category": "landscape", "scores": {"overall": 7.5}}

`load_manifest` reports bad rows and goes on (see `common`); `strict=True` stops at the first, with
the same "file, line N" messages (the pipeline's `read_manifest`).

Hugging Face data sets: each image is written to `out_dir/images/` with its original bytes (no
re-encoding, which would change the very quality being scored), or used in place when the data set
holds only a local path, and `out_dir/manifest.csv` is written. Records carry paths, not PIL images,
because every stage (judge store keyed by image hash, predictions, resumable runs) works on files.
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Optional, Sequence

from PIL import Image

from psdistill.data.loaders.common import (ENCODINGS, LoadReport, LoadResult, check_file, parse_score, read_csv,
                                           read_text, require_columns)
from psdistill.data.manifest import FIXED_COLUMNS, write_manifest
from psdistill.data.records import ImageRecord
from psdistill.core.errors import DataError


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


def _text(row: dict, key: str) -> str:
    value = row.get(key)
    return "" if value is None else str(value).strip()


def _record(row: dict, where: str, root: Path, report: LoadReport, check_files: bool,
            score_range, seen: dict, line: int) -> Optional[ImageRecord]:
    raw_path = _text(row, "path")
    if not raw_path:
        report.problem("malformed", where, "field 'path' is empty")
        return None
    path = Path(raw_path) if Path(raw_path).is_absolute() else root / raw_path
    if not check_file(report, where, path, check_files):
        return None
    rec_id = _text(row, "id") or Path(raw_path).with_suffix("").as_posix()
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
    rank_text, rank = _text(row, "rank"), None
    if rank_text:
        try:
            rank = int(rank_text)
        except ValueError:
            report.problem("bad_value", where, f"field 'rank' is not an integer: {rank_text!r}")
    return ImageRecord(id=rec_id, path=str(path), category=_text(row, "category"), scores=scores,
                       series=_text(row, "series"), rank=rank, comment=_text(row, "comment"))


def from_hf_dataset(dataset, out_dir: str | Path, *, image_column: str = "image", id_column: Optional[str] = None,
                    category_column: Optional[str] = None, series_column: Optional[str] = None,
                    rank_column: Optional[str] = None, score_columns: Optional[Sequence[str]] = None,
                    strict: bool = False) -> LoadResult:
    """Records of a `datasets.Dataset` with an Image column; images land in `out_dir/images/`.

    Ids come from `id_column` or the row index. Score dimensions are `score_columns`, by default
    every numeric column that is not named in another argument. Files are named by row index, so
    any id is safe; an existing identical file is not rewritten.
    """
    import datasets

    features = dataset.features
    if not isinstance(features.get(image_column), datasets.Image):
        raise DataError(f"dataset: column {image_column!r} is not an Image column (columns: {list(features)})")
    named = {image_column, id_column, category_column, series_column, rank_column}
    if score_columns is None:
        score_columns = [c for c, f in features.items() if c not in named
                         and isinstance(f, datasets.Value) and f.dtype.startswith(("int", "uint", "float"))]
    unknown = [c for c in [*score_columns, *(named - {None})] if c not in features]
    if unknown:
        raise DataError(f"dataset: no column(s) {unknown} (columns: {list(features)})")
    out_dir = Path(out_dir)
    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    # decode=False: the stored bytes (or local path), not a decoded PIL image
    raw = dataset.cast_column(image_column, datasets.Image(decode=False))
    report = LoadReport(f"dataset ({len(raw)} rows)", strict=strict)
    width = len(str(max(len(raw) - 1, 0)))
    records, seen = [], {}
    for n, row in enumerate(raw):
        report.rows += 1
        where = f"dataset, row {n}"
        rec_id = str(row[id_column]).strip() if id_column else f"{n:0{width}d}"
        if rec_id in seen:
            report.problem("duplicate_id", where, f"duplicate id {rec_id!r} (first in row {seen[rec_id]})")
            continue
        path = _save_image(row[image_column], image_dir / f"{n:0{width}d}", report, where)
        if path is None:
            continue
        seen[rec_id] = n
        scores = {c: v for c in score_columns
                  if (v := parse_score(report, where, f"column {c!r}", row[c])) is not None}
        rank = row[rank_column] if rank_column else None
        records.append(ImageRecord(
            id=rec_id, path=str(path.resolve()), scores=scores, rank=None if rank is None else int(rank),
            category=_text(row, category_column) if category_column else "",
            series=_text(row, series_column) if series_column else ""))
    report.finish(records)
    if records:
        write_manifest(records, out_dir / "manifest.csv")
    return LoadResult(records, report)


def _save_image(cell: Optional[dict], stem: Path, report: LoadReport, where: str) -> Optional[Path]:
    data, source = (cell or {}).get("bytes"), (cell or {}).get("path")
    if data is None:
        if source and Path(source).is_file():
            return Path(source)
        report.problem("missing_file", where, f"no image bytes and no readable file ({source!r})")
        return None
    try:
        with Image.open(io.BytesIO(data)) as im:
            suffix = "." + (im.format or "png").lower().replace("jpeg", "jpg")
    except (OSError, SyntaxError, ValueError) as e:
        report.problem("bad_image", where, f"cannot read the image bytes ({e})")
        return None
    path = stem.with_suffix(suffix)
    if not (path.is_file() and path.read_bytes() == data):
        path.write_bytes(data)
    return path
