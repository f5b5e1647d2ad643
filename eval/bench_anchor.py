"""What the ratings anchor buys: pseudo-scores against ground truth by `fit.anchor` (issue 13 part 1).

    python eval/bench_anchor.py            # ~1 min on 2 CPU cores; writes eval/results/ratings_anchor.md
    python eval/bench_anchor.py --student  # also trains and evaluates the student per anchor (~10 min)

Each seed is the demo (psdistill/pipeline/configs/demo.yaml: simulated judge, accuracy 0.85, 8 references,
40 training images of one category) with `data.demo.seed` and `judge.simulated.seed` set to it,
run to the fit stage once per anchor in one run directory (the judgments are reused). Two data sets:

- the demo as built: its degradation ladders span the whole 1-10 scale by construction (clean
  images score 10, the strongest series' last level 1), where min-max is already near right;
- the same demo without its clean images and strongest degradations (ground truth in [3, 9.5)),
  training images that span part of the scale, as a real category's do.

Anchors: `none` (min-max), `labels` (5 ground-truth ratings per training category, least squares
or mean/sd matching), `teacher` (the simulated judge's pointwise ratings, ground truth + N(0, 2^2),
of the 8 references or of every training image; no labels). RMSE and MAE of the pseudo-scores
against the ground truth, SRCC (an increasing affine map leaves it unchanged), and RMSE over
min-max's; cells are the mean (min to max) over the seeds whose anchors gave an increasing map
("fits": the others stop with fit.anchor's ConfigError). The issue's target: anchored RMSE <= 0.5x
min-max. The last two rows bound what an anchor can reach, fitted to every training image's ground
truth (in-sample, so optimistic): the least-squares line of ground truth on the pool's scores (any
affine anchor), and the isotonic regression of ground truth on them (any map that keeps the
preferences' order, affine or not: the best the ratings can do without reordering). With --student, each run of the full demo
goes on through distill (the demo's steps), score and evaluate, and the student's RMSE / SRCC on the
training category (its images, against ground truth) is added per anchor.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy.optimize import isotonic_regression
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench_common import command_line, write_report  # noqa: E402

from psdistill.cli import DEMO_CONFIG  # noqa: E402
from psdistill.core.config import parse_config  # noqa: E402
from psdistill.data.manifest import read_manifest, write_manifest  # noqa: E402
from psdistill.data.run_files import read_pseudo_scores  # noqa: E402
from psdistill.core.errors import ConfigError  # noqa: E402
from psdistill.pipeline import PipelineConfig, run_pipeline  # noqa: E402

ANCHORS = {
    "none (min-max)": ["fit.anchor=none"],
    "labels, least squares": ["fit.anchor=labels"],
    "labels, mean/sd": ["fit.anchor=labels", "fit.match=mean_sd"],
    "teacher, references": ["fit.anchor=teacher"],
    "teacher, all training images": ["fit.anchor=teacher", "fit.teacher_rates=all"],
}


def fit(run_dir: Path, seed: int, overrides: list[str], student: bool = False) -> dict:
    cfg = parse_config(PipelineConfig, ["--config", DEMO_CONFIG, f"run_dir={run_dir}", f"data.demo.seed={seed}",
                                        f"judge.simulated.seed={seed}", "distill.report_to=[none]", *overrides])
    try:
        run_pipeline(cfg, stop_after=None if student else "fit", log=lambda *a: None)
    except ConfigError as e:  # the teacher's few noisy ratings against the pool's order: counted, not averaged
        print(f"seed {seed} {overrides}: {e}", flush=True)
        return None
    pseudo = read_pseudo_scores(run_dir / "pseudo_scores.csv")["overall"]
    truth = {r.id: r.score("overall") for r in read_manifest(run_dir / "data/manifest.csv")}
    s, t = np.array([pseudo[i][0] for i in pseudo]), np.array([truth[i] for i in pseudo])
    best = np.polyval(np.polyfit(s, t, 1), s)  # the least-squares line on every image's ground truth
    order = np.argsort(s, kind="stable")  # the best non-decreasing map of the pool's order onto the ground truth
    monotone = isotonic_regression(t[order]).x
    out = {"rmse": float(np.sqrt(np.mean((s - t) ** 2))), "mae": float(np.mean(np.abs(s - t))),
           "srcc": float(spearmanr(s, t)[0]), "best_rmse": float(np.sqrt(np.mean((best - t) ** 2))),
           "monotone_rmse": float(np.sqrt(np.mean((monotone - t[order]) ** 2)))}
    if student:
        cells = json.loads((run_dir / "report" / "metrics.json").read_text())["metrics"]["student"]["overall"]
        trained = [cells["categories"][c] for c in cfg.data.train_categories]
        out.update({f"student_{m}": float(np.mean([c[m] for c in trained])) for m in ("rmse", "mae", "srcc")})
    return out


def mid_range(tmp: Path, seed: int) -> str:
    """The seed's demo manifest without ground truth outside [3, 9.5)."""
    built = tmp / f"built-{seed}"
    run_pipeline(parse_config(PipelineConfig, ["--config", DEMO_CONFIG, f"run_dir={built}", f"data.demo.seed={seed}"]),
                 stop_after="data", log=lambda *a: None)
    kept = [r for r in read_manifest(built / "data/manifest.csv") if 3 <= r.score("overall") < 9.5]
    return str(write_manifest(kept, tmp / f"mid-{seed}.csv"))


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default="eval/results/ratings_anchor.md")
    ap.add_argument("--student", action="store_true", help="also distill and evaluate the student (full demo only)")
    args = ap.parse_args(argv)
    tables = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for data_name in ("demo (full 1-10 range)", "demo, ground truth in [3, 9.5)"):
            per_seed = {name: [] for name in ANCHORS}
            for seed in args.seeds:
                data = [] if data_name.startswith("demo (") else [f"data.manifest={mid_range(tmp, seed)}"]
                run_dir = tmp / f"{len(tables)}-{seed}"
                for name, overrides in ANCHORS.items():
                    per_seed[name].append(fit(run_dir, seed, [*data, *overrides], args.student and not data))
            tables.append((data_name, per_seed))
            print(data_name, {n: [r and round(r["rmse"], 3) for r in rs] for n, rs in per_seed.items()}, flush=True)

    def cell(values, fmt=".2f"):
        v = np.asarray(values, dtype=float)
        return f"{v.mean():{fmt}} ({v.min():{fmt}} to {v.max():{fmt}})" if len(v) > 1 else f"{v[0]:{fmt}}"

    lines = ["# Ratings anchor: pseudo-scores against ground truth by fit.anchor (eval/bench_anchor.py)", "",
             command_line("eval/bench_anchor.py", argv),
             f"- seeds {args.seeds} (data.demo.seed and judge.simulated.seed); simulated judge, accuracy 0.85, "
             f"pointwise rating noise sd 2.0; {'the full demo to evaluate, the other data to fit' if args.student else 'stop after fit'}; "
             "cells: mean (min to max) over seeds", ""]
    for data_name, per_seed in tables:
        base = np.array([r["rmse"] for r in per_seed["none (min-max)"]])
        lines += [f"## {data_name}", "", "| anchor | fits | RMSE | MAE | SRCC | RMSE / min-max's | <= 0.5x? |",
                  "|---|---:|---:|---:|---:|---:|---|"]
        for name, runs in per_seed.items():
            ok = [k for k, r in enumerate(runs) if r is not None]
            fits = f"{len(ok)}/{len(runs)}"
            if not ok:
                lines.append(f"| {name} | {fits} | | | | | no |")
                continue
            runs, ratio = [runs[k] for k in ok], np.array([runs[k]["rmse"] for k in ok]) / base[ok]
            lines.append(f"| {name} | {fits} | {cell([r['rmse'] for r in runs])} | {cell([r['mae'] for r in runs])} | "
                         f"{cell([r['srcc'] for r in runs], '.4f')} | {cell(ratio)} | "
                         f"{'yes' if ratio.mean() <= 0.5 and len(ok) == len(base) else 'no'} |")
        for bound, key in (("best affine map", "best_rmse"), ("best order-keeping map", "monotone_rmse")):
            best = np.array([r[key] for r in per_seed["none (min-max)"]])
            lines.append(f"| {bound} (bound: every image's ground truth) | {len(best)}/{len(best)} | {cell(best)} | | | "
                         f"{cell(best / base)} | {'yes' if (best / base).mean() <= 0.5 else 'no'} |")
        lines.append("")
        if all(r is None or "student_rmse" in r for runs in per_seed.values() for r in runs) and any(
                r is not None and "student_rmse" in r for runs in per_seed.values() for r in runs):
            student_base = np.array([r["student_rmse"] for r in per_seed["none (min-max)"]])
            lines += ["The student distilled from these pseudo-scores (the demo's distill settings), on its training "
                      "category against ground truth:", "",
                      "| anchor | fits | student RMSE | student MAE | student SRCC | RMSE / min-max's |", "|---|---:|---:|---:|---:|---:|"]
            for name, runs in per_seed.items():
                ok = [k for k, r in enumerate(runs) if r is not None]
                if ok:
                    runs = [runs[k] for k in ok]
                    ratio = np.array([r["student_rmse"] for r in runs]) / student_base[ok]
                    lines.append(f"| {name} | {len(ok)}/{len(per_seed[name])} | {cell([r['student_rmse'] for r in runs])} | "
                                 f"{cell([r['student_mae'] for r in runs])} | {cell([r['student_srcc'] for r in runs], '.3f')} | "
                                 f"{cell(ratio)} |")
            lines.append("")
    lines += [
        "Reading: no anchor can beat the bound rows. Where the order-keeping row is above 0.5x, the target is out of "
        "reach of any anchor that keeps the preferences' order, affine or not, even one fitted to every image's ground "
        "truth: the rest of the error is the pool's order (its SRCC), which only more or better judgments improve. "
        "The gap between the two bound rows is what a non-linear anchor could add at most; fitted to the teacher's "
        "noisy ratings instead of the ground truth it adds nothing (the isotonic map of the ratings of every training "
        "image, interpolated to keep the order, against the least-squares line: RMSE 1.39 vs 1.38, mean of seeds 0-4, "
        "checked and not kept). SRCC moves in the third decimal between anchors of one seed because pool "
        "scores equal to ~1e-16 (images with the same verdicts) merge into ties or not under the map's rounding; the "
        "'teacher, references' SRCC is over the seeds that fit. 8 references rated with noise sd 2.0 give an unstable "
        "line (and on some seeds a decreasing one: fit.anchor's ConfigError); rating every training image is steadier.",
    ]
    if args.student:
        lines += ["", "The student follows its pseudo-scores' scale: every anchor lowers its RMSE on the training category "
                  "against the min-max student's (by the ratio column), the order (SRCC) staying within the seeds' spread."]
    return write_report(lines, args.out)


if __name__ == "__main__":
    main()
