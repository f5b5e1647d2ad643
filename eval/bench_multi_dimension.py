"""What each added dimension costs, and what the multi-dimension demo scores per dimension (issue 13 part 3).

    python eval/bench_multi_dimension.py                      # 1 vs 3 dimensions, seed 0
    python eval/bench_multi_dimension.py --seeds 0 1 --dims overall composition technique

Each run is the whole demo pipeline (psdistill/configs/demo.yaml: simulated judge, Elo reference pool,
tiny random-weight Qwen3-VL, 300 steps of full fine-tuning), with `data.dimensions` the first dimension
alone or all of `--dims` and a prompt naming the dimension (`distill.prompt`). Reported per run: judge
calls (pairs judged, and batched calls of the pool), the judge, distill and score stages' wall time,
and per dimension the SRCC of the teacher's pseudo-scores (training images) and of the one student
(training category, held-out categories pooled). The simulated judge answers instantly: on a real VLM
the judge's cost is its pairs (each one a forward pass over two images), which is why they are counted.
The machine is shared: the load average is printed beside the times.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench_common import command_line, environment_lines, write_report  # noqa: E402

from psdistill.cli import DEMO_CONFIG  # noqa: E402
from psdistill.config import parse_config  # noqa: E402
from psdistill.pipeline import PipelineConfig, run_pipeline  # noqa: E402

PROMPT = "Rate the {dimension} of this image. Answer with one word."


def run(dims: list[str], seed: int, run_dir: Path) -> dict:
    cfg = parse_config(PipelineConfig, ["--config", DEMO_CONFIG, f"run_dir={run_dir}", f"model.seed={seed}",
                                        f"distill.seed={seed}", f"judge.simulated.seed={seed}",
                                        "distill.report_to=[none]", f"distill.prompt={PROMPT}",
                                        f"data.dimensions=[{', '.join(dims)}]"])
    load = os.getloadavg()[0]
    results = run_pipeline(cfg, log=lambda *a: None)
    metrics = json.loads((run_dir / "report" / "metrics.json").read_text())
    judge = results["judge"]["summary"]
    held = metrics["held_out"]
    per = {}
    for dim in dims:
        student = metrics["metrics"]["student"][dim]
        trained = [c for c in student["categories"] if c not in held]
        per[dim] = {"pseudo": metrics["metrics"]["pseudo-scores"][dim]["all"]["srcc"],
                    "trained": float(np.mean([student["categories"][c]["srcc"] for c in trained])),
                    "held_out": student["held_out"]["srcc"]}
    return {"pairs": judge["pair_judgments"], "calls": sum(d["judge_calls"] for d in judge["dimensions"].values()),
            **{f"{s}_s": results[s]["seconds"] for s in ("judge", "distill", "score")}, "load": load, "per": per}


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--dims", nargs="+", default=["overall", "composition", "technique"])
    ap.add_argument("--out", default="eval/results/multi_dimension.md")
    args = ap.parse_args(argv)
    designs = [args.dims[:1], args.dims]
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for dims in designs:
            runs[len(dims)] = [run(dims, s, Path(tmp) / f"{len(dims)}-{s}") for s in args.seeds]
            print(f"{len(dims)} dimension(s): {runs[len(dims)]}", flush=True)

    def mean(rs, key):
        return float(np.mean([r[key] for r in rs]))

    one, many = runs[1], runs[len(args.dims)]
    added = len(args.dims) - 1
    lines = [
        "# Every dimension in one run: cost per added dimension and per-dimension SRCC (eval/bench_multi_dimension.py)",
        "", command_line("eval/bench_multi_dimension.py", argv), *environment_lines("cpu"),
        f"- the demo config (simulated judge accuracy 0.85, 8 references, 40 training images of `objects`, 128 px, "
        f"full fine-tuning, 300 steps, batch 10); `distill.prompt: {PROMPT}`; seeds {args.seeds}, cells their mean",
        "- judge stage seconds are the simulated judge's (no model); a VLM judge costs about its pairs", "",
        "## Cost", "",
        "| dimensions | pairs judged | judge calls (batched) | judge s | distill s | score s | load avg (1 min) |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *[f"| {', '.join(dims)} | {mean(runs[len(dims)], 'pairs'):.0f} | {mean(runs[len(dims)], 'calls'):.0f} | "
          f"{mean(runs[len(dims)], 'judge_s'):.1f} | {mean(runs[len(dims)], 'distill_s'):.1f} | "
          f"{mean(runs[len(dims)], 'score_s'):.1f} | {mean(runs[len(dims)], 'load'):.1f} |" for dims in designs],
        f"| per added dimension | {(mean(many, 'pairs') - mean(one, 'pairs')) / added:.0f} | "
        f"{(mean(many, 'calls') - mean(one, 'calls')) / added:.0f} | "
        f"{(mean(many, 'judge_s') - mean(one, 'judge_s')) / added:+.1f} | "
        f"{(mean(many, 'distill_s') - mean(one, 'distill_s')) / added:+.1f} | "
        f"{(mean(many, 'score_s') - mean(one, 'score_s')) / added:+.1f} | |", "",
        "## SRCC per dimension", "",
        "| run | dimension | pseudo-scores (training images) | student, training category | student, held-out pooled |",
        "|---|---|---:|---:|---:|",
    ]
    for dims in designs:
        for dim in dims:
            cells = [float(np.mean([r["per"][dim][k] for r in runs[len(dims)]])) for k in ("pseudo", "trained", "held_out")]
            lines.append(f"| {len(dims)} dimension(s) | {dim} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    return write_report(lines, args.out)


if __name__ == "__main__":
    main()
