"""The report of a run without ground truth: what can be said with no labels.

    if not has_ground_truth(records, "overall"):
        write_label_free_report(describe(records, predictions, pools=pools, comparisons=rows), "runs/x/report")

- each scorer's score distribution (n, mean, sd, min, quartiles, max), all images and per category;
- the judge's consistency between the two presentation orders of a pair (from comparisons.csv):
  how often it prefers the same image both ways, the mean gap between P(A over B) shown first and
  shown second, and its mean P(first preferred) (0.5 = no position bias);
- the reference pool: training images, references, judgments, posterior sd on the latent scale.

The judge's and the pool's figures are per judged dimension.

Written as report/metrics.json ("label_free": true) and report/report.md, the files a labelled run's
report has, so nothing of an earlier report (its plots included) is left to be read as this one's.
"""
from __future__ import annotations

import math
import shutil
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from psdistill.data.records import ImageRecord
from psdistill.data.run_files import PoolFile
from psdistill.evaluation.files import write_json_markdown
from psdistill.evaluation.report import format_number


def has_ground_truth(records: Sequence[ImageRecord], dimension: Optional[str]) -> bool:
    """Whether `evaluate` has something to compare with: scores of `dimension` (any, if None) or series ranks."""
    if any(r.series and r.rank is not None for r in records):
        return True
    return any(not math.isnan(r.score(d)) for r in records for d in ([dimension] if dimension else r.scores))


@dataclass
class LabelFreeResult:
    distributions: dict  # scorer -> dimension -> {"all": stats, "categories": {category: stats}}
    judge: dict  # dimension -> order consistency (empty without comparisons)
    pool: dict  # dimension -> pool statistics (empty without a pool file)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"label_free": True, "distributions": self.distributions, "judge_order_consistency": self.judge,
                "pool": self.pool, "notes": self.notes}

    def headline(self) -> list[str]:
        lines = [f"{scorer} [{dim}]: no ground truth; scores n={d['all']['n']}, mean {format_number(d['all']['mean'])}, "
                 f"sd {format_number(d['all']['sd'])}" for scorer, dims in self.distributions.items()
                 for dim, d in dims.items()]
        for dim, j in self.judge.items():
            lines.append(f"judge [{dim}]: same preference in both orders for {format_number(j['agreement'])} "
                         f"of {j['pairs_both_orders']} pairs")
        return lines

    def to_markdown(self) -> str:
        out = ["# Report (no ground truth)", "",
               "The data have no ground truth of the scored dimension: no accuracy metric can be computed. "
               "What follows needs none.", ""]
        for scorer, dims in self.distributions.items():
            for dim, d in dims.items():
                out += [f"## Scores: {scorer} [{dim}]", "", "| group | n | mean | sd | min | q25 | median | q75 | max |",
                        "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
                for group, stats in [("all", d["all"]), *d["categories"].items()]:
                    out.append(f"| {group} | {stats['n']} | " + " | ".join(
                        format_number(stats[k]) for k in ("mean", "sd", "min", "q25", "median", "q75", "max")) + " |")
                out.append("")
        for dim, j in self.judge.items():
            out += [f"## Judge [{dim}]: consistency between the two orders", "",
                    f"- pairs judged in both orders: {j['pairs_both_orders']}",
                    f"- same image preferred in both orders: {format_number(j['agreement'])}",
                    f"- mean |P(A over B) shown first - P(A over B) shown second|: {format_number(j['mean_abs_gap'])}",
                    f"- mean P(first shown preferred) over {j['judgments']} judgments: "
                    f"{format_number(j['mean_p_first'])} (0.5: no position bias)", ""]
        for dim, p in self.pool.items():
            simulated = " (SIMULATED: reads ground truth)" if p["simulated"] else ""
            out += [f"## Reference pool [{dim}]", "", f"- judge: {p['judge']}{simulated}",
                    f"- training images: {p['images']}, references: {p['references']}",
                    f"- posterior sd on the latent logit scale: mean {format_number(p['sd_mean'])}, "
                    f"max {format_number(p['sd_max'])}", ""]
        if self.notes:
            out += ["## Notes", ""] + [f"- {n}" for n in self.notes] + [""]
        return "\n".join(out)


def _stats(values: np.ndarray) -> dict:
    values = values[np.isfinite(values)]
    if not len(values):
        return {"n": 0, **{k: math.nan for k in ("mean", "sd", "min", "q25", "median", "q75", "max")}}
    q = np.quantile(values, [0, 0.25, 0.5, 0.75, 1])
    return {"n": int(len(values)), "mean": float(values.mean()), "sd": float(values.std(ddof=1)) if len(values) > 1
            else math.nan, "min": float(q[0]), "q25": float(q[1]), "median": float(q[2]), "q75": float(q[3]),
            "max": float(q[4])}


def order_consistency(comparisons: Sequence[tuple[str, str, float]]) -> dict:
    """How the judge's answers for (A, B) shown first agree with those for (B, A); P(A over B) averaged
    per order when an order was asked more than once."""
    by_order: dict[tuple[str, str], list[float]] = defaultdict(list)
    for first, second, p in comparisons:
        by_order[(first, second)].append(p)
    agree, gaps = [], []
    for (a, b), ps in by_order.items():
        if a < b and (b, a) in by_order:
            shown_first, shown_second = np.mean(ps), 1 - np.mean(by_order[(b, a)])  # both P(a over b)
            agree.append(np.sign(shown_first - 0.5) == np.sign(shown_second - 0.5) != 0)
            gaps.append(abs(shown_first - shown_second))
    return {"pairs_both_orders": len(agree), "agreement": float(np.mean(agree)) if agree else math.nan,
            "mean_abs_gap": float(np.mean(gaps)) if gaps else math.nan, "judgments": len(comparisons),
            "mean_p_first": float(np.mean([p for _, _, p in comparisons])) if comparisons else math.nan}


def describe(records: Sequence[ImageRecord], predictions: Mapping[str, Mapping[str, Mapping[str, float]]],
             pools: Mapping[str, PoolFile] = {}, comparisons: Mapping[str, Sequence[tuple[str, str, float]]] = {},
             notes: Sequence[str] = ()) -> LabelFreeResult:
    """`predictions`: {scorer: {dimension: {image id: score}}} (the predictions-file format); `pools` and
    `comparisons`: {dimension: ...} as `psdistill.data.run_files` reads them."""
    distributions = {}
    categories = sorted({r.category for r in records})
    for scorer, dims in predictions.items():
        distributions[scorer] = {}
        for dim, scores in dims.items():
            values = np.array([scores.get(r.id, math.nan) for r in records], dtype=float)
            in_category = np.array([r.category for r in records])
            distributions[scorer][dim] = {"all": _stats(values),
                                          "categories": {c: _stats(values[in_category == c]) for c in categories}}
    pool_stats = {}
    for dim, pool in pools.items():
        sd = np.sqrt(np.asarray(pool.var, dtype=float))
        pool_stats[dim] = {"judge": pool.judge_id, "simulated": pool.simulated, "images": len(pool.ids),
                           "references": len(pool.reference_ids), "sd_mean": float(sd.mean()), "sd_max": float(sd.max())}
    return LabelFreeResult(distributions, {dim: order_consistency(rows) for dim, rows in comparisons.items() if rows},
                           pool_stats, list(notes))


def write_label_free_report(result: LabelFreeResult, out_dir: str | Path) -> dict[str, Path]:
    """metrics.json and report.md under `out_dir`; an earlier report's plots are removed."""
    plots = Path(out_dir) / "plots"
    if plots.is_dir():
        shutil.rmtree(plots)
    return write_json_markdown(out_dir, "metrics", result.to_dict(), result.to_markdown(), markdown_stem="report")
