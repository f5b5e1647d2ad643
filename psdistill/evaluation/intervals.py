"""How often the student's calibrated intervals (psdistill/scoring/conformal.py) cover, and how wide they are.

    report = interval_report(records, scores, spreads, calibration, coverage=0.9, trained={...})
    write_interval_report(report, "runs/x/report")   # intervals.json, and a section appended to report.md

Per dimension, at the nominal `coverage`:
- the calibration images in random halves (`SPLITS` splits, seeded): calibrate on one half, count how often
  the other half's targets are covered. The held-out check on the calibration distribution itself, and the
  only one a teacher target has (its other pool images were trained on).
- each category's images that are neither calibration images nor trained on, against the expert ratings
  (ground truth): its role is `calibration distribution` when calibration images come from it, else
  `shift` (PPaint's other categories: exchangeability, and so the guarantee, does not hold there). Intervals
  calibrated on the teacher's pseudo-scores promise the teacher's score, not these ratings: the report says so.
- the images the student was trained on, pooled: in-sample, for comparison only.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from psdistill.data.records import ImageRecord
from psdistill.evaluation.files import json_safe, write_json_markdown
from psdistill.scoring.conformal import TARGETS, Calibration, conformal_quantile, finite_or_none

SPLITS = 200  # random halves of the calibration images
ROLES = ("calibration distribution", "shift", "trained on")


def interval_report(records: Sequence[ImageRecord], scores: Mapping[str, Mapping[str, float]],
                    spreads: Mapping[str, Mapping[str, float]], calibration: Calibration, coverage: float,
                    trained: set, seed: int = 0) -> dict:
    """{settings..., "dimensions": {dimension: {"n_calibration", "quantile", "halves", "groups"}}}: `scores`
    and `spreads` are the student's ({dimension: {image id: value}}), `trained` the ids it was trained on."""
    out = {"coverage": coverage, "target": calibration.target, "spread": calibration.spread,
           "method": calibration.method, "splits": SPLITS, "seed": seed, "dimensions": {}}
    for dim, r in calibration.scores.items():
        held = set(calibration.images.get(dim, ()))
        cal_cats = {rec.category for rec in records if rec.id in held}
        rows = []
        for rec in records:
            y, s, u = rec.score(dim), scores[dim].get(rec.id, math.nan), spreads[dim].get(rec.id, math.nan)
            if rec.id in held or math.isnan(y) or math.isnan(s):
                continue
            role = "trained on" if rec.id in trained else ROLES[0] if rec.category in cal_cats else ROLES[1]
            rows.append((rec.category, role, y, s, u))
        out["dimensions"][dim] = {"n_calibration": len(r), "quantile": finite_or_none(calibration.quantile(dim, coverage)),
                                  "halves": _halves(calibration, dim, scores, spreads, coverage, seed),
                                  "groups": _groups(calibration, dim, rows, coverage)}
    return json_safe(out)


def _halves(cal: Calibration, dim: str, scores, spreads, coverage: float, seed: int) -> dict:
    """Coverage and mean width on one random half of the calibration images, calibrated on the other."""
    ids = list(cal.images.get(dim, {}))
    s = np.array([scores[dim][i] for i in ids])
    u = np.array([spreads[dim][i] for i in ids])
    # The targets are not stored; each image's |y - s| / u is, and says whether y is covered.
    r = np.array([cal.images[dim][i] for i in ids])
    if len(r) < 4:
        return {"n_calibrate": 0, "n_test": 0}
    rng = np.random.default_rng(seed)
    half, cover, width = len(r) // 2, [], []
    for _ in range(SPLITS):
        order = rng.permutation(len(r))
        fit, test = order[:half], order[half:]
        q = conformal_quantile(r[fit], coverage)
        cover.append(np.mean(r[test] <= q))
        lo, hi = dataclasses.replace(cal, scores={dim: sorted(r[fit])}).bounds(dim, s[test], u[test], coverage)
        width.append(np.mean(hi - lo))
    return {"n_calibrate": half, "n_test": len(r) - half, "coverage": float(np.mean(cover)),
            "coverage_sd": float(np.std(cover)), "mean_width": finite_or_none(float(np.mean(width)))}


def _groups(cal: Calibration, dim: str, rows: list, coverage: float) -> list[dict]:
    """Coverage and mean width of the saved intervals against the expert ratings, per category and role."""
    out = []
    keys = sorted({(c, role) for c, role, *_ in rows if role != "trained on"}, key=lambda k: (ROLES.index(k[1]), k[0]))
    pooled = [(f"all ({role})", role) for role in ROLES]
    for name, role in keys + pooled:
        chosen = [x for x in rows if x[1] == role and (name.startswith("all (") or x[0] == name)]
        if not chosen:
            continue
        _, _, y, s, u = (np.array(c) if k > 1 else c for k, c in enumerate(zip(*chosen)))
        lo, hi = cal.bounds(dim, s, u, coverage)
        out.append({"group": name, "role": role, "n": len(chosen), "coverage": float(np.mean((lo <= y) & (y <= hi))),
                    "mean_width": finite_or_none(float(np.mean(hi - lo)))})
    return out


def _width(w) -> str:
    return "unbounded" if w is None else f"{w:.3f}"


def interval_markdown(report: dict) -> str:
    """The report's section on intervals."""
    c, target = report["coverage"], report["target"]
    lines = ["## Intervals", "",
             f"Split-conformal intervals of the student at nominal coverage {c:g}, calibrated on {target} "
             f"({report['method']}; spread: {report['spread']}; psdistill/scoring/conformal.py)."]
    if target == TARGETS["teacher"]:
        lines.append("They are calibrated to cover the teacher's pseudo-score, not a human rating: the rows "
                     "against expert ratings below show how far that carries, with no guarantee.")
    for dim, d in report["dimensions"].items():
        q = "inf (the whole scale: too few calibration images)" if d["quantile"] is None else f"{d['quantile']:.3f}"
        lines += ["", f"### {dim}", "", f"{d['n_calibration']} calibration images; quantile q = {q}.", "",
                  "| images | role | target | n | coverage | mean width |", "|---|---|---|---:|---:|---:|"]
        h = d["halves"]
        if h.get("n_test"):
            lines.append(f"| calibration images, random halves ({report['splits']} splits) | calibration distribution "
                         f"| {target} | {h['n_calibrate']} / {h['n_test']} | {h['coverage']:.3f} (sd {h['coverage_sd']:.3f}) "
                         f"| {_width(h['mean_width'])} |")
        for g in d["groups"]:
            lines.append(f"| {g['group']} | {g['role']} | expert ratings | {g['n']} | {g['coverage']:.3f} | "
                         f"{_width(g['mean_width'])} |")
    return "\n".join(lines) + "\n"


def write_interval_report(report: dict, out_dir) -> dict[str, Path]:
    """`intervals.json` and `intervals.md` under `out_dir`, and the same section appended to its report.md."""
    markdown = interval_markdown(report)
    paths = write_json_markdown(out_dir, "intervals", report, markdown)
    main = Path(out_dir) / "report.md"
    if main.is_file():
        main.write_text(main.read_text(encoding="utf-8").rstrip("\n") + "\n\n" + markdown, encoding="utf-8")
    return {f"intervals_{k}": v for k, v in paths.items()}
