"""APDDv2 (Jin et al., NeurIPS 2024 D&B; github.com/BestiVictory/APDDv2): paintings with artist scores.

Main annotation file, `APDDv2-10023.csv` (GBK in the release at commit 3ff08cd, whose only non-ASCII
characters are in two comments; other copies may be UTF-8: the encoding is detected, see
`psdistill.data.reading.ENCODINGS`):

    filename,Artistic Categories,Total aesthetic score,Theme and logic,Creativity,...,Mood,Language Comment
    0000d0cd...png,traditional Chinese painting*meticulous*mountains and water,65.83,7.17,,6,...

The 24 categories are English strings style*school-or-technique*subject (checked on the release):
"oil painting" and "sketching" x classicism/romanticism/symbolism x landscapes/portraiture/still
life, and "traditional Chinese painting" x meticulous/freehand x mountains and water/floral and
avian/portraiture.

Official splits, `csvfiles/{train,valid,test}.csv` (8019/1002/1002 images): the same columns
without the comment, and `Score` = total / 10 instead of the total.

Records: id = file name without suffix, path = `image_dir/filename`, category = the "Artistic
Categories" string as given, comment = the language comment. Scores: "total" on 0-100 (a split
file's Score is multiplied by 10 so both files agree), and each attribute on 0-10 under its header
in snake case ("Theme and logic" -> "theme_and_logic", "The overall" -> "the_overall"). A blank
attribute does not apply to the category and is simply absent.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from psdistill.data.reading import LoadReport, LoadResult, check_file, load_records, parse_score, read_csv
from psdistill.data.records import ImageRecord
from psdistill.core.errors import DataError

CHINESE_PAINTING_STYLE = "traditional Chinese painting"  # the style field (before the first "*") of 6 categories
TOTAL_RANGE = (0.0, 100.0)
ATTRIBUTE_RANGE = (0.0, 10.0)
_FILENAME, _CATEGORY, _COMMENT = "filename", "artistic categories", "language comment"
_TOTAL = {"total aesthetic score": 1.0, "score": 10.0}  # header -> factor onto the 0-100 total
SPLIT_TOLERANCE = 0.011  # totals are rounded to 2 decimals, split Scores to 3: at most 0.01 apart on 0-100


def _key(header: str) -> str:
    return " ".join(header.lower().split())


def dimension_name(header: str) -> str:
    """'Theme and logic' -> 'theme_and_logic'."""
    return re.sub(r"\W+", "_", _key(header)).strip("_")


def load_apddv2(csv_path: str | Path, image_dir: Optional[str | Path] = None, *,
                split: Optional[str | Path] = None, strict: bool = False, check_files: bool = True) -> LoadResult:
    """Records of the main annotation file or a split file; `image_dir` defaults to the CSV's folder.

    `split`: a split file whose images restrict the main file's records; its Score must equal
    total / 10 (a disagreement is reported as "mismatch").
    """
    csv_path = Path(csv_path)
    image_dir = Path(image_dir) if image_dir is not None else csv_path.parent
    return load_records(csv_path, strict, lambda report: _read(csv_path, image_dir, report, check_files),
                        None if split is None else lambda recs, lines, report: _restrict(recs, lines, csv_path,
                                                                                         Path(split), report))


def _read(path: Path, image_dir: Path, report: LoadReport, check_files: bool):
    header, rows = read_csv(path, report)
    keys = {_key(h): h for h in header}
    total_key = next((k for k in _TOTAL if k in keys), None)
    if _FILENAME not in keys or _CATEGORY not in keys or total_key is None:
        raise DataError(f"{path}: not an APDDv2 file; need columns 'filename', 'Artistic Categories' and "
                        f"'Total aesthetic score' (or a split file's 'Score'); the header is {header}")
    factor = _TOTAL[total_key]
    attributes = {h: dimension_name(h) for h in header if _key(h) not in (_FILENAME, _CATEGORY, _COMMENT, total_key)}
    records, lines = [], {}
    for line, row in rows:
        where = f"{path}, line {line}"
        filename = row[keys[_FILENAME]].strip()
        if not filename:
            report.problem("malformed", where, "filename is empty")
            continue
        rec_id = Path(filename).stem
        if rec_id in lines:
            report.problem("duplicate_id", where, f"duplicate image {filename!r} (first on line {lines[rec_id]})")
            continue
        if not check_file(report, where, image_dir / filename, check_files):
            continue
        lines[rec_id] = line
        scores = {}
        total = parse_score(report, where, f"column {keys[total_key]!r}", row[keys[total_key]],
                            (TOTAL_RANGE[0] / factor, TOTAL_RANGE[1] / factor))
        if total is not None:
            scores["total"] = total * factor
        for column, dim in attributes.items():
            value = parse_score(report, where, f"column {column!r}", row[column], ATTRIBUTE_RANGE)
            if value is not None:
                scores[dim] = value
        records.append(ImageRecord(id=rec_id, path=str((image_dir / filename).resolve()), scores=scores,
                                   category=row[keys[_CATEGORY]].strip(),
                                   comment=row[keys[_COMMENT]].strip() if _COMMENT in keys else ""))
    return records, lines


def _restrict(records, lines, csv_path: Path, split_path: Path, report: LoadReport) -> list[ImageRecord]:
    # The split's own rows are checked into a separate report, then merged: one summary for the user.
    split_report = LoadReport(str(split_path), strict=report.strict, max_examples=report.max_examples)
    split_records, split_lines = _read(split_path, Path("."), split_report, check_files=False)
    for kind, n in split_report.counts.items():
        report.counts[kind] = report.counts.get(kind, 0) + n
        report.examples.setdefault(kind, []).extend(split_report.examples[kind][:report.max_examples])
    by_id = {r.id: r for r in records}
    kept = []
    for s in split_records:
        where = f"{split_path}, line {split_lines[s.id]}"
        rec = by_id.get(s.id)
        if rec is None:
            report.problem("unknown_id", where, f"image {s.id!r} is not in {csv_path} (or was skipped there)")
            continue
        a, b = s.scores.get("total"), rec.scores.get("total")
        if a is not None and b is not None and abs(a - b) > SPLIT_TOLERANCE:
            report.problem("mismatch", where, f"Score {a / 10:g} is not total/10 = {b / 10:g} "
                                              f"({csv_path}, line {lines[s.id]}); keeping the total")
        kept.append(rec)
    return kept
