"""Judge throughput: the naive generate-per-pair loop against the batched VLMJudge, on the same pairs.

    python eval/bench_judge.py --model tiny --threads 1                      # -> eval/results/bench_judge_cpu.md
    python eval/bench_judge.py --model Qwen/Qwen3-VL-8B-Instruct --dtype bfloat16 --device cuda \\
        --image-size 448 --out eval/results/bench_judge_8b.md
    python eval/bench_judge.py --config-json psdistill/models/configs/qwen3_vl_8b.json \\
        --dtype bfloat16 --device cuda --image-size 448 --out eval/results/bench_judge_8b_random.md

Paths, all on the same pairs in one presentation order:
- naive: per pair, the processor on both images and `generate(max_new_tokens=2)` (the answer
  letter and end-of-turn, what an instruction-following model emits), the text parsed for A/B;
  gives a hard 0/1 answer.
- batched: VLMJudge(reuse_vision=False): left-padded batches, one forward pass, answer-token logits.
- optimized: VLMJudge as configured by default: batched, and each image through the vision encoder
  once (its cache starts empty, so the encoding is timed).
Images are random, with sides spread over 0.6-1.4x `--image-size`, so batches mix image sizes;
`--image-size` squared is also the processor's pixel bound. `--config-json` builds the full-size
architecture with random weights and the tiny model's tokenizer (its special-token ids are patched
into the config): the speed of the real model, with meaningless answers.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

from _bench_common import (add_model_args, add_runtime_args, command_line, environment_lines,  # noqa: E402
                           parse_args, random_image_records, random_qwen3_vl, timed, write_report)
from psdistill.data.images import load_image  # noqa: E402
from psdistill.judge.vlm import VLMJudge, VLMJudgeConfig  # noqa: E402
from psdistill.models.loading import _DTYPES, TINY, ModelConfig, load_vlm  # noqa: E402


def build(args):
    """(model, processor, model_id) on args.device."""
    from psdistill.models.tiny import tiny_qwen3_vl

    pixels = args.image_size ** 2
    dtype = _DTYPES[args.dtype] if args.dtype != "auto" else torch.float32
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
    rng = np.random.default_rng(args.seed)
    records = random_image_records(folder, args.images, args.image_size, rng)
    pairs = []
    while len(pairs) < args.pairs:
        i, j = rng.choice(args.images, 2, replace=False)
        pairs.append((records[i], records[j]))
    return pairs


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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_args(ap)
    ap.add_argument("--pairs", type=int, default=64)
    ap.add_argument("--images", type=int, default=16, help="distinct images the pairs are drawn from")
    ap.add_argument("--image-size", type=int, default=128, help="typical image side; its square bounds the pixels")
    ap.add_argument("--batch-size", type=int, default=16)
    add_runtime_args(ap)
    ap.add_argument("--prompt-set", default="painting")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per path; the fastest is reported")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="eval/results/bench_judge_cpu.md")
    args = parse_args(ap, argv)

    model, processor, model_id = build(args)
    config = VLMJudgeConfig(prompt_set=args.prompt_set, batch_size=args.batch_size)
    stock = VLMJudgeConfig(prompt_set=args.prompt_set, batch_size=args.batch_size, reuse_vision=False)
    optimized = VLMJudge(model, processor, config, model_id=model_id)
    text, answers = optimized.prompts.render(processor, "overall"), optimized.prompts.answers
    with tempfile.TemporaryDirectory() as tmp:
        pairs = make_pairs(Path(tmp), args)
        # Warm-up (allocator, kernels). Every timed run builds a new judge (a few ms), so the
        # vision cache starts empty and encoding every image is part of the time.
        naive(model, processor, text, answers, pairs[:2])
        VLMJudge(model, processor, stock, model_id=model_id).prefer(pairs[:2], "overall")
        optimized.prefer(pairs[:2], "overall")
        p_naive, t_naive = timed(lambda: naive(model, processor, text, answers, pairs), args.repeats)
        p_batched, t_batched = timed(
            lambda: VLMJudge(model, processor, stock, model_id=model_id).prefer(pairs, "overall"), args.repeats)
        p_opt, t_opt = timed(
            lambda: VLMJudge(model, processor, config, model_id=model_id).prefer(pairs, "overall"), args.repeats)
        grid = processor.image_processor(images=[load_image(r.path) for r in {r.path: r for p in pairs for r in p}.values()],
                                         return_tensors="pt")["image_grid_thw"]
    merge = processor.image_processor.merge_size ** 2
    tokens_per_image = (grid.prod(-1) // merge).float()
    pair_tokens = len(processor.tokenizer(text)["input_ids"]) - 2 + 2 * tokens_per_image.mean().item()

    parsed = np.isfinite(p_naive)
    agree = (f"{np.mean((p_opt[parsed] > 0.5) == (p_naive[parsed] > 0.5)):.2f}" if parsed.any()
             else "n/a (a random-weight model rarely emits either letter)")
    rows = [("naive", "generate per pair, parse text", t_naive),
            ("batched", "VLMJudge(reuse_vision=False)", t_batched),
            ("optimized", f"VLMJudge (vision reuse: {optimized.reuse_vision})", t_opt)]
    n_params = sum(p.numel() for p in model.parameters())
    lines = [
        "# Judge throughput (eval/bench_judge.py)", "",
        *environment_lines(args.device),
        f"- model: {model_id} ({n_params / 1e6:.2f}M parameters), dtype {args.dtype}",
        f"- {args.pairs} pairs (one order) drawn from {args.images} images, sides {args.image_size} x 0.6-1.4; "
        f"vision tokens per image {tokens_per_image.min():.0f}-{tokens_per_image.max():.0f} "
        f"(mean {tokens_per_image.mean():.1f}); ~{pair_tokens:.0f} tokens per pair; batch size {args.batch_size}; "
        f"best of {args.repeats} runs per path",
        command_line("eval/bench_judge.py", argv), "",
        "| path | what | pairs/s | seconds | speed-up vs naive |",
        "|---|---|---:|---:|---:|",
        *[f"| {name} | {what} | {args.pairs / t:.1f} | {t:.2f} | {t_naive / t:.1f}x |" for name, what, t in rows],
        "",
        f"- batched vs optimized: max |dP| = {np.nanmax(np.abs(p_batched - p_opt)):.1e} (the same judgments)",
        f"- naive answers parsed as {answers[0]}/{answers[1]}: {parsed.sum()}/{len(pairs)}; "
        f"agreement with the optimized path's argmax where parsed: {agree}",
    ]
    return write_report(lines, args.out)


if __name__ == "__main__":
    main()
