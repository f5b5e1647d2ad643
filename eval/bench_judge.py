"""Judge throughput: the naive generate-per-pair loop, the batched VLMJudge paths and prefix KV reuse, on the same pairs.

    python eval/bench_judge.py --model tiny --threads 1                      # -> eval/results/bench_judge_cpu.md
    # the runs in eval/results/judge_bench.md, e.g.:
    python eval/bench_judge.py --config-json psdistill/models/configs/qwen3_vl_mid.json --image-size 512 \\
        --design fixed --images 12 --references 4 --paths optimized,prefix --threads 1 --batch-size 8 \\
        --out /tmp/judge_bench_fixed.md
    python eval/bench_judge.py --config-json psdistill/models/configs/qwen3_vl_8b.json \\
        --dtype bfloat16 --device cuda --image-size 448 --out eval/results/bench_judge_8b_random.md

Paths (`--paths`), all on the same pairs:
- naive: per pair, the processor on both images and `generate(max_new_tokens=2)` (the answer
  letter and end-of-turn, what an instruction-following model emits), the text parsed for A/B;
  gives a hard 0/1 answer.
- batched: VLMJudge(reuse_vision=False): left-padded batches, one forward pass, answer-token logits.
- optimized: VLMJudge(reuse_prefix=False), the path before prefix reuse: batched, and each image
  through the vision encoder once (its cache starts empty, so the encoding is timed).
- prefix: VLMJudge as configured by default: the optimized path, and the prompt prefix shared by
  pairs with the same first image run once (psdistill/models/prefix_kv.py).
Pairs (`--design`): `random` ordered pairs; `fixed`, a fixed reference pool's schedule
(pair_designs.reference_pool_pairs: the references round-robin, every other image
against every reference, both orders); `round`, one adaptive-pool round (each other image against
one reference, both orders: only the (reference, x) half shares a first image).
Trials are interleaved (every path once per trial, in turn), because the machine is shared, and
the median is reported. FLOPs per pair are counted by torch's FlopCounterMode on one untimed run
of each path (matmuls and attention); the share of the limit is the path's FLOP/s over a plain
matmul's measured in the same trials.
Images are random, with sides spread over 0.6-1.4x `--image-size`, so batches mix image sizes;
`--image-size` squared is also the processor's pixel bound. `--config-json` builds that
architecture with random weights and the tiny model's tokenizer (its special-token ids are patched
into the config): the speed of the real model, with meaningless answers.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

from _bench_common import (add_model_args, add_runtime_args, command_line, environment_lines,  # noqa: E402
                           parse_args, random_image_records, random_qwen3_vl, write_report)
from psdistill.data.images import load_image  # noqa: E402
from psdistill.judge.vlm import VLMJudge, VLMJudgeConfig  # noqa: E402
from psdistill.models.device import DTYPES  # noqa: E402
from psdistill.models.loading import TINY, ModelConfig, load_vlm  # noqa: E402
from pair_designs import reference_pool_pairs  # noqa: E402


def build(args):
    """(model, processor, model_id) on args.device."""
    from psdistill.models.tiny import tiny_qwen3_vl

    pixels = args.image_size ** 2
    dtype = DTYPES[args.dtype] if args.dtype != "auto" else torch.float32
    if args.config_json:
        model, processor = random_qwen3_vl(args.config_json, args.image_size, dtype, args.device, seed=args.seed)
        return model.eval(), processor, f"random({Path(args.config_json).name},seed={args.seed})"
    if args.model == TINY:
        model, processor = tiny_qwen3_vl(seed=args.seed, image_size=args.image_size)
        return model.to(args.device, dtype), processor, ModelConfig(max_pixels=pixels, seed=args.seed).model_id
    cfg = ModelConfig(name_or_path=args.model, dtype=args.dtype, min_pixels=min(256 * 28 * 28, pixels), max_pixels=pixels)
    model, processor = load_vlm(cfg)
    return model.to(args.device), processor, cfg.model_id


def make_pairs(folder: Path, args) -> list:
    """The pairs of `args.design` over `args.images` random images (the first `args.references` are the references)."""
    rng = np.random.default_rng(args.seed)
    records = random_image_records(folder, args.images, args.image_size, rng)
    if args.design == "fixed":
        index = reference_pool_pairs(args.images, np.arange(args.references))
    elif args.design == "round":
        placed = np.column_stack([np.arange(args.references, args.images),
                                  np.arange(args.images - args.references) % args.references])
        index = np.concatenate([placed, placed[:, ::-1]])
    else:
        index = [rng.choice(args.images, 2, replace=False) for _ in range(args.pairs)]
    return [(records[i], records[j]) for i, j in index]


@torch.inference_mode()
def naive(model, processor, text, answers, pairs) -> np.ndarray:
    """One generate call per pair, the answer parsed from the text: what a first script does."""
    out = np.full(len(pairs), np.nan)
    for n, (a, b) in enumerate(pairs):
        inputs = processor(text=[text], images=[[load_image(a.path), load_image(b.path)]],
                           return_tensors="pt").to(model.device)
        ids = model.generate(**inputs, max_new_tokens=2, do_sample=False,
                             pad_token_id=processor.tokenizer.pad_token_id)
        reply = processor.batch_decode(ids[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0].strip()
        if reply[:1] in answers:
            out[n] = float(reply[:1] == answers[0])
    return out


PATHS = {"naive": "generate per pair, parse text", "batched": "VLMJudge(reuse_vision=False)",
         "optimized": "VLMJudge(reuse_prefix=False)", "prefix": "VLMJudge (prefix KV reuse)"}


def matmul_flops(device: str, n: int = 1024, repeats: int = 5) -> float:
    """FLOP/s of a plain n x n float32 matmul (the median of `repeats`): the machine's attainable rate."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        rates.append(2 * n ** 3 / (time.perf_counter() - start))
    return statistics.median(rates)


def add_bench_args(ap: argparse.ArgumentParser) -> None:
    """The model, the pairs, the runtime and the report: the arguments this script shares with bench_judge_vllm.py."""
    add_model_args(ap)
    ap.add_argument("--design", choices=["random", "fixed", "round"], default="random")
    ap.add_argument("--pairs", type=int, default=64, help="random design: pairs drawn")
    ap.add_argument("--images", type=int, default=16, help="distinct images the pairs are drawn from")
    ap.add_argument("--references", type=int, default=4, help="fixed/round designs: references among the images")
    ap.add_argument("--image-size", type=int, default=128, help="typical image side; its square bounds the pixels")
    ap.add_argument("--batch-size", type=int, default=16)
    add_runtime_args(ap)
    ap.add_argument("--prompt-set", default="painting")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved trials; the median is reported")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="eval/results/bench_judge_cpu.md")
    ap.add_argument("--append", action="store_true", help="add the report to the end of --out")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_bench_args(ap)
    ap.add_argument("--paths", default=",".join(PATHS), help=f"comma-separated, of {', '.join(PATHS)}")
    args = parse_args(ap, argv)
    paths = args.paths.split(",")
    if set(paths) - set(PATHS):
        ap.error(f"--paths: unknown {sorted(set(paths) - set(PATHS))}; choose from {', '.join(PATHS)}")

    model, processor, model_id = build(args)
    configs = {"batched": VLMJudgeConfig(prompt_set=args.prompt_set, batch_size=args.batch_size, reuse_vision=False),
               "optimized": VLMJudgeConfig(prompt_set=args.prompt_set, batch_size=args.batch_size, reuse_prefix=False),
               "prefix": VLMJudgeConfig(prompt_set=args.prompt_set, batch_size=args.batch_size)}
    probe = VLMJudge(model, processor, configs["prefix"], model_id=model_id)
    text, answers = probe.prompts.render(processor, "overall"), probe.prompts.answers

    def run(path, pairs):
        # A new judge per run (a few ms): its vision cache starts empty, so encoding every image is timed.
        if path == "naive":
            return naive(model, processor, text, answers, pairs)
        return VLMJudge(model, processor, configs[path], model_id=model_id).prefer(pairs, "overall")

    with tempfile.TemporaryDirectory() as tmp:
        pairs = make_pairs(Path(tmp), args)
        flops = {}
        for path in paths:  # warm-up (allocator, kernels), and the FLOP count
            run(path, pairs[:2])
            with FlopCounterMode(display=False) as counter:
                run(path, pairs)
            flops[path] = counter.get_total_flops() / len(pairs)
        times, p, peak, load = {path: [] for path in paths}, {}, [], [os.getloadavg()[0]]
        for _ in range(args.repeats):
            peak.append(matmul_flops(args.device))
            for path in paths:
                start = time.perf_counter()
                p[path] = run(path, pairs)
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                times[path].append(time.perf_counter() - start)
        peak.append(matmul_flops(args.device))
        load.append(os.getloadavg()[0])
        grid = processor.image_processor(images=[load_image(r.path) for r in {r.path: r for p_ in pairs for r in p_}.values()],
                                         return_tensors="pt")["image_grid_thw"]
    merge = processor.image_processor.merge_size ** 2
    tokens_per_image = (grid.prod(-1) // merge).float()
    pair_tokens = len(processor.tokenizer(text)["input_ids"]) - 2 + 2 * tokens_per_image.mean().item()
    shared = sum(n for n in Counter(a.path for a, _ in pairs).values() if n > 1)  # first image also first elsewhere
    t = {path: statistics.median(ts) for path, ts in times.items()}
    base = "optimized" if "optimized" in paths else paths[0]
    rate = statistics.median(peak)

    rows = []
    for path in paths:
        achieved = flops[path] * len(pairs) / t[path]
        dp = "-" if path in ("naive", base) else f"{np.nanmax(np.abs(p[path] - p[base])):.1e}"
        rows.append(f"| {path} | {PATHS[path]} | {len(pairs) / t[path]:.2f} | {t[path]:.2f} | "
                    f"{t[base] / t[path]:.2f}x | {dp} | {flops[path] / 1e9:.2f} | {achieved / 1e9:.1f} | "
                    f"{achieved / rate:.0%} |")
    n_params = sum(x.numel() for x in model.parameters())
    lines = [
        f"# Judge throughput (eval/bench_judge.py, design {args.design})", "",
        *environment_lines(args.device),
        f"- model: {model_id} ({n_params / 1e6:.2f}M parameters), dtype {args.dtype}",
        f"- {len(pairs)} pairs ({args.design} design) over {args.images} images, sides {args.image_size} x 0.6-1.4; "
        f"{shared} pairs share their first image with another pair; vision tokens per image "
        f"{tokens_per_image.min():.0f}-{tokens_per_image.max():.0f} (mean {tokens_per_image.mean():.1f}); "
        f"~{pair_tokens:.0f} tokens per pair; batch size {args.batch_size}; median of {args.repeats} interleaved trials",
        f"- plain {1024}x{1024} float32 matmul: {rate / 1e9:.1f} GFLOP/s (median of {len(peak)} measurements "
        f"between the trials, range {min(peak) / 1e9:.1f}-{max(peak) / 1e9:.1f})",
        f"- load average (1 min) before / after the trials: {load[0]:.1f} / {load[1]:.1f} (2 cores, shared)",
        command_line("eval/bench_judge.py", argv), "",
        f"| path | what | pairs/s | seconds | speed-up vs {base} | max abs dP vs {base} | GFLOP per pair | GFLOP/s | "
        "share of matmul rate |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        "- per-trial seconds: " + "; ".join(f"{path} " + ", ".join(f"{x:.2f}" for x in times[path]) for path in paths),
    ]
    if "naive" in paths:
        parsed = np.isfinite(p["naive"])
        ref = p[base if base != "naive" else paths[-1]]
        agree = (f"{np.mean((ref[parsed] > 0.5) == (p['naive'][parsed] > 0.5)):.2f}" if parsed.any()
                 else "n/a (a random-weight model rarely emits either letter)")
        lines.append(f"- naive answers parsed as {answers[0]}/{answers[1]}: {parsed.sum()}/{len(pairs)}; "
                     f"agreement with the logit readout's argmax where parsed: {agree}")
    return write_report(lines, args.out, append=args.append)


if __name__ == "__main__":
    main()
