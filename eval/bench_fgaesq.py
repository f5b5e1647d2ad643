"""Throughput and peak memory of the FGAesQ scorer: single-image paths (the release's 512 tokens, resize) and DiffToken pairs.

    python eval/bench_fgaesq.py                                   # tiny random CLIP on CPU
    python eval/bench_fgaesq.py --model psdistill/models/configs/clip_vit_b16.json --device cuda --dtype bfloat16 \
        --out eval/results/bench_fgaesq_h100.md                   # ViT-B/16 size, random weights (no download)
    python eval/bench_fgaesq.py --model runs/fgaesq/checkpoint    # a trained checkpoint

Images are random 4:3 photos-to-be at `--source-size` (longer edge); preprocessing (resize, SSIM,
tokenization) is included in the timings, as a user would run the scorer. Peak memory: on CUDA
torch.cuda.max_memory_allocated during the timed loop; on CPU the process's peak RSS
(ru_maxrss, which includes the model and Python itself) and its growth during the run.
"""
from __future__ import annotations

import argparse
import datetime
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

from _bench_common import parse_args, peak_rss_mb, write_report  # noqa: E402
from psdistill.baselines.fgaesq.model import FGAesQModel, load_base  # noqa: E402
from psdistill.baselines.fgaesq.scorer import FGAesQScorer  # noqa: E402


def images(n: int, long_edge: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    w, h = long_edge, long_edge * 3 // 4
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    out = []
    for _ in range(n):
        f = rng.uniform(3, 15, 3)
        arr = np.stack([np.sin(f[0] * x + f[1] * y), np.cos(f[1] * y - f[2] * x), np.sin(f[2] * (x + y))], -1)
        arr = np.clip(arr * 0.35 + 0.5 + rng.normal(0, 0.05, arr.shape), 0, 1)
        out.append(Image.fromarray((arr * 255).astype(np.uint8)))
    return out


def build(model: str, tiny_image_size: int) -> FGAesQModel:
    if Path(model).is_dir():
        return FGAesQModel.from_pretrained(model)
    m, _ = load_base(model, image_size=tiny_image_size, with_text=False)
    return m


def bench(scorer: FGAesQScorer, fn: str, ims, refs, repeats: int) -> dict:
    cuda = scorer.device.type == "cuda"
    call = (lambda: scorer.score(ims)) if fn == "single" else (lambda: scorer.score_pairs(ims, refs))
    call()  # warm-up: kernels, allocator, caches
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss0 = peak_rss_mb()
    t0 = time.perf_counter()
    for _ in range(repeats):
        call()
    if cuda:
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    out = {"images_per_s": repeats * len(ims) / dt, "ms_per_image": 1000 * dt / (repeats * len(ims))}
    if cuda:
        out["peak_mem_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
    else:
        out["peak_mem_mb"] = peak_rss_mb()
        out["rss_growth_mb"] = peak_rss_mb() - rss0
    return out


def _tokens(model: FGAesQModel, side: int) -> int:
    w, h = model.single_size((side, side * 3 // 4))
    return (w // model.patch_size) * (h // model.patch_size)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny", help="'tiny', a CLIPConfig .json (random weights), a CLIP folder/hub id, "
                                                    "or an FGAesQ checkpoint folder")
    ap.add_argument("--tiny-image-size", type=int, default=64)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--n-images", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--source-size", type=int, default=None, help="longer edge of the test images (default: 2x image_size)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--out", default=None, help="markdown file to append the results to")
    args = parse_args(ap, argv)

    model = build(args.model, args.tiny_image_size).to(getattr(torch, args.dtype))
    scorer = FGAesQScorer(model, device=args.device, batch_size=args.batch_size, single="resize")
    official = FGAesQScorer(model, device=args.device, batch_size=args.batch_size, single="official")
    n_params = sum(p.numel() for p in model.parameters())
    side = args.source_size or 2 * model.image_size
    ims = images(args.n_images, side)
    refs = images(args.n_images, side, seed=1)
    dt = model.config.difftoken
    rows = {"single, official tokens": bench(official, "single", ims, refs, args.repeats),
            "single, resize": bench(scorer, "single", ims, refs, args.repeats),
            "difftoken (project)": bench(scorer, "difftoken", ims, refs, args.repeats)}
    dev = torch.cuda.get_device_name(0) if scorer.device.type == "cuda" else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    import transformers

    lines = [
        f"### FGAesQ scorer, {args.model} ({n_params / 1e6:.2f}M params), {args.dtype}, {dev}",
        "",
        f"{datetime.date.today()}, torch {torch.__version__}, transformers {transformers.__version__}; "
        f"{args.n_images} images of {side}x{side * 3 // 4} px, batch {args.batch_size}, {args.repeats} timed passes after a warm-up. "
        f"Official single path: native resolution, {model.config.max_seq_len} tokens; "
        f"resize path: longer edge {model.image_size} px ({_tokens(model, side)} tokens); "
        f"DiffToken: canvas {dt.canvas_side(model.image_size, model.patch_size)} px, p={dt.p}, "
        f"budget {dt.max_tokens(model.image_size, model.patch_size)} tokens, SSIM and tokenization included.",
        "",
        "| path | images/s | ms/image | peak memory (MB) |",
        "|---|---:|---:|---:|",
    ]
    for name, r in rows.items():
        mem = f"{r['peak_mem_mb']:.0f}" + (f" (RSS; +{r['rss_growth_mb']:.0f} during run)" if "rss_growth_mb" in r else " (CUDA allocated)")
        lines.append(f"| {name} | {r['images_per_s']:.1f} | {r['ms_per_image']:.2f} | {mem} |")
    write_report(lines, args.out, append=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
