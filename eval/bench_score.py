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
import datetime
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from psdistill.data.records import ImageRecord  # noqa: E402
from psdistill.distill import DistillConfig, ScorerSpec, StudentScorer  # noqa: E402
from psdistill.judge.vlm import VLMJudge, VLMJudgeConfig  # noqa: E402
from psdistill.models.loading import TINY, ModelConfig, load_vlm  # noqa: E402


def build(args):
    """(model, processor, model_id) on args.device."""
    from psdistill.models.tiny import tiny_qwen3_vl, tiny_qwen3_vl_processor

    dtype = getattr(torch, args.dtype) if args.dtype != "auto" else torch.float32
    if args.config_json:
        from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

        processor = tiny_qwen3_vl_processor(args.image_size)
        data = json.loads(Path(args.config_json).read_text())
        data.pop("_comment", None)
        tok = processor.tokenizer
        for key, token in [("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
                           ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>")]:
            data[key] = tok.convert_tokens_to_ids(token)
        torch.manual_seed(0)
        with torch.device(args.device):
            model = Qwen3VLForConditionalGeneration._from_config(Qwen3VLConfig.from_dict(data), dtype=dtype)
        return model.eval(), processor, f"random({Path(args.config_json).name})"
    if args.model == TINY:
        model, processor = tiny_qwen3_vl(image_size=args.image_size)
        return model.to(args.device, dtype), processor, ModelConfig(max_pixels=args.image_size ** 2).model_id
    cfg = ModelConfig(name_or_path=args.model, dtype=args.dtype, max_pixels=args.image_size ** 2,
                      min_pixels=min(256 * 28 * 28, args.image_size ** 2))
    model, processor = load_vlm(cfg)
    return model.to(args.device), processor, cfg.model_id


def timed(fn, *a, **kw) -> float:
    start = time.perf_counter()
    fn(*a, **kw)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "cpu"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=TINY, help="hub id, local folder, or 'tiny' (random-weight Qwen3-VL)")
    ap.add_argument("--config-json", default=None, help="build this architecture with random weights instead")
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--pairs", type=int, default=64)
    ap.add_argument("--references", type=int, default=8, help="k: reference-pool images each image is judged against")
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16, help="images per scorer pass, pairs per judge pass")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats; the best is reported")
    ap.add_argument("--dtype", default="float32", choices=["auto", "float32", "bfloat16", "float16"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--out", default="eval/results/bench_score_cpu.md")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    model, processor, model_id = build(args)
    spec = ScorerSpec.from_config(ModelConfig(), DistillConfig(), "overall", weights="base", name="scorer")
    scorer = StudentScorer(model, processor, spec)
    judges = {reuse: VLMJudge(model, processor, VLMJudgeConfig(batch_size=args.batch_size, reuse_vision=reuse),
                              model_id=model_id) for reuse in (False, True)}
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        records = []
        for k in range(args.images):
            w, h = (args.image_size * rng.uniform(0.6, 1.4, 2)).astype(int)
            path = Path(tmp) / f"img{k:03d}.png"
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
            records.append(ImageRecord(id=path.stem, path=str(path)))
        pairs = [tuple(records[i] for i in rng.choice(args.images, 2, replace=False)) for _ in range(args.pairs)]
        paths = [r.path for r in records]
        scorer.score(paths[:2])  # warm-up: allocator, kernels
        judges[False].prefer(pairs[:2], "overall")
        t_score = min(timed(scorer.score, paths, batch_size=args.batch_size) for _ in range(args.repeats))
        t_pair = {}
        for reuse in (False, True):
            # A fresh judge per repeat, so the vision cache starts empty and encoding is timed.
            config = VLMJudgeConfig(batch_size=args.batch_size, reuse_vision=reuse)
            t_pair[reuse] = min(timed(VLMJudge(model, processor, config, model_id=model_id).prefer, pairs, "overall")
                                for _ in range(args.repeats))
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
        f"- date: {datetime.date.today().isoformat()}; device: {args.device} ({device_name(args.device)}), "
        f"torch threads: {torch.get_num_threads()}",
        f"- python {platform.python_version()}, torch {torch.__version__}, transformers "
        f"{__import__('transformers').__version__}",
        f"- model: {model_id} ({n_params / 1e6:.2f}M parameters), dtype {args.dtype}",
        f"- {args.images} images, sides {args.image_size} x 0.6-1.4; {args.pairs} pairs of them; batch size "
        f"{args.batch_size}; best of {args.repeats} repeats",
        f"- teacher cost per image: 2 x k = {2 * args.references} pairwise forward passes (k = {args.references} "
        "references, both orders)",
        f"- command: `{' '.join(['python', 'eval/bench_score.py', *(sys.argv[1:] if argv is None else argv)])}`", "",
        f"**Scorer: {scorer_ips:.1f} images/s** ({1e3 / scorer_ips:.1f} ms/image, one forward pass each, batched)", "",
        "| teacher path | pairs/s | teacher images/s | scorer speed-up |",
        "|---|---:|---:|---:|",
        *[f"| {what} | {pps:.1f} | {tips:.2f} | {ratio:.1f}x |" for what, pps, tips, ratio in rows],
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(report)
    return report


if __name__ == "__main__":
    main()
