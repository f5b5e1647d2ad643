"""Do the student's calibrated intervals cover what they promise? (issue 26 item 3)

    python eval/bench_conformal.py                          # the demo's student (runs/demo; trained first if missing)
    python eval/bench_conformal.py --run /tmp/demo --series 30 --out eval/results/conformal.md

The demo has 40 validation images and 80 other held-out-category images: too few to check a coverage to
0.05. So the bench scores a larger set drawn by the same generator (psdistill/data/demo.py with another
seed: new windows, strengths and degradations of the same photos; `--series` series of 5 levels per
category) with the demo's trained student, reads its levels head's spread from the same pass, and
calibrates exactly as the pipeline does (psdistill/scoring/conformal.py: |rating - score| / spread, the
ceil((n + 1) c)-th smallest) on the expert ratings (the generator's ground truth):
1. the calibration distribution: the held-out categories (portraits, science, textures), `--calibrate`
   images for calibration and the rest (>= 100) held out, over `--splits` random splits;
2. the same against a plain residual (constant spread, what a scalar head gets);
3. shift: calibrated on the held-out categories, tested on the training category `objects` (new images of
   the photos the student trained on), and the reverse;
4. an exchangeable simulation (a Dirichlet levels head, targets drawn from it), where the guarantee holds
   by construction: the check that the code computes what the theory says.
The student is a tiny random-weight VLM trained 300 steps on 40 images: its intervals are wide; the
point is whether they cover, not how narrow they are.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench_common import command_line, environment_lines, write_report  # noqa: E402

from psdistill.scoring.conformal import Calibration  # noqa: E402

COVERAGES = (0.8, 0.9, 0.95)
TRAINED = "objects"  # the demo's training category


def student_run(run_dir: Path) -> Path:
    """The demo's run directory with a trained student: trained now (the demo recipe, minutes) if missing."""
    if not (run_dir / "student" / "scorer_config.json").is_file():
        from psdistill.cli import DEMO_CONFIG
        from psdistill.core.config import parse_config
        from psdistill.pipeline import PipelineConfig, run_pipeline

        run_pipeline(parse_config(PipelineConfig, ["--config", DEMO_CONFIG, f"run_dir={run_dir}"]), stop_after="distill")
    return run_dir


def scored_set(run_dir: Path, series: int, seed: int, work: Path) -> dict:
    """{category: (score, spread, rating) arrays} of a fresh demo set scored by the run's student."""
    from psdistill.data.demo import DemoConfig, build_demo
    from psdistill.data.manifest import read_manifest
    from psdistill.scoring.student import StudentScorer

    records = read_manifest(build_demo(work / "demo", DemoConfig(seed=seed, size=128, series_per_category=series)))
    scorer = StudentScorer.from_pretrained(run_dir)
    start = time.time()
    s, u = scorer.score_with_spread([r.path for r in records], batch_size=16)
    print(f"scored {len(records)} images in {time.time() - start:.0f} s", file=sys.stderr)
    y = np.array([r.score("overall") for r in records])
    cats = np.array([r.category for r in records])
    return {c: (s[cats == c, 0], u[cats == c, 0], y[cats == c]) for c in sorted(set(cats))}


def interval_check(cal_part, test_part, coverage: float, head: str = "levels") -> tuple[float, float]:
    """(coverage, mean width) on `test_part` of intervals calibrated on `cal_part`, as the pipeline fits them."""
    (s, u, y), (st, ut, yt) = cal_part, test_part
    cal = Calibration.fit(head, "ratings", (1, 10), {"d": s}, {"d": u if head == "levels" else np.ones_like(u)},
                          {"d": y})
    lo, hi = cal.bounds("d", st, ut if head == "levels" else np.ones_like(ut), coverage)
    return float(np.mean((lo <= yt) & (yt <= hi))), float(np.mean(hi - lo))


def pooled(data: dict, cats) -> tuple:
    return tuple(np.concatenate([data[c][k] for c in cats]) for k in range(3))


def split_rows(part: tuple, n_cal: int, splits: int, head: str, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    rows = []
    for c in COVERAGES:
        cover, width = [], []
        for _ in range(splits):
            order = rng.permutation(len(part[0]))
            take = lambda idx: tuple(x[idx] for x in part)  # noqa: E731
            cv, w = interval_check(take(order[:n_cal]), take(order[n_cal:]), c, head)
            cover.append(cv)
            width.append(w)
        cover = np.array(cover)
        rows.append(f"| {head} | {c:g} | {n_cal} | {len(part[0]) - n_cal} | {cover[0]:.3f} | {cover.mean():.3f} | "
                    f"{cover.std():.3f} | {np.mean(np.abs(cover - c) <= 0.05):.2f} | {np.mean(width):.2f} |")
    return rows


def simulation_rows(reps: int, n_cal: int, n_test: int, seed: int) -> list[str]:
    """A Dirichlet levels head over 5 levels on 1-10, a rating drawn from it (plus noise, kept on the scale)."""
    rng = np.random.default_rng(seed)
    values = np.linspace(1.0, 10.0, 5)
    rows = []
    for c in COVERAGES:
        cover = []
        for _ in range(reps):
            p = rng.dirichlet(np.full(5, 0.7), size=n_cal + n_test)
            s = p @ values
            u = np.sqrt(np.maximum(p @ values ** 2 - s ** 2, 0))
            y = np.clip(values[(p.cumsum(1) > rng.random((len(p), 1))).argmax(1)] + rng.normal(0, 0.3, len(p)), 1, 10)
            cover.append(interval_check((s[:n_cal], u[:n_cal], y[:n_cal]), (s[n_cal:], u[n_cal:], y[n_cal:]), c)[0])
        k = math.ceil((n_cal + 1) * c)
        rows.append(f"| {c:g} | {n_cal} | {n_test} | {reps} | {np.mean(cover):.4f} +- {np.std(cover) / math.sqrt(reps):.4f} "
                    f"| {np.std(cover):.4f} | [{k / (n_cal + 1):.4f}, {k / (n_cal + 1) + 1 / (n_cal + 1):.4f}] |")
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default="runs/demo", help="a finished demo run (its student); trained first if missing")
    ap.add_argument("--series", type=int, default=30, help="series of 5 images per category in the scored set")
    ap.add_argument("--seed", type=int, default=1, help="the scored set's generator seed (the demo trained on 0)")
    ap.add_argument("--calibrate", type=int, default=150, help="calibration images per split")
    ap.add_argument("--splits", type=int, default=200, help="random calibration/test splits")
    ap.add_argument("--work", default="runs/bench_conformal", help="where the scored set's images go")
    ap.add_argument("--out", default="eval/results/conformal.md")
    args = ap.parse_args(argv)
    data = scored_set(student_run(Path(args.run)), args.series, args.seed, Path(args.work))
    held = [c for c in data if c != TRAINED]
    part = pooled(data, held)
    head = ["| spread | nominal | n calibration | n held out | coverage, split 0 | mean coverage over splits | sd | "
            "share of splits within 0.05 | mean width |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines = ["# Calibrated intervals: coverage and width", "", *environment_lines("cpu"), command_line("eval/bench_conformal.py", argv),
             f"- scored set: psdistill/data/demo.py seed {args.seed}, {args.series} series x 5 levels per category, "
             f"128 px ({sum(len(v[0]) for v in data.values())} images), scored by the student of `{args.run}` "
             "(the demo recipe: tiny random-weight Qwen3-VL, 300 steps on 40 `objects` images of seed 0); target: "
             "the generator's ground truth (`overall`), standing in for expert ratings", "",
             f"## 1-2. The calibration distribution: held-out categories ({', '.join(held)}), {args.splits} random splits", "",
             "Spread `levels`: the levels head's std (what the pipeline uses); `scalar`: a constant spread, the plain "
             "absolute residual (what a scalar head gets).", "", *head,
             *(levels := split_rows(part, args.calibrate, args.splits, "levels", 0)),
             *split_rows(part, args.calibrate, args.splits, "scalar", 0), ""]
    lines += ["## 3. Shift: calibrated on one distribution, tested on another (all images of each)", "",
              "| calibrated on | n | tested on | n | nominal | coverage | mean width |", "|---|---:|---|---:|---:|---:|---:|"]
    for cal_cats, test_cats in ((held, [TRAINED]), ([TRAINED], held)):
        a, b = pooled(data, cal_cats), pooled(data, test_cats)
        for c in COVERAGES:
            cover, width = interval_check(a, b, c)
            lines.append(f"| {', '.join(cal_cats)} | {len(a[0])} | {', '.join(test_cats)} | {len(b[0])} | {c:g} | "
                         f"{cover:.3f} | {width:.2f} |")
    lines += ["", "## 4. Exchangeable simulation (Dirichlet levels head; the guarantee holds by construction)", "",
              "| nominal | n calibration | n test | repetitions | mean coverage +- its standard error | sd | "
              "expected coverage in theory [k/(n+1), (k+1)/(n+1)] |",
              "|---:|---:|---:|---:|---:|---:|---|", *simulation_rows(200, 200, 1000, 0), ""]
    cells = levels[COVERAGES.index(0.9)].split(" | ")
    met = abs(float(cells[4]) - 0.9) <= 0.05
    lines.append(f"target (coverage within 0.05 of 0.9 on >= 100 held-out images of the calibration distribution): "
                 f"split 0 {cells[4]} on {cells[3]} images, mean over splits {cells[5]}: {'met' if met else 'NOT met'}")
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
