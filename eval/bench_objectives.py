"""The two distillation objectives side by side on the demo: ranking loss vs confidence-weighted GRPO.

    python eval/bench_objectives.py                          # seeds 0 1 2, the demo's 300 steps
    python eval/bench_objectives.py --seeds 0 --steps 100 --out /tmp/objectives.md

Each run is the whole demo pipeline (psdistill/pipeline/configs/demo.yaml: simulated judge, Elo reference pool,
tiny random-weight Qwen3-VL, full fine-tuning) with `distill.objective` set and the seed of the model,
the training and the judge set to `seed`; both objectives train on the same pseudo-scores (same judge
seed) for the same steps and images per step (GRPO: x num_generations answers). Reported, mean (min
to max) over seeds: SRCC, PLCC and RMSE of the student on the training category (in-category: the
images it was trained on and their unlabelled siblings, against ground truth), the same for the
teacher's zero-shot levels readout (the untrained base model) and its pairwise pseudo-scores, and the
distill stage's wall time per 100 steps (model load included).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench_common import command_line, environment_lines, write_report  # noqa: E402

from psdistill.cli import DEMO_CONFIG  # noqa: E402
from psdistill.core.config import parse_config  # noqa: E402
from psdistill.distill.objectives import OBJECTIVES  # noqa: E402
from psdistill.pipeline import PipelineConfig, run_pipeline  # noqa: E402

METRICS = ("srcc", "plcc", "rmse")


def run(objective: str, seed: int, steps: int, run_dir: Path, extra: list[str]) -> dict:
    """{scorer: {metric: value on the training categories}} and the distill stage's seconds."""
    cfg = parse_config(PipelineConfig, ["--config", DEMO_CONFIG, f"run_dir={run_dir}",
                                        f"model.seed={seed}", f"distill.seed={seed}", f"judge.simulated.seed={seed}",
                                        f"distill.objective={objective}", f"distill.max_steps={steps}",
                                        "distill.report_to=[none]", *extra])
    stages = run_pipeline(cfg, log=lambda *a: None)
    metrics = json.loads((run_dir / "report" / "metrics.json").read_text())
    trained = list(cfg.data.train_categories)
    out = {}
    for scorer, by_dim in metrics["metrics"].items():
        cats = by_dim[cfg.data.dimensions[0]]["categories"]
        out[scorer] = {m: float(np.mean([cats[c].get(m, np.nan) for c in trained])) for m in METRICS}
    return {"scores": out, "distill_s": stages["distill"]["seconds"]}


def _cell(values) -> str:
    values = np.asarray(values, float)
    if np.all(np.isnan(values)):
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{np.nanmean(values):.2f} ({np.nanmin(values):.2f} to {np.nanmax(values):.2f})"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=300, help="distill.max_steps for both objectives (the demo's 300)")
    ap.add_argument("--override", nargs="*", default=[], help="more key=value overrides for every run")
    ap.add_argument("--out", default="eval/results/objectives.md")
    args = ap.parse_args(argv)

    load_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    rows = {o: [] for o in OBJECTIVES}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for objective in OBJECTIVES:
                rows[objective].append(run(objective, seed, args.steps, Path(tmp) / f"{objective}_{seed}",
                                           args.override))
    load_after = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()

    def line(name, runs, scorer, per_100=True):
        cells = [_cell([r["scores"][scorer][m] for r in runs]) for m in METRICS]
        seconds = _cell([100 * r["distill_s"] / args.steps for r in runs]) if per_100 else "-"
        return f"| {name} | {' | '.join(cells)} | {seconds} |"

    lines = [
        "# Distillation objectives on the demo: ranking vs GRPO (eval/bench_objectives.py)", "",
        *environment_lines("cpu", packages=("transformers", "trl", "peft")),
        command_line("eval/bench_objectives.py", argv),
        f"- seeds {args.seeds} (model init, training, simulated judge); {args.steps} steps each; cells: mean "
        "(min to max) over seeds; metrics on the training category against ground truth",
        f"- load (`uptime`, 2 cores shared with other jobs): before `{load_before}`; after `{load_after}`", "",
        "| scorer | SRCC | PLCC | RMSE | distill s / 100 steps |",
        "|---|---:|---:|---:|---:|",
        line("student, objective ranking", rows["ranking"], "student"),
        line("student, objective grpo", rows["grpo"], "student"),
        line("teacher zero-shot (base model, levels readout)", rows["ranking"], "teacher-pointwise", per_100=False),
        line("teacher pseudo-scores (pairwise, training images)", rows["ranking"], "pseudo-scores", per_100=False),
    ]
    return write_report(lines, args.out)


if __name__ == "__main__":
    main()
