"""Expert ratings and preferences from CSV files: one long file each, or a folder of one file per expert.

    ratings.csv      expert,image_id,dimension,score
    preferences.csv  expert,dimension,first_id,second_id and one outcome column:
                     winner     first | second | tie    (PPaint's pairs.csv)
                     preferred  the id of the preferred image, or tie
                     p_first    P(first preferred) in [0, 1], e.g. a share of several votes

A folder instead of a file: every *.csv directly in it, one per expert; a file without an `expert`
column belongs to the expert named by the file (`e01.csv`: e01). UTF-8 or GBK, as every loader.

Missing ratings are simply absent rows (or a blank score): no expert has to rate every image, and
an image may have preferences and no rating. A pair may be judged again (kept: it is data); a second
rating of the same (expert, image, dimension) is an error. Every image id must be one of `records`.
The first bad row raises `DataError` naming the file, the line and the field.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from psdistill.data.reading import LoadReport, parse_score, read_csv, require_columns
from psdistill.data.loaders.ppaint import WINNER_OUTCOME, Pairs, PPaintData, Ratings, category_images
from psdistill.data.manifest import read_manifest
from psdistill.data.records import ImageRecord
from psdistill.core.errors import DataError

OUTCOME_COLUMNS = ("winner", "preferred", "p_first")


def load_expert_files(records: Sequence[ImageRecord], ratings: str | Path, preferences: str | Path, *,
                      rating_scale: Optional[tuple[float, float]] = None) -> PPaintData:
    """The ratings and preferences of `records` (indices into them), as `load_ppaint` returns them.

    `rating_scale` (low, high), when given, bounds the ratings.
    """
    index = {r.id: k for k, r in enumerate(records)}
    report = LoadReport(f"{ratings} + {preferences}", strict=True)
    experts: dict[str, int] = {}
    dimensions: dict[str, int] = {}
    seen: dict[tuple, str] = {}
    rating_rows, pair_rows = [], []
    for path, per_expert in _files(ratings, "ratings"):
        for where, expert, row in _rows(path, per_expert, report, ("image_id", "dimension", "score")):
            image = _image(index, where, "image_id", row["image_id"])
            dim = _name(where, "dimension", row["dimension"])
            score = parse_score(report, where, "field 'score'", row["score"], rating_scale)
            if score is None:  # blank: not rated
                continue
            key = (expert, image, dim)
            if key in seen:
                raise DataError(f"{where}: {expert!r} rated {records[image].id!r} on {dim!r} again "
                                f"(first at {seen[key]})")
            seen[key] = where
            rating_rows.append((image, experts.setdefault(expert, len(experts)),
                                dimensions.setdefault(dim, len(dimensions)), score))
    for path, per_expert in _files(preferences, "preferences"):
        for where, expert, row in _rows(path, per_expert, report, ("dimension", "first_id", "second_id"),
                                        outcome=True):
            first = _image(index, where, "first_id", row["first_id"])
            second = _image(index, where, "second_id", row["second_id"])
            if first == second:
                raise DataError(f"{where}: field 'second_id': {records[first].id!r} is compared with itself")
            dim = _name(where, "dimension", row["dimension"])
            outcome = _outcome(where, row, records[first].id, records[second].id)
            pair_rows.append((first, second, outcome, experts.setdefault(expert, len(experts)),
                              dimensions.setdefault(dim, len(dimensions))))
    r = np.array(rating_rows, dtype=float).reshape(-1, 4)  # float holds these small ints exactly
    p = np.array(pair_rows, dtype=float).reshape(-1, 5)
    report.rows = len(r) + len(p)
    report.records = len(records)
    return PPaintData(list(records), report,
                      Ratings(r[:, 0].astype(np.int64), r[:, 1].astype(np.int64), r[:, 2].astype(np.int64), r[:, 3]),
                      Pairs(p[:, :2].astype(np.int64), p[:, 2], p[:, 3].astype(np.int64), p[:, 4].astype(np.int64)),
                      list(experts), list(dimensions))


def image_records(images: Optional[str | Path] = None, manifest: Optional[str | Path] = None) -> list[ImageRecord]:
    """The images judged: a PPaint image folder (`<category>/<image_id>.<ext>`; stray files are
    reported in a warning and skipped) or a manifest (stopping at its first bad row)."""
    if (images is None) == (manifest is None):
        raise DataError("give the images as a folder or as a manifest, one of the two")
    if manifest is not None:
        return read_manifest(manifest)
    report = LoadReport(str(images))
    records = category_images(Path(images), report)
    report.finish(records)
    return records


def _files(path: str | Path, what: str) -> list[tuple[Path, bool]]:
    """(file, whether it is one expert's file of a folder) for each file to read."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.glob("*.csv") if p.is_file())
        if not files:
            raise DataError(f"{path}: no *.csv files of {what} (one per expert) in this folder")
        return [(f, True) for f in files]
    if not path.is_file():
        raise DataError(f"{path}: {what} file not found")
    return [(path, False)]


def _rows(path: Path, per_expert: bool, report: LoadReport, required: tuple[str, ...], outcome: bool = False):
    """(where, expert, row) per data row; in an expert's own file without an expert column, the expert
    is the file's name."""
    header, rows = read_csv(path, report)
    require_columns(path, header, required if per_expert else ("expert", *required))
    if outcome:
        given = [c for c in OUTCOME_COLUMNS if c in header]
        if len(given) != 1:
            raise DataError(f"{path}: need exactly one outcome column of {list(OUTCOME_COLUMNS)}, "
                            f"the header is {header}")
    for line, row in rows:
        where = f"{path}, line {line}"
        yield where, _name(where, "expert", row["expert"]) if "expert" in row else path.stem, row


def _name(where: str, field: str, cell: str) -> str:
    name = cell.strip()
    if not name:
        raise DataError(f"{where}: field {field!r} is empty")
    return name


def _image(index: dict[str, int], where: str, field: str, cell: str) -> int:
    image_id = _name(where, field, cell)
    if image_id not in index:
        raise DataError(f"{where}: field {field!r}: image {image_id!r} is not one of the {len(index)} images")
    return index[image_id]


def _outcome(where: str, row: dict[str, str], first: str, second: str) -> float:
    """P(first preferred) from whichever outcome column the file has."""
    if "winner" in row:
        winner = row["winner"].strip().lower()
        if winner not in WINNER_OUTCOME:
            raise DataError(f"{where}: field 'winner' must be first, second or tie, got {row['winner']!r}")
        return WINNER_OUTCOME[winner]
    if "preferred" in row:
        preferred = row["preferred"].strip()
        choices = {first: 1.0, second: 0.0, "tie": 0.5}
        if preferred not in choices:
            raise DataError(f"{where}: field 'preferred' must be {first!r}, {second!r} or tie, got {preferred!r}")
        return choices[preferred]
    try:
        value = float(row["p_first"])
    except ValueError:
        raise DataError(f"{where}: field 'p_first' is not a number: {row['p_first']!r}") from None
    if not 0.0 <= value <= 1.0:
        raise DataError(f"{where}: field 'p_first' must be in [0, 1], got {row['p_first']!r}")
    return value
