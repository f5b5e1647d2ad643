"""AVA (Murray et al., CVPR 2012): photos with 1-10 vote histograms from DPChallenge.

`AVA.txt`, one image per line, whitespace separated:

    index image_id votes_1 ... votes_10 tag_1 tag_2 challenge_id
    1 953619 0 1 5 17 38 36 15 6 5 1 1 22 1396

Images are `image_dir/<image_id>.jpg`. Split lists (the standard train/test lists, e.g. the
`*.jpgl` files of AVA's image lists) hold one image id per line (a ".jpg" suffix is ignored).

Records: scores["overall"] = mean vote (sum_k k * votes_k / sum_k votes_k, on 1-10) and
scores["votes_1"] .. scores["votes_10"] = the counts (the histogram keys the FGAesQ baseline reads).
`AVAData` also holds the counts, the normalised distribution, the semantic tags and the challenge
as arrays aligned with the records. A line with no votes has no mean and is reported.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from psdistill.data.reading import LoadReport, LoadResult, check_file, read_text
from psdistill.data.records import ImageRecord

N_BINS = 10


@dataclass
class AVAData(LoadResult):
    votes: np.ndarray  # (n, 10) int: counts for scores 1..10
    distribution: np.ndarray  # (n, 10) float: votes / their sum
    tags: np.ndarray  # (n, 2) int: semantic tag ids (0 = none)
    challenge: np.ndarray  # (n,) int


def load_ava(ava_txt: str | Path, image_dir: str | Path, *, split: Optional[str | Path | Sequence] = None,
             strict: bool = False, check_files: bool = True) -> AVAData:
    """Records of AVA.txt, in file order, restricted to the ids of `split` (a list file, or several)."""
    ava_txt, image_dir = Path(ava_txt), Path(image_dir)
    report = LoadReport(str(ava_txt), strict=strict)
    wanted = None if split is None else _split_ids(split, report)
    text, report.encoding = read_text(ava_txt)
    records, rows, lines = [], [], {}
    for line, raw in enumerate(text.splitlines(), start=1):
        fields = raw.split()
        if not fields or (wanted is not None and len(fields) > 1 and fields[1] not in wanted):
            continue
        report.rows += 1
        where = f"{ava_txt}, line {line}"
        if len(fields) != 15:
            report.problem("malformed", where, f"{len(fields)} fields, expected 15 "
                                               "(index, image id, 10 vote counts, 2 tags, challenge)")
            continue
        try:
            numbers = [int(f) for f in fields[2:]]
        except ValueError:
            report.problem("malformed", where, "vote counts, tags and challenge must be integers")
            continue
        image_id, votes = fields[1], np.array(numbers[:N_BINS])
        if image_id in lines:
            report.problem("duplicate_id", where, f"duplicate image id {image_id} (first on line {lines[image_id]})")
            continue
        if (votes < 0).any() or votes.sum() == 0:
            report.problem("bad_score", where, f"vote counts {votes.tolist()} are negative or all zero")
            continue
        path = image_dir / f"{image_id}.jpg"
        if not check_file(report, where, path, check_files):
            continue
        lines[image_id] = line
        mean = float(votes @ np.arange(1, N_BINS + 1) / votes.sum())
        histogram = {f"votes_{k + 1}": float(v) for k, v in enumerate(votes)}
        records.append(ImageRecord(id=image_id, path=str(path.resolve()), scores={"overall": mean, **histogram}))
        rows.append(numbers)
    if wanted is not None:
        for image_id, where in wanted.items():
            if image_id not in lines:
                report.problem("unknown_id", where, f"image id {image_id} is not in {ava_txt} (or was skipped there)")
    report.finish(records)
    table = np.array(rows, dtype=np.int64).reshape(-1, N_BINS + 3)
    votes = table[:, :N_BINS]
    return AVAData(records, report, votes, votes / votes.sum(axis=1, keepdims=True), table[:, N_BINS:N_BINS + 2],
                   table[:, N_BINS + 2])


def _split_ids(split, report: LoadReport) -> dict[str, str]:
    """{image id: 'file, line N'} of one split list or several."""
    files = [split] if isinstance(split, (str, Path)) else list(split)
    ids: dict[str, str] = {}
    for path in map(Path, files):
        text, _ = read_text(path)
        for line, raw in enumerate(text.splitlines(), start=1):
            name = raw.strip()
            if name:
                ids.setdefault(name.removesuffix(".jpg"), f"{path}, line {line}")
    return ids
