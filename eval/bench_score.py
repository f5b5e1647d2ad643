"""Single-pass scorer throughput against the pairwise teacher's cost per image, with the same model.

    python eval/bench_score.py --model tiny                                  # -> eval/results/bench_score_cpu.md
    python eval/bench_score.py --config-json psdistill/models/configs/qwen3_vl_8b.json --device cuda \\
        --dtype bfloat16 --image-size 448 --out eval/results/bench_score_8b.md

- scorer: `StudentScorer` (the levels head; a merged student costs the same as the base model),
  one forward pass per image, batched.
- teacher: placing one image with the Elo reference pool takes 2 x k pairwise judgments (k
  references, both orders). The pairwise forward pass is timed directly with `VLMJudge` on pairs of
  the same images, batched, both without and with its vision-encoder reuse; teacher images/s =
  pairs/s / (2 k).
Images are random, with sides spread over 0.6-1.4x `--image-size` (whose square bounds the pixels).
`--config-json` builds that architecture with random weights and the tiny model's tokenizer.
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
from psdistill.distill import DistillConfig, ScorerSpec, StudentScorer  # noqa: E402
from psdistill.judge.vlm import VLMJudge, VLMJudgeConfig  # noqa: E402
from psdistill.models.loading import TINY, ModelConfig, load_vlm  # noqa: E402


def build(args):
    """(model, processor, model_id) on args.device."""
    from psdistill.models.tiny import tiny_qwen3_vl

    dtype = getattr(torch, args.dtype) if args.dtype != "auto" else torch.float32
    if args.config_json:
        model, processor = random_qwen3_vl(args.config_json, args.image_size, dtype, args.device, seed=0)
        return model.eval(), processor, f"random({Path(args.config_json).name})"
    if args.model == TINY:
        model, processor = tiny_qwen3_vl(image_size=args.image_size)
        return model.to(args.device, dtype), processor, ModelConfig(max_pixels=args.image_size ** 2).model_id
    cfg = ModelConfig(name_or_path=args.model, dtype=args.dtype, max_pixels=args.image_size ** 2,
                      min_pixels=min(256 * 28 * 28, args.image_size ** 2))
    model, processor = load_vlm(cfg)
    return model.to(args.device), processor, cfg.model_id


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_args(ap)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--pairs", type=int, default=64)
    ap.add_argument("--references", type=int, default=8, help="k: reference-pool images each image is judged against")
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16, help="images per scorer pass, pairs per judge pass")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats; the best is reported")
    add_runtime_args(ap)
    ap.add_argument("--out", default="eval/results/bench_score_cpu.md")
    args = parse_args(ap, argv)

    model, processor, model_id = build(args)
    spec = ScorerSpec.build(ModelConfig(), DistillConfig().readout_config(["overall"]), weights="base", name="scorer")
    scorer = StudentScorer(model, processor, spec)
    judges = {reuse: VLMJudge(model, processor, VLMJudgeConfig(batch_size=args.batch_size, reuse_vision=reuse),
                              model_id=model_id) for reuse in (False, True)}
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        records = random_image_records(Path(tmp), args.images, args.image_size, rng)
        pairs = [tuple(records[i] for i in rng.choice(args.images, 2, replace=False)) for _ in range(args.pairs)]
        paths = [r.path for r in records]
        scorer.score(paths[:2])  # warm-up: allocator, kernels
        judges[False].prefer(pairs[:2], "overall")
        _, t_score = timed(lambda: scorer.score(paths, batch_size=args.batch_size), args.repeats)
        t_pair = {}
        for reuse in (False, True):
            # A fresh judge per repeat (built untimed), so the vision cache starts empty and encoding is timed.
            config = VLMJudgeConfig(batch_size=args.batch_size, reuse_vision=reuse)
            _, t_pair[reuse] = timed(lambda judge: judge.prefer(pairs, "overall"), args.repeats,
                                     setup=lambda: VLMJudge(model, processor, config, model_id=model_id))
    reuse_on = judges[True].reuse_vision
    scorer_ips = args.images / t_score
    rows = []
    for reuse in (False, True):
        pairs_ps = args.pairs / t_pair[reuse]
        teacher_ips = pairs_ps / (2 * args.references)
        what = "VLMJudge, vision reuse" if reuse else "VLMJudge, stock path"
        if reuse and not reuse_on:
            what += " (not available for this model: stock path)"
        rows.append((what, pairs_ps, teacher_ips, scorer_ips / teacher_ips))
    n_params = sum(p.numel() for p in model.parameters())
    lines = [
        "# Scorer throughput vs the pairwise teacher (eval/bench_score.py)", "",
        *environment_lines(args.device),
        f"- model: {model_id} ({n_params / 1e6:.2f}M parameters), dtype {args.dtype}",
        f"- {args.images} images, sides {args.image_size} x 0.6-1.4; {args.pairs} pairs of them; batch size "
        f"{args.batch_size}; best of {args.repeats} repeats",
        f"- teacher cost per image: 2 x k = {2 * args.references} pairwise forward passes (k = {args.references} "
        "references, both orders)",
        command_line("eval/bench_score.py", argv), "",
        f"**Scorer: {scorer_ips:.1f} images/s** ({1e3 / scorer_ips:.1f} ms/image, one forward pass each, batched)", "",
        "| teacher path | pairs/s | teacher images/s | scorer speed-up |",
        "|---|---:|---:|---:|",
        *[f"| {what} | {pps:.1f} | {tips:.2f} | {ratio:.1f}x |" for what, pps, tips, ratio in rows],
    ]
    return write_report(lines, args.out)


if __name__ == "__main__":
    main()
