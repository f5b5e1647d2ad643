"""What every data-file reader shares (the manifest and the data sets' loaders): the load report, the
result type, and reading CSV text of unknown encoding.

Loaders never drop a row silently. A row whose image or identity is unusable (missing file,
duplicate id, unparseable line) is left out; a bad value (NaN, not a number, out of range) is left
out of that record's scores. Either way the report counts it by kind and keeps the first few
offenders as "file, line N: message". With `strict=True` the first offender raises `DataError`
with that same message instead.
"""
from __future__ import annotations

import csv
import io
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

from psdistill.data.records import ImageRecord
from psdistill.core.errors import DataError

# Tried in order. utf-8-sig also reads plain UTF-8; GB18030 is a superset of GBK, tried last so a
# GBK file is named as such in the report.
ENCODINGS = ("utf-8-sig", "gbk", "gb18030")
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})


class DataWarning(UserWarning):
    """A loader skipped rows or values; the message is the load report's summary."""


@dataclass
class LoadReport:
    """Counts of skipped rows and values by kind, with the first `max_examples` offenders of each."""

    source: str
    strict: bool = False
    max_examples: int = 5
    rows: int = 0  # data rows (or files) read
    records: int = 0  # records returned
    encoding: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def problem(self, kind: str, where: str, message: str) -> None:
        """Record one offender; in strict mode raise it instead."""
        text = f"{where}: {message}"
        if self.strict:
            raise DataError(text)
        self.counts[kind] = self.counts.get(kind, 0) + 1
        shown = self.examples.setdefault(kind, [])
        if len(shown) < self.max_examples:
            shown.append(text)

    @property
    def ok(self) -> bool:
        return not self.counts

    def summary(self) -> str:
        head = f"{self.source}: {self.records} records from {self.rows} rows"
        if self.ok:
            return head
        lines = [head + "; issues: " + ", ".join(f"{n} {kind}" for kind, n in self.counts.items())]
        for kind, shown in self.examples.items():
            more = self.counts[kind] - len(shown)
            lines += [f"  {text}" for text in shown] + ([f"  ... and {more} more {kind}"] if more else [])
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"source": self.source, "rows": self.rows, "records": self.records, "encoding": self.encoding,
                "counts": dict(self.counts), "examples": {k: list(v) for k, v in self.examples.items()}}

    def finish(self, records: list[ImageRecord]) -> None:
        """Set the record count; warn (once, with the summary) when anything was skipped."""
        self.records = len(records)
        if not self.ok:
            warnings.warn(self.summary(), DataWarning, stacklevel=3)


@dataclass
class LoadResult:
    records: list[ImageRecord]
    report: LoadReport


def load_records(path: str | Path, strict: bool, read: Callable, refine: Optional[Callable] = None) -> LoadResult:
    """The frame of the two-file loaders: `read(report) -> (records, lines)` under one report, then
    `refine(records, lines, report) -> records` by a second file when given, then the report's totals."""
    report = LoadReport(str(path), strict=strict)
    records, lines = read(report)
    if refine is not None:
        records = refine(records, lines, report)
    report.finish(records)
    return LoadResult(records, report)


def read_text(path: str | Path, encodings: tuple[str, ...] = ENCODINGS) -> tuple[str, str]:
    """(text, encoding) of a file whose encoding is the first of `encodings` that decodes it; when none
    does, the error names the line of the first byte the first encoding cannot read."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    data = path.read_bytes()
    first_error = None
    for encoding in encodings:
        try:
            return data.decode(encoding), encoding
        except UnicodeDecodeError as e:
            first_error = first_error or e
        except LookupError:
            raise DataError(f"{path}: unknown encoding {encoding!r}") from None
    line = data[:first_error.start].count(b"\n") + 1
    bad = data[first_error.start:first_error.end]
    raise DataError(f"{path}, line {line}: cannot decode the text with any of {', '.join(encodings)} "
                    f"(byte(s) {bad!r}; utf-8-sig reads UTF-8 with or without a BOM); re-save it as UTF-8 "
                    "or name its encoding (the pipeline's data.encoding)")


def read_csv(path: str | Path, report: LoadReport,
             encodings: tuple[str, ...] = ENCODINGS) -> tuple[list[str], Iterator[tuple[int, dict[str, str]]]]:
    """The stripped header and the data rows as (first line number, {column: cell}), the text decoded
    with the first of `encodings` that reads it.

    Rows with a different number of cells than the header are reported as malformed and skipped;
    blank lines are not rows. Line numbers count physical lines, so quoted multi-line cells are fine.
    """
    text, report.encoding = read_text(path, encodings)
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [h.strip() for h in next(reader, [])]
    if not any(header):
        raise DataError(f"{path}: empty file, expected a header line")

    def rows():
        line = reader.line_num + 1
        for cells in reader:
            if cells:
                report.rows += 1
                if len(cells) != len(header):
                    report.problem("malformed", f"{path}, line {line}",
                                   f"{len(cells)} cells, the header has {len(header)} columns")
                else:
                    yield line, dict(zip(header, cells))
            line = reader.line_num + 1

    return header, rows()


def require_columns(path: Path, header: list[str], required: tuple[str, ...]) -> None:
    missing = [c for c in required if c not in header]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; the header is {header}")


def parse_score(report: LoadReport, where: str, name: str, cell,
                bounds: Optional[tuple[float, float]] = None) -> Optional[float]:
    """The cell as a float, or None (reported) when it is not a finite number inside `bounds`.

    A blank cell (or JSON null) means "no score" and is not a problem.
    """
    if cell is None or (isinstance(cell, str) and not cell.strip()):
        return None
    try:
        value = float(cell.strip() if isinstance(cell, str) else cell)
    except (TypeError, ValueError):
        report.problem("bad_score", where, f"{name} is not a number: {cell!r}")
        return None
    if not math.isfinite(value):
        report.problem("bad_score", where, f"{name} is not finite: {cell!r}")
        return None
    if bounds is not None and not bounds[0] <= value <= bounds[1]:
        report.problem("out_of_range", where, f"{name}={value:g} is outside [{bounds[0]:g}, {bounds[1]:g}]")
        return None
    return value


def check_file(report: LoadReport, where: str, path: Path, check_files: bool) -> bool:
    if check_files and not path.is_file():
        report.problem("missing_file", where, f"image file {path} not found")
        return False
    return True
