"""A Hugging Face `datasets.Dataset` with an Image column, written as images + a manifest.

Each image is written to `out_dir/images/` with its original bytes (no re-encoding, which would
change the very quality being scored), or used in place when the data set holds only a local path,
and `out_dir/manifest.csv` is written. Records carry paths, not PIL images, because every stage
(judge store keyed by image hash, predictions, resumable runs) works on files.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Optional, Sequence

from PIL import Image

from psdistill.data.manifest import text_cell, write_manifest
from psdistill.data.reading import LoadReport, LoadResult, parse_score
from psdistill.data.records import ImageRecord
from psdistill.core.errors import DataError


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
            category=text_cell(row, category_column) if category_column else "",
            series=text_cell(row, series_column) if series_column else ""))
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
