"""Distillation training throughput: samples/s and peak memory of `train_student` (the real Trainer path).

    python eval/bench_train.py --model tiny                                  # -> eval/results/bench_train_cpu.md
    python eval/bench_train.py --config-json psdistill/models/configs/qwen3_vl_8b.json --device cuda \\
        --dtype bfloat16 --tuning lora --gradient-checkpointing --image-size 448 --batch-size 8 \\
        --out eval/results/bench_train_8b_lora.md

Each configuration trains `--steps` optimizer steps (`--objective grpo`: GRPO steps, each sampling
`--generations` answers per image; samples/s counts images) on random images (fixed side `--image-size`,
which also bounds the processor's pixels) with random pseudo-scores; the first `--warmup` steps are
not timed. Peak memory: the process's peak RSS on CPU (it includes the model load),
torch.cuda.max_memory_allocated during training on GPU. `--config-json` builds that architecture
with random weights and the tiny model's tokenizer, saved to a temporary folder first (speed and
memory of the real size, meaningless scores).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import TrainerCallback

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

from _bench_common import (add_model_args, add_runtime_args, command_line, environment_lines,  # noqa: E402
                           parse_args, peak_rss_mb, random_qwen3_vl, write_report)
from psdistill.data.records import ImageRecord  # noqa: E402
from psdistill.distill import DistillConfig, train_student  # noqa: E402
from psdistill.distill.objectives import OBJECTIVES  # noqa: E402
from psdistill.models.loading import ModelConfig  # noqa: E402


class StepTimer(TrainerCallback):
    """Wall time of every optimizer step, and the GPU memory peak from the first step on."""

    def __init__(self):
        self.times, self._start = [], None

    def on_train_begin(self, args, state, control, **kw):
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    def on_step_begin(self, args, state, control, **kw):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.times.append(time.perf_counter() - self._start)


def random_model_folder(config_json: str, image_size: int, dtype: str, folder: Path) -> str:
    """Save a random-weight model of `config_json`'s architecture with the tiny tokenizer to `folder`."""
    from psdistill.models.tiny import save_tiny

    model, processor = random_qwen3_vl(config_json, image_size, getattr(torch, dtype) if dtype != "auto" else None)
    return save_tiny(model, processor, folder)


def run_one(records, pseudo, model_cfg, args, row: str, out_dir) -> dict:
    """One row: `row` is a tuning ('lora', 'qlora', 'full'), '+vision' to train the vision tower too."""
    timer = StepTimer()
    tuning, _, vision = row.partition("+")
    cfg = DistillConfig(
        tuning=tuning, head=args.head, tune_vision=vision == "vision", max_steps=args.steps + args.warmup,
        per_device_train_batch_size=args.batch_size, gradient_accumulation_steps=args.accumulation,
        learning_rate=1e-4, gradient_checkpointing=args.gradient_checkpointing,
        bf16=args.dtype == "bfloat16" and args.device.startswith("cuda"), save_steps=10 ** 9,
        logging_steps=10 ** 9, report_to=["none"], objective=args.objective, grpo={"num_generations": args.generations},
        training_args={"disable_tqdm": True, "use_cpu": args.device == "cpu", "save_strategy": "no"})
    train_student(records, pseudo, model_cfg, cfg, out_dir, callbacks=[timer])
    step = float(np.median(timer.times[args.warmup:]))
    samples = args.batch_size * args.accumulation
    peak = (torch.cuda.max_memory_allocated() / 2 ** 30 if args.device.startswith("cuda")
            else peak_rss_mb() / 2 ** 10)
    return {"row": row, "samples_per_s": samples / step, "step_s": step, "peak_gib": peak}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_args(ap)
    ap.add_argument("--tuning", nargs="+", default=["lora", "full", "full+vision"],
                    choices=["lora", "qlora", "full", "lora+vision", "full+vision"],
                    help="rows; '+vision' also trains (LoRA: adapts) the vision tower")
    ap.add_argument("--head", default="levels", choices=["levels", "scalar"])
    ap.add_argument("--objective", default="ranking", choices=list(OBJECTIVES), help="distill.objective")
    ap.add_argument("--generations", type=int, default=4, help="grpo: sampled answers per image")
    ap.add_argument("--steps", type=int, default=20, help="timed optimizer steps")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--accumulation", type=int, default=1)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--gradient-checkpointing", action="store_true")
    add_runtime_args(ap)
    ap.add_argument("--out", default="eval/results/bench_train_cpu.md")
    args = parse_args(ap, argv)

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        records = []
        for k in range(args.images):
            path = tmp / f"img{k:03d}.png"
            Image.fromarray(rng.integers(0, 255, (args.image_size, args.image_size, 3), dtype=np.uint8)).save(path)
            records.append(ImageRecord(id=path.stem, path=str(path), series=f"s{k // 4}"))
        pseudo = {"overall": {r.id: (float(rng.uniform(1, 5)), 0.1) for r in records}}
        name = random_model_folder(args.config_json, args.image_size, args.dtype, tmp / "model") \
            if args.config_json else args.model
        model_cfg = ModelConfig(name_or_path=name, dtype=args.dtype, max_pixels=args.image_size ** 2,
                                min_pixels=min(32 * 32, args.image_size ** 2))
        results = [run_one(records, pseudo, model_cfg, args, row, tmp / f"run_{row}") for row in args.tuning]

    model_id = f"random({Path(args.config_json).name})" if args.config_json else model_cfg.model_id
    lines = [
        "# Distillation training throughput (eval/bench_train.py)", "",
        *environment_lines(args.device, packages=("transformers", "peft", "accelerate", "deepspeed")),
        f"- model: {model_id}, dtype {args.dtype}; objective {args.objective}"
        f"{f' ({args.generations} answers per image)' if args.objective == 'grpo' else ''}; head {args.head}; gradient checkpointing "
        f"{args.gradient_checkpointing}; vision tower frozen unless '+vision'",
        f"- images {args.image_size}x{args.image_size}; batch {args.batch_size} x accumulation {args.accumulation}; "
        f"median of {args.steps} optimizer steps after {args.warmup} warm-up steps",
        f"- peak memory: {'torch.cuda.max_memory_allocated' if args.device.startswith('cuda') else 'peak RSS of the process (cumulative over the rows)'}",
        command_line("eval/bench_train.py", argv), "",
        "| tuning | samples/s | s/step | peak memory (GiB) |",
        "|---|---:|---:|---:|",
        *[f"| {r['row']} | {r['samples_per_s']:.1f} | {r['step_s']:.3f} | {r['peak_gib']:.2f} |" for r in results],
    ]
    return write_report(lines, args.out)


if __name__ == "__main__":
    main()
