"""FGAesthetics-style series (FGAesQ paper, Sec. 3): similar images ranked by within-series pairwise labels.

The release format is not public; psdistill reads two CSVs (UTF-8 or GBK):

    members.csv    series,image_id,path[,category][,rank]
    s001,s001_a,natural/s001_a.jpg,Natural
    pairs.csv      series,first_id,second_id,p_first        (or winner: first | second | tie)
    s001,s001_a,s001_b,0.9

`path` is relative to `image_root` (default: the members file's folder). `p_first` is the share of
annotators who preferred the first image (the paper: 10 per pair, 0.5 = no consensus).

Ranks (0 = best) come from the pairs when given, else from the `rank` column. From pairs: each image
scores its wins minus its losses over decided pairs (p_first != 0.5) and ranks by that score, equal
scores sharing a rank. A series where some decided pair disagrees with these ranks (a preference
cycle) is a "conflict": the paper filters such series out, and so does this loader (reported). A
`rank` column that disagrees with the ranks from pairs is reported as "mismatch"; the pairs win.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Optional

import numpy as np
from scipy.stats import rankdata

from psdistill.data.reading import (LoadReport, LoadResult, check_file, load_records, parse_score, read_csv,
                                    require_columns)
from psdistill.data.loaders.ppaint import WINNER_OUTCOME
from psdistill.data.records import ImageRecord
from psdistill.core.errors import DataError


def load_fg_series(members_csv: str | Path, pairs_csv: Optional[str | Path] = None, *,
                   image_root: Optional[str | Path] = None, strict: bool = False,
                   check_files: bool = True) -> LoadResult:
    """Series members as records with `series` and `rank`; ranks from `pairs_csv` when given."""
    members_csv = Path(members_csv)
    root = Path(image_root) if image_root is not None else members_csv.parent
    return load_records(members_csv, strict, lambda report: _members(members_csv, root, report, check_files),
                        None if pairs_csv is None else lambda recs, lines, report: _rank_from_pairs(
                            recs, lines, members_csv, Path(pairs_csv), report))


def _members(path: Path, root: Path, report: LoadReport, check_files: bool):
    header, rows = read_csv(path, report)
    require_columns(path, header, ("series", "image_id", "path"))
    records, lines = [], {}
    for line, row in rows:
        where = f"{path}, line {line}"
        series, image_id, rel = row["series"].strip(), row["image_id"].strip(), row["path"].strip()
        if not (series and image_id and rel):
            report.problem("malformed", where, "series, image_id and path must not be empty")
            continue
        if image_id in lines:
            report.problem("duplicate_id", where, f"duplicate image id {image_id!r} (first on line {lines[image_id]})")
            continue
        image = Path(rel) if Path(rel).is_absolute() else root / rel
        if not check_file(report, where, image, check_files):
            continue
        rank = None
        if (row.get("rank") or "").strip():
            value = parse_score(report, where, "rank", row["rank"], (0, np.inf))
            if value is not None and value != int(value):
                report.problem("bad_value", where, f"rank is not an integer: {row['rank']!r}")
            elif value is not None:
                rank = int(value)
        lines[image_id] = line
        records.append(ImageRecord(id=image_id, path=str(image.resolve()), category=(row.get("category") or "").strip(),
                                   series=series, rank=rank))
    return records, lines


def _rank_from_pairs(records, lines, members_csv: Path, path: Path, report: LoadReport) -> list[ImageRecord]:
    header, rows = read_csv(path, report)
    require_columns(path, header, ("series", "first_id", "second_id"))
    if "p_first" not in header and "winner" not in header:
        raise DataError(f"{path}: needs a 'p_first' or a 'winner' column; the header is {header}")
    by_id = {r.id: r for r in records}
    judged = defaultdict(list)  # series -> [(first, second, p_first, line)]
    for line, row in rows:
        where = f"{path}, line {line}"
        series, first, second = row["series"].strip(), row["first_id"].strip(), row["second_id"].strip()
        strangers = [i for i in (first, second) if i not in by_id or by_id[i].series != series]
        if strangers:
            report.problem("unknown_id", where, f"image(s) {strangers} are not members of series {series!r} "
                                                f"in {members_csv} (or were skipped there)")
            continue
        if first == second:
            report.problem("malformed", where, f"{first!r} is compared with itself")
            continue
        if "p_first" in header:
            p = parse_score(report, where, "p_first", row["p_first"], (0.0, 1.0))
            if p is None:
                continue
        else:
            p = WINNER_OUTCOME.get(row["winner"].strip().lower())
            if p is None:
                report.problem("malformed", where, f"winner must be first, second or tie, got {row['winner']!r}")
                continue
        judged[series].append((first, second, p, line))

    conflicted = set()
    for series, rows_ in judged.items():
        ids = sorted({i for f, s, _, _ in rows_ for i in (f, s)})
        copeland = dict.fromkeys(ids, 0)
        for first, second, p, _ in rows_:
            if p != 0.5:
                winner, loser = (first, second) if p > 0.5 else (second, first)
                copeland[winner] += 1
                copeland[loser] -= 1
        # dense ranks of -score: 0 = most wins, equal scores share a rank
        ranks = dict(zip(ids, (rankdata([-copeland[i] for i in ids], method="dense") - 1).astype(int).tolist()))
        broken = [(f, s, line) for f, s, p, line in rows_ if p != 0.5 and
                  not (copeland[f] > copeland[s] if p > 0.5 else copeland[s] > copeland[f])]
        if broken:
            f, s, line = broken[0]
            report.problem("conflict", f"{path}, line {line}",
                           f"series {series!r} has contradicting pairwise labels ({len(broken)} pair(s) "
                           f"disagree with the wins-minus-losses ranking, e.g. {f!r} vs {s!r}); series left out")
            conflicted.add(series)
            continue
        for image_id, rank in ranks.items():
            rec = by_id[image_id]
            if rec.rank is not None and rec.rank != rank:
                report.problem("mismatch", f"{members_csv}, line {lines[image_id]}",
                               f"rank {rec.rank} of {image_id!r} disagrees with rank {rank} from {path}; using {rank}")
            rec.rank = rank
        for rec in records:
            if rec.series == series and rec.id not in ranks:
                report.problem("unranked", f"{members_csv}, line {lines[rec.id]}",
                               f"{rec.id!r} is in no pair of series {series!r} in {path}; rank {rec.rank} kept")
    return [r for r in records if r.series not in conflicted]
