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

from psdistill.data.images import load_image  # noqa: E402
from psdistill.data.records import ImageRecord  # noqa: E402
from psdistill.judge.vlm import VLMJudge, VLMJudgeConfig  # noqa: E402
from psdistill.models.loading import _DTYPES, TINY, ModelConfig, load_vlm  # noqa: E402


def build(args):
    """(model, processor, model_id) on args.device."""
    from psdistill.models.tiny import tiny_qwen3_vl, tiny_qwen3_vl_processor

    pixels = args.image_size ** 2
    dtype = _DTYPES[args.dtype] if args.dtype != "auto" else torch.float32
    if args.config_json:
        from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

        processor = tiny_qwen3_vl_processor(args.image_size)
        data = json.loads(Path(args.config_json).read_text())
        data.pop("_comment", None)
        tok = processor.tokenizer
        for key, token in [("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
                           ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>")]:
            data[key] = tok.convert_tokens_to_ids(token)
        torch.manual_seed(args.seed)
        with torch.device(args.device):
            model = Qwen3VLForConditionalGeneration._from_config(Qwen3VLConfig.from_dict(data), dtype=dtype)
        return model.eval(), processor, f"random({Path(args.config_json).name},seed={args.seed})"
    if args.model == TINY:
        model, processor = tiny_qwen3_vl(seed=args.seed, image_size=args.image_size)
        return model.to(args.device, dtype), processor, ModelConfig(max_pixels=pixels, seed=args.seed).model_id
    cfg = ModelConfig(name_or_path=args.model, dtype=args.dtype, min_pixels=min(256 * 28 * 28, pixels), max_pixels=pixels)
    model, processor = load_vlm(cfg)
    return model.to(args.device), processor, cfg.model_id


def make_pairs(folder: Path, args) -> list:
    rng = np.random.default_rng(args.seed)
    records = []
    for k in range(args.images):
        w, h = (args.image_size * rng.uniform(0.6, 1.4, 2)).astype(int)
        path = folder / f"img{k:03d}.png"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
        records.append(ImageRecord(id=path.stem, path=str(path)))
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


def timed(fn, repeats: int):
    """(result, best seconds) over `repeats` calls of fn(); the minimum is the least disturbed run."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return result, best


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
    ap.add_argument("--pairs", type=int, default=64)
    ap.add_argument("--images", type=int, default=16, help="distinct images the pairs are drawn from")
    ap.add_argument("--image-size", type=int, default=128, help="typical image side; its square bounds the pixels")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--dtype", default="float32", choices=sorted(_DTYPES))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--prompt-set", default="painting")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per path; the fastest is reported")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="eval/results/bench_judge_cpu.md")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

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
        f"- date: {datetime.date.today().isoformat()}; device: {args.device} ({device_name(args.device)}), "
        f"torch threads: {torch.get_num_threads()}",
        f"- python {platform.python_version()}, torch {torch.__version__}, "
        f"transformers {__import__('transformers').__version__}",
        f"- model: {model_id} ({n_params / 1e6:.2f}M parameters), dtype {args.dtype}",
        f"- {args.pairs} pairs (one order) drawn from {args.images} images, sides {args.image_size} x 0.6-1.4; "
        f"vision tokens per image {tokens_per_image.min():.0f}-{tokens_per_image.max():.0f} "
        f"(mean {tokens_per_image.mean():.1f}); ~{pair_tokens:.0f} tokens per pair; batch size {args.batch_size}; "
        f"best of {args.repeats} runs per path",
        f"- command: `python eval/bench_judge.py {' '.join(sys.argv[1:] if argv is None else argv)}`", "",
        "| path | what | pairs/s | seconds | speed-up vs naive |",
        "|---|---|---:|---:|---:|",
        *[f"| {name} | {what} | {args.pairs / t:.1f} | {t:.2f} | {t_naive / t:.1f}x |" for name, what, t in rows],
        "",
        f"- batched vs optimized: max |dP| = {np.nanmax(np.abs(p_batched - p_opt)):.1e} (the same judgments)",
        f"- naive answers parsed as {answers[0]}/{answers[1]}: {parsed.sum()}/{len(pairs)}; "
        f"agreement with the optimized path's argmax where parsed: {agree}",
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(report)
    return report


if __name__ == "__main__":
    main()
