"""PPaint: Chinese paintings with expert ratings and expert pairwise judgments on the same images.

The data set is not public; this is the layout psdistill expects (our design, docs/method.md sec. 1):

    <root>/images/<category>/<image_id>.<jpg|png|...>   one folder per painting category;
                                                         the file name without suffix is the id
    <root>/ratings.csv   expert,image_id,dimension,score          one pointwise rating per row
    <root>/pairs.csv     expert,dimension,first_id,second_id,winner
                         winner: first | second | tie; first_id is the image shown first

    ratings.csv
    expert,image_id,dimension,score
    e01,shanshui_001,composition,7
    e01,shanshui_001,brushwork,8

    pairs.csv
    expert,dimension,first_id,second_id,winner
    e01,composition,shanshui_001,shanshui_007,second

Both CSVs may be UTF-8 or GBK (expert names in Chinese). `rating_scale` (low, high), when given,
bounds the ratings. A record's `scores[dimension]` is the mean rating over the experts who rated
it; the raw ratings and pairs come back as index arrays for the fusion code (`psdistill.ranking`
conventions: a pair is (first, second) in presentation order with outcome P(first preferred) =
1, 0, or 0.5 for a tie). Repeated judgments of a pair are kept (they are data); a repeated rating of
the same (expert, image, dimension) is reported and the first kept.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from psdistill.data.reading import (IMAGE_SUFFIXES, LoadReport, LoadResult, parse_score, read_csv,
                                    require_columns)
from psdistill.data.records import ImageRecord
from psdistill.core.errors import DataError

WINNER_OUTCOME = {"first": 1.0, "second": 0.0, "tie": 0.5}


@dataclass
class Ratings:
    """One entry per rating; `image` indexes the records, `expert`/`dimension` the name lists."""

    image: np.ndarray  # (k,) int
    expert: np.ndarray  # (k,) int
    dimension: np.ndarray  # (k,) int
    score: np.ndarray  # (k,) float


@dataclass
class Pairs:
    """One entry per pairwise judgment."""

    pairs: np.ndarray  # (m, 2) int: record indices (first shown, second shown)
    outcome: np.ndarray  # (m,) float: P(first preferred): 1, 0 or 0.5 (tie)
    expert: np.ndarray  # (m,) int
    dimension: np.ndarray  # (m,) int


@dataclass
class PPaintData(LoadResult):
    ratings: Ratings
    pairs: Pairs
    experts: list[str]
    dimensions: list[str]


def load_ppaint(root: str | Path, *, rating_scale: Optional[tuple[float, float]] = None,
                strict: bool = False) -> PPaintData:
    """Records with mean ratings, plus the raw ratings and pairs, from the layout above."""
    root = Path(root)
    image_root = root / "images"
    if not image_root.is_dir():
        raise DataError(f"{image_root}: not found; PPaint needs images/<category>/<image_id>.<ext>")
    report = LoadReport(str(root), strict=strict)
    records = category_images(image_root, report)
    index = {r.id: k for k, r in enumerate(records)}
    experts: dict[str, int] = {}
    dimensions: dict[str, int] = {}

    rating_rows, seen = [], {}
    path = root / "ratings.csv"
    header, rows = read_csv(path, report)
    require_columns(path, header, ("expert", "image_id", "dimension", "score"))
    for line, row in rows:
        where = f"{path}, line {line}"
        image_id, expert, dim = row["image_id"].strip(), row["expert"].strip(), row["dimension"].strip()
        if image_id not in index:
            report.problem("unknown_id", where, f"image {image_id!r} is not under {image_root}")
            continue
        if not expert or not dim:
            report.problem("malformed", where, "expert and dimension must not be empty")
            continue
        score = parse_score(report, where, "score", row["score"], rating_scale)
        if score is None:
            if not row["score"].strip():
                report.problem("bad_score", where, "score is empty")
            continue
        key = (expert, image_id, dim)
        if key in seen:
            report.problem("duplicate_rating", where, f"{expert!r} rated {image_id!r} on {dim!r} again "
                                                      f"(first on line {seen[key]}); keeping the first")
            continue
        seen[key] = line
        rating_rows.append((index[image_id], experts.setdefault(expert, len(experts)),
                            dimensions.setdefault(dim, len(dimensions)), score))

    pair_rows = []
    path = root / "pairs.csv"
    header, rows = read_csv(path, report)
    require_columns(path, header, ("expert", "dimension", "first_id", "second_id", "winner"))
    for line, row in rows:
        where = f"{path}, line {line}"
        first, second = row["first_id"].strip(), row["second_id"].strip()
        unknown = [i for i in (first, second) if i not in index]
        if unknown:
            report.problem("unknown_id", where, f"image(s) {unknown} are not under {image_root}")
            continue
        if first == second:
            report.problem("malformed", where, f"{first!r} is compared with itself")
            continue
        winner = row["winner"].strip().lower()
        if winner not in WINNER_OUTCOME:
            report.problem("malformed", where, f"winner must be first, second or tie, got {row['winner']!r}")
            continue
        expert, dim = row["expert"].strip(), row["dimension"].strip()
        if not expert or not dim:
            report.problem("malformed", where, "expert and dimension must not be empty")
            continue
        pair_rows.append((index[first], index[second], WINNER_OUTCOME[winner],
                          experts.setdefault(expert, len(experts)), dimensions.setdefault(dim, len(dimensions))))

    r = np.array(rating_rows, dtype=float).reshape(-1, 4)  # float holds these small ints exactly
    ratings = Ratings(r[:, 0].astype(np.int64), r[:, 1].astype(np.int64), r[:, 2].astype(np.int64), r[:, 3])
    p = np.array(pair_rows, dtype=float).reshape(-1, 5)
    pairs = Pairs(p[:, :2].astype(np.int64), p[:, 2], p[:, 3].astype(np.int64), p[:, 4].astype(np.int64))
    dim_names = list(dimensions)
    _mean_ratings(records, ratings, dim_names)
    report.finish(records)
    return PPaintData(records, report, ratings, pairs, list(experts), dim_names)


def category_images(image_root: Path, report: LoadReport) -> list[ImageRecord]:
    """One record per image file of `image_root/<category>/`, the id its name without suffix."""
    records, seen = [], {}
    for path in sorted(p for p in image_root.rglob("*") if p.is_file() and not p.name.startswith(".")):
        report.rows += 1
        rel = path.relative_to(image_root)
        if len(rel.parts) != 2:
            report.problem("unexpected_file", str(path), "not directly inside a category folder")
            continue
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            report.problem("unexpected_file", str(path), f"suffix {path.suffix!r} is not an image type")
            continue
        if path.stem in seen:
            report.problem("duplicate_id", str(path), f"duplicate id {path.stem!r} (first: {seen[path.stem]})")
            continue
        seen[path.stem] = path
        records.append(ImageRecord(id=path.stem, path=str(path.resolve()), category=rel.parts[0]))
    if not records:
        raise DataError(f"{image_root}: no images found in category folders")
    return records


def _mean_ratings(records: list[ImageRecord], ratings: Ratings, dim_names: list[str]) -> None:
    n, d = len(records), len(dim_names)
    flat = ratings.image * d + ratings.dimension
    total = np.bincount(flat, weights=ratings.score, minlength=n * d).reshape(n, d)
    count = np.bincount(flat, minlength=n * d).reshape(n, d)
    for k, rec in enumerate(records):
        rec.scores = {dim_names[j]: float(total[k, j] / count[k, j]) for j in range(d) if count[k, j]}
