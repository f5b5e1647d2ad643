"""What each added dimension costs, and what the multi-dimension demo scores per dimension (issue 13 part 3).

    python eval/bench_multi_dimension.py                      # 1 vs 3 dimensions, seed 0
    python eval/bench_multi_dimension.py --seeds 0 1 --dims overall composition technique
    python eval/bench_multi_dimension.py --steps-only         # the interleaved step timing, appended

Each run is the whole demo pipeline (psdistill/pipeline/configs/demo.yaml: simulated judge, Elo reference pool,
tiny random-weight Qwen3-VL, 300 steps of full fine-tuning), with `data.dimensions` the first dimension
alone or all of `--dims` and a prompt naming the dimension (`distill.prompt`). Reported per run: judge
calls (pairs judged, and batched calls of the pool), the judge, distill and score stages' wall time,
and per dimension the SRCC of the teacher's pseudo-scores (training images) and of the one student
(training category, held-out categories pooled). The simulated judge answers instantly: on a real VLM
the judge's cost is its pairs (each one a forward pass over two images), which is why they are counted.
The machine is shared: the load average is printed beside the times, and the per-step and scoring
times are measured interleaved (1 and 3 dimensions taking turns), which the whole runs' are not.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench_common import command_line, environment_lines, write_report  # noqa: E402

from psdistill.cli import DEMO_CONFIG  # noqa: E402
from psdistill.core.config import parse_config  # noqa: E402
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


def step_seconds(dim_sets: list[list[str]], images: list[str], repeats: int) -> dict[int, dict[str, float]]:
    """Seconds (the fastest of `repeats`) of one training step (DistillTrainer.compute_loss, forward and
    backward, a batch of the demo's images) and of scoring that batch, per dimension set, the sets
    interleaved so that a shared machine's load weighs on each alike; and the token counts each pass runs."""
    import torch

    from psdistill.distill import DistillConfig, StudentScorer
    from psdistill.scoring.readout import Readout
    from psdistill.scoring.spec import ScorerSpec
    from psdistill.distill.student_build import build_student
    from psdistill.distill.trainer import DistillCollator, DistillTrainer
    from psdistill.models.loading import ModelConfig

    model_cfg = ModelConfig(max_pixels=128 * 128)  # the demo's
    cfg = DistillConfig(tuning="full", tune_vision=True, prompt=PROMPT, report_to=["none"])
    model, processor = build_student(model_cfg, cfg)
    setups, tokens = {}, {}  # tokens: (the prompt's or shared prefix's length, each suffix's length)
    for dims in dim_sets:
        spec = ScorerSpec.build(model_cfg, cfg.readout_config(dims), "full", "bench")
        readout = Readout(spec, processor)
        trainer = DistillTrainer(model=model, args=cfg.to_training_arguments(tempfile.mkdtemp(), with_eval=False),
                                 train_dataset=[{}], distill_config=cfg, readout=readout, spec=spec)
        rows = [{"path": p, "mu": [float(k % 7)] * len(dims), "var": [0.2] * len(dims)} for k, p in enumerate(images)]
        setups[len(dims)] = (trainer, DistillCollator(processor, readout.text)(rows),
                             StudentScorer(model, processor, spec))
        tokens[len(dims)] = (setups[len(dims)][1]["input_ids"].shape[1], [len(t) for t in readout.suffixes or []])
    times = {n: {"train": [], "score": []} for n in setups}
    for _ in range(repeats):
        for n, (trainer, batch, scorer) in setups.items():
            model.train()
            start = time.perf_counter()
            trainer.compute_loss(model, dict(batch)).backward()
            times[n]["train"].append(time.perf_counter() - start)
            model.zero_grad()
            start = time.perf_counter()
            scorer.score(images, batch_size=len(images))
            times[n]["score"].append(time.perf_counter() - start)
    torch.set_grad_enabled(True)
    # The fastest repeat: the one least slowed by other processes (as timeit reports).
    return {n: {**{k: float(np.min(v)) for k, v in t.items()}, "tokens": tokens[n]} for n, t in times.items()}


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--dims", nargs="+", default=["overall", "composition", "technique"])
    ap.add_argument("--out", default="eval/results/multi_dimension.md")
    ap.add_argument("--repeats", type=int, default=15, help="interleaved repeats of the step timing")
    ap.add_argument("--steps-only", action="store_true", help="only the interleaved step timing (no demo runs)")
    args = ap.parse_args(argv)
    designs = [args.dims[:1], args.dims]
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        from psdistill.data.demo import DemoConfig, build_demo
        from psdistill.data.manifest import read_manifest

        demo = read_manifest(build_demo(Path(tmp) / "demo", DemoConfig(size=128, categories=("objects",))))
        steps = step_seconds(designs, [r.path for r in demo[:10]], args.repeats)  # the demo's batch of 10
        step_lines = [
            "## One training step and one scoring pass, interleaved", "",
            f"The fastest of {args.repeats} repeats, the dimension sets taking turns (so the shared machine's load "
            "weighs on each alike): DistillTrainer.compute_loss + backward on a batch of 10 demo images (128 px, "
            "full fine-tuning of the tiny Qwen3-VL), and StudentScorer.score of the same 10.", "",
            "| dimensions | train step s | vs 1 | score s (10 images) | vs 1 |", "|---|---:|---:|---:|---:|",
            *[f"| {', '.join(dims)} | {steps[len(dims)]['train']:.3f} | {steps[len(dims)]['train'] / steps[1]['train']:.2f}x | "
              f"{steps[len(dims)]['score']:.3f} | {steps[len(dims)]['score'] / steps[1]['score']:.2f}x |" for dims in designs],
            f"| per added dimension | {(steps[len(args.dims)]['train'] - steps[1]['train']) / (len(args.dims) - 1):+.3f} | "
            f"{(steps[len(args.dims)]['train'] / steps[1]['train'] - 1) / (len(args.dims) - 1):+.2f}x | "
            f"{(steps[len(args.dims)]['score'] - steps[1]['score']) / (len(args.dims) - 1):+.3f} | "
            f"{(steps[len(args.dims)]['score'] / steps[1]['score'] - 1) / (len(args.dims) - 1):+.2f}x |", "",
            f"Tokens per image: one dimension {steps[1]['tokens'][0]} (the whole prompt, image included); "
            f"{len(args.dims)} dimensions {steps[len(args.dims)]['tokens'][0]} shared (image and common words) + "
            f"suffixes {steps[len(args.dims)]['tokens'][1]}.", ""]
        if args.steps_only:
            return write_report([command_line("eval/bench_multi_dimension.py", argv),
                                 f"- load average (1, 5, 15 min) at the end: {os.getloadavg()}", "", *step_lines],
                                args.out, append=True)
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
        *step_lines,
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
