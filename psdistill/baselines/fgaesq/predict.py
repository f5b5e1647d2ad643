"""A trained FGAesQ's predictions files of a data set (the recipe's score stage, `psdistill.pipeline.fgaesq`):

    <folder>/fgaesq.csv             every record, single-image path, on data.rating_scale
    <folder>/fgaesq-difftoken.csv   series images scored against their series (DiffToken), the others
                                    single-image; written with difftoken.enabled and train.eval_difftoken
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from psdistill.baselines.fgaesq.config import FGAesQConfig
from psdistill.baselines.fgaesq.data import from_bins
from psdistill.baselines.fgaesq.scorer import FGAesQScorer
from psdistill.data.predictions import write_predictions
from psdistill.data.records import ImageRecord

SCORER = "fgaesq"


def predict_records(scorer: FGAesQScorer, records: Sequence[ImageRecord], difftoken_series: bool = False) -> np.ndarray:
    """Single-image scores of `records`; with `difftoken_series`, series images are scored against their series."""
    if not difftoken_series:
        return scorer.score([r.path for r in records])
    out = np.full(len(records), np.nan)
    groups: dict[tuple[str, str], list[int]] = {}
    for k, r in enumerate(records):
        if r.series:
            groups.setdefault((r.category, r.series), []).append(k)
    singles = [k for k in range(len(records)) if not records[k].series or len(groups[(records[k].category, records[k].series)]) < 2]
    if singles:
        out[singles] = scorer.score([records[k].path for k in singles])
    for idx in groups.values():
        if len(idx) >= 2:
            out[idx] = scorer.score_series([records[k].path for k in idx])
    return out


def write_fgaesq_predictions(cfg: FGAesQConfig, checkpoint: str | Path, records: Sequence[ImageRecord],
                             folder: str | Path, device: str) -> list[Path]:
    """Score `records` with the checkpoint and write the predictions files in `folder` (see the module
    docstring); a DiffToken file of an earlier config that no longer asks for one is removed, since an
    evaluation reads every predictions file of the folder."""
    scorer = FGAesQScorer.from_pretrained(checkpoint, device=device, batch_size=cfg.train.eval_batch_size)
    folder = Path(folder)
    difftoken_path = folder / f"{SCORER}-difftoken.csv"
    variants = {folder / f"{SCORER}.csv": False}
    if cfg.difftoken.enabled and cfg.train.eval_difftoken:
        variants[difftoken_path] = True
    else:
        difftoken_path.unlink(missing_ok=True)
    for path, series in variants.items():
        pred = from_bins(predict_records(scorer, records, difftoken_series=series), cfg.data.rating_scale)
        write_predictions(path, records, {cfg.data.dimensions[0]: pred})
    return list(variants)
