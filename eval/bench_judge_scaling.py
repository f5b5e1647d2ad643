"""Judging at scale: utilization of the data-parallel judge (psdistill/judge/parallel.py) under real
`accelerate launch` gloo ranks, and a discrete-event simulation of the same scheduler at 8-256 ranks.

    python eval/bench_judge_scaling.py --out eval/results/judge_scaling.md            # launches + simulation
    python eval/bench_judge_scaling.py --processes 1,2 --items 300 --no-simulate       # a quick look

The judge is a cost model of Qwen3-VL-8B on one H100/H200: it answers as the simulated judge does
(deterministic per pair, so every split gives the same answers and the pool the same decisions) and
sleeps what the 8B model would take for the pair's tokens, reproducing VLMJudge's prefix reuse
(models/prefix_kv.py: pairs of a call sorted by first image, windows of 4 batches of 8, a group
sharing its first image runs text + first image once, the last prefix memoised across calls):

    seconds per call = FIXED_S x pairs + PER_TOKEN_S x tokens run

- PER_TOKEN_S = 2 x 8.2e9 FLOP (the 8B language model: 2 FLOP per parameter per token) / (989 TFLOP/s
  (H100 and H200 bf16 dense peak) x 0.56) = 29.6 us. 0.56: the share of the attainable matmul rate
  that the judge's prefix path reached on the mid-size model (eval/results/judge_bench.md: 55-57%
  on the 512 px fixed pool, 51% at 768 px; the judge is compute-bound there). At 100% of peak (the
  FLOP limit) a 450-token pair takes 7.5 ms: 134 pairs/s per GPU, the issue's ~130.
- FIXED_S = 1.4 ms per pair: what is not matmul FLOPs, from the tiny model (0.26M parameters, whose
  FLOPs are nothing) that ran 714 pairs/s on the same prefix path (judge_bench.md): Python, the
  processor and kernel dispatch per pair at batch 8.
- Tokens: 20 text tokens before the first image, 5 between, 35 after; each image 200-1200 tokens
  (uniform, seeded per image: Qwen-VL's range from min to max pixels for paintings).

A launch runs the judge stage's own wiring (`psdistill.pipeline.stages.judge.judge_on_ranks`: the
store, CachedJudge, DataParallelJudge) around `run_reference_pool` (fixed or adaptive, k=16) on
ImageRecords of real files (the store hashes them). Sleeps are scaled by --time-scale (1/4 by default,
~6 ms per pair, the issue's 4-8 ms) to keep the launches short; the store, lookups and messages run at full cost, so the
scaled runs overstate their share (a conservative utilization).

The simulation replays the pool's calls (recorded from a run with the instant simulated judge: the
same calls the launches make) through the same split (schedule.py), the same per-rank chunking and
the same cost model, at 8, 64 and 256 ranks and at 2000 items and APDDv2's 10,023 with k=16. What
it adds to the judging: the pool's own computing between calls (measured in the recording run:
every rank waits), the main process's look-up and split per call (measured here per pair), the
scatter of a call (pickling measured here, LATENCY_S per rank) and a chunk's message (pickling
measured here plus LATENCY_S, on the serving rank).
Utilization = busy seconds over ranks x wall; the store writes are off the critical path (a main
thread of their own) and are checked to keep up (writes per second vs chunks per second).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

from _bench_common import command_line, write_report  # noqa: E402

PER_TOKEN_S = 2 * 8.2e9 / (989e12 * 0.56)
FIXED_S = 1.4e-3
TEXT_BEFORE, TEXT_BETWEEN, TEXT_AFTER = 20, 5, 35
BATCH, WINDOW = 8, 32  # VLMJudge's default batch_size and its window (4 batches)
LATENCY_S = 2e-4  # one gloo message between nodes, assumed (TCP on a datacenter network: 0.05-0.2 ms)


class CostModelJudge:
    """A `Judge`: the simulated judge's answers, after sleeping the cost model's time (module docstring)."""

    simulated = True

    def __init__(self, tokens: dict, time_scale: float = 1.0, seed: int = 0):
        from psdistill.judge.simulated import SimulatedJudge, SimulatedJudgeConfig

        self.tokens, self.time_scale = tokens, time_scale
        self.answers = SimulatedJudge(SimulatedJudgeConfig(seed=seed))
        self.judge_id = f"cost-model(8B,seed={seed})"
        self.chunk_size = 64
        self.prefix_tokens_saved = self.tokens_run = 0
        self._memo = None  # (shares_first, first path): VLMJudge's last prefix

    def image_tokens(self, path: str) -> int:
        return self.tokens[path]

    def cost(self, firsts: list[str], seconds: list[str]) -> float:
        """Seconds this call takes (unscaled), counting tokens run and saved as VLMJudge's prefix path does."""
        from psdistill.models.prefix_kv import prefix_groups

        order = sorted(range(len(firsts)), key=firsts.__getitem__)
        run = 0
        for start in range(0, len(order), WINDOW):
            for shares_first, group in prefix_groups(order[start:start + WINDOW], firsts):
                for b in range(0, len(group), BATCH):
                    rows = group[b:b + BATCH]
                    key = (shares_first, firsts[rows[0]] if shares_first else None)
                    prefix = TEXT_BEFORE + (self.tokens[firsts[rows[0]]] + TEXT_BETWEEN if shares_first else 0)
                    ran = key != self._memo
                    self._memo = key
                    full = sum(TEXT_BEFORE + TEXT_BETWEEN + TEXT_AFTER + self.tokens[firsts[i]] + self.tokens[seconds[i]]
                               for i in rows)
                    saved = prefix * (len(rows) - ran)
                    run += full - saved
                    self.prefix_tokens_saved += saved
        self.tokens_run += run
        return FIXED_S * len(firsts) + PER_TOKEN_S * run

    def prefer(self, pairs, dimension: str) -> np.ndarray:
        pairs = list(pairs)
        time.sleep(self.time_scale * self.cost([a.path for a, _ in pairs], [b.path for _, b in pairs]))
        return self.answers.prefer(pairs, dimension)


def image_tokens(paths: list[str], seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return dict(zip(paths, rng.integers(200, 1201, len(paths)).tolist()))


def make_records(folder: Path, n: int, seed: int = 0):
    """`n` ImageRecords of small distinct files in `folder` (written once), ground truth seeded."""
    from psdistill.data.records import ImageRecord

    folder.mkdir(parents=True, exist_ok=True)
    quality = np.random.default_rng(seed + 1).normal(5, 1.5, n)
    records = []
    for i in range(n):
        path = folder / f"{i:05d}.img"
        if not path.exists():
            path.write_bytes(f"image {i}".encode())
        records.append(ImageRecord(id=f"{i:05d}", path=str(path), scores={"overall": float(quality[i])}))
    return records


# ---- one launch: every rank runs this ---------------------------------------------------------------

def rank_run(args) -> None:
    from psdistill.models.device import process_state
    from psdistill.pipeline.stages.judge import judge_on_ranks
    from psdistill.ranking import ReferencePoolConfig, run_reference_pool

    state = process_state() if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None
    work = Path(args.work)
    records = make_records(work / "images", args.items)
    judge = CostModelJudge(image_tokens([r.path for r in records]), args.time_scale)
    cfg = ReferencePoolConfig(k=args.k, strategy=args.pool)

    def judge_pool(cached) -> dict:
        result = run_reference_pool(len(records), lambda pairs: cached.prefer(
            [(records[i], records[j]) for i, j in pairs.tolist()], "overall"), cfg)
        pairs = result.comparisons[:, :2].astype(int).tolist()
        full = sum(TEXT_BEFORE + TEXT_BETWEEN + TEXT_AFTER + judge.tokens[records[i].path] + judge.tokens[records[j].path]
                   for i, j in pairs)
        return {"mu": result.mu.tolist(), "calls": result.n_judge_calls, "tokens_full": int(full)}

    done = judge_on_ranks(judge, state, work / f"{args.tag}.sqlite", judge_pool)
    if done is not None:
        summary, stats = done
        (work / f"{args.tag}.json").write_text(json.dumps({"summary": summary, "stats": stats}))
    if state is not None:
        state.wait_for_everyone()
        state.destroy_process_group()  # as run_pipeline does: a rank left with live gloo groups may abort on exit


def launch(args, n: int, pool: str, port: int) -> dict:
    tag = f"{pool}-{n}"
    work = Path(args.work)
    if args.resume and (work / f"{tag}.json").is_file():  # an earlier invocation's launch, kept
        return json.loads((work / f"{tag}.json").read_text())
    for old in work.glob(f"{tag}.*"):
        old.unlink()
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", TQDM_DISABLE="1", HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *(["--multi_gpu"] if n > 1 else []),
           "--num_processes", str(n), "--main_process_port", str(port), __file__, "--rank-run", "--pool", pool,
           "--items", str(args.items), "--k", str(args.k), "--time-scale", str(args.time_scale),
           "--work", str(work), "--tag", tag]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        (work / f"{tag}.stderr").write_text(done.stderr)
        raise SystemExit(f"{tag}: exit {done.returncode} (its stderr: {work / tag}.stderr)\n{done.stderr[-3000:]}")
    return json.loads((work / f"{tag}.json").read_text())


# ---- the simulation ---------------------------------------------------------------------------------

def record_calls(n: int, k: int, pool: str, tokens_seed: int = 0):
    """(calls: [(firsts, seconds)] in CachedJudge's order, gaps: the pool's own seconds before each call,
    tokens) of `run_reference_pool` with the instant simulated judge."""
    from psdistill.data.records import ImageRecord
    from psdistill.judge.simulated import SimulatedJudge, SimulatedJudgeConfig
    from psdistill.ranking import ReferencePoolConfig, run_reference_pool

    quality = np.random.default_rng(tokens_seed + 1).normal(5, 1.5, n)
    records = [ImageRecord(id=f"{i:05d}", path=f"{i:05d}", scores={"overall": float(quality[i])}) for i in range(n)]
    sim = SimulatedJudge(SimulatedJudgeConfig())
    calls, gaps, last = [], [], [time.perf_counter()]

    def judge(pairs):
        gaps.append(time.perf_counter() - last[0])
        asked = sorted({(int(i), int(j)) for i, j in pairs}, key=lambda p: records[p[0]].path)  # CachedJudge's order
        calls.append(([records[i].path for i, _ in asked], [records[j].path for _, j in asked]))
        p = sim.prefer([(records[i], records[j]) for i, j in pairs], "overall")
        last[0] = time.perf_counter()
        return p

    run_reference_pool(n, judge, ReferencePoolConfig(k=k, strategy=pool))
    return calls, gaps, image_tokens([r.path for r in records], tokens_seed)


def message_costs(n: int = 20000) -> tuple[float, float]:
    """(the main process's seconds per pair of a call before the ranks start: CachedJudge's look-up in a
    store holding half the pairs, the split and pickling the shares; a serving rank's seconds to pickle
    one chunk's answers), measured here on pairs in groups of 16 sharing their first image."""
    import pickle
    import tempfile

    from psdistill.judge.cached import CachedJudge
    from psdistill.judge.parallel import pair_costs
    from psdistill.judge.schedule import cap_groups, prefix_keys, shard
    from psdistill.judge.store import JudgmentStore

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as d:
        records = make_records(Path(d) / "images", n // 16)
        pairs = [(records[i // 16], records[j]) for i, j in enumerate(rng.integers(0, len(records), n))]
        judge = CostModelJudge(image_tokens([r.path for r in records]), time_scale=0.0)
        cached = CachedJudge(judge, JudgmentStore(Path(d) / "s.sqlite"), progress=False)
        cached.prefer(pairs[::2], "overall")
        start = time.perf_counter()
        cached.lookup(pairs, "overall")
        costs = pair_costs(judge, pairs)
        for s in shard(costs, cap_groups(costs, prefix_keys([a.path for a, _ in pairs]), 8), 8):
            pickle.dumps(("judge", [pairs[i] for i in s], "overall", ("judge id", "prompt hash")))
        lead = (time.perf_counter() - start) / n
    start = time.perf_counter()
    for _ in range(100):
        pickle.dumps(("chunk", 1, (np.arange(64), rng.random(64), {})))
    return lead, (time.perf_counter() - start) / 100


def simulate(calls, gaps, tokens, ranks: int, lead_per_pair: float, send_s: float) -> dict:
    """The scheduler's wall time and utilization at `ranks` (see the module docstring)."""
    from psdistill.judge.schedule import cap_groups, prefix_costs, prefix_keys, shard

    judges = [CostModelJudge(tokens) for _ in range(ranks)]
    wall, busy, chunk = 0.0, np.zeros(ranks), judges[0].chunk_size
    for (firsts, seconds), gap in zip(calls, gaps):
        groups = prefix_keys(firsts)
        costs = prefix_costs([tokens[f] for f in firsts], [tokens[s] for s in seconds], groups)
        shards = shard(costs, cap_groups(costs, groups, ranks), ranks)
        ends = np.zeros(ranks)
        for r, share in enumerate(shards):
            for start in range(0, len(share), chunk):
                part = share[start:start + chunk]
                d = judges[r].cost([firsts[i] for i in part], [seconds[i] for i in part])
                busy[r] += d
                ends[r] += d + (send_s if r else 0.0)
        wall += gap + lead_per_pair * len(firsts) + LATENCY_S * ranks + ends.max()  # the scatter: one message a rank
    saved = sum(j.prefix_tokens_saved for j in judges)
    return {"wall_s": wall, "utilization": busy.sum() / (ranks * wall), "busy_s": busy.sum(),
            "saved_share": saved / (saved + sum(j.tokens_run for j in judges)),
            "pairs": sum(len(f) for f, _ in calls), "calls": len(calls), "pool_s": sum(gaps)}


# ---- the report -------------------------------------------------------------------------------------

def launches(args) -> tuple[list[str], dict]:
    rows, util, port = [], {}, 29700 + os.getpid() % 200
    for pool in args.pools.split(","):
        base = ref_mu = None
        for n in map(int, args.processes.split(",")):
            out = launch(args, n, pool, port + n)
            stats, summary = out["stats"], out["summary"]
            base = base or stats["wall_s"]
            saved = stats["prefix_tokens_saved"] / summary["tokens_full"]
            per_rank = stats["per_rank"]
            same = "-" if ref_mu is None else ("yes" if summary["mu"] == ref_mu else "NO")
            ref_mu = ref_mu or summary["mu"]
            util[(pool, n)] = stats["utilization"]
            rows.append(f"| {pool} | {n} | {stats['pairs']} | {summary['calls']} | {stats['wall_s']:.1f} | "
                        f"{base / stats['wall_s']:.2f}x | **{stats['utilization']:.3f}** | {saved:.1%} | "
                        f"{min(r['busy_s'] for r in per_rank):.1f}-{max(r['busy_s'] for r in per_rank):.1f} | "
                        f"{min(r['waiting_s'] for r in per_rank):.1f}-{max(r['waiting_s'] for r in per_rank):.1f} | "
                        f"{same} |")
            print(rows[-1], flush=True)
    head = [f"## Real launches: `accelerate launch --multi_gpu --num_processes N` (gloo), {args.items} items, "
            f"k={args.k}, time scale {args.time_scale:g}", "",
            "| pool | processes | pairs | calls | judging wall (s) | speed-up | utilization | prefix tokens saved | "
            "busy s per rank (min-max) | waiting s per rank (min-max) | pseudo-scores equal to 1 process |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|"]
    return head + rows + [""], util


def simulations(args) -> list[str]:
    lead, pickle_s = message_costs()
    send = pickle_s + LATENCY_S
    lines = ["## Simulation of the same scheduler (time scale 1: an 8B judge on H100/H200-class GPUs)", "",
             f"Main process per call: {lead * 1e6:.1f} us per pair (store look-up, split and pickling the shares, "
             f"measured here) and {LATENCY_S * 1e3:.1f} ms per rank for the scatter (assumed latency); a serving rank "
             f"{send * 1e3:.2f} ms per chunk message (pickling measured here + the latency).", "",
             "| items | pool | ranks | pairs | calls | pool's own s | wall | utilization | prefix tokens saved |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    projection, largest = {}, max(map(int, args.sim_items.split(",")))
    for items in map(int, args.sim_items.split(",")):
        for pool in args.pools.split(","):
            calls, gaps, tokens = record_calls(items, args.k, pool)
            for ranks in map(int, args.sim_ranks.split(",")):
                s = simulate(calls, gaps, tokens, ranks, lead, send)
                if items == largest and ranks == 8:
                    # and with smaller images: ~256 tokens each (max_pixels = 256 x 32 x 32), ~450 a pair after reuse
                    small = {path: round(t * 256 / np.mean(list(tokens.values()))) for path, t in tokens.items()}
                    projection[pool] = (s, simulate(calls, gaps, small, ranks, lead, send))
                lines.append(f"| {items} | {pool} | {ranks} | {s['pairs']} | {s['calls']} | {s['pool_s']:.1f} | "
                             f"{s['wall_s'] / 60:.1f} min | **{s['utilization']:.3f}** | {s['saved_share']:.1%} |")
                print(lines[-1], flush=True)
    lines.append("")
    for pool, (s, small) in projection.items():
        lines.append(f"- projected APDDv2 ({largest} images, k={args.k}), {pool} pool, {s['pairs']} pairs on 8 H100/H200: "
                     f"**{s['wall_s'] / 60:.1f} min** of judging ({s['pairs'] / s['wall_s']:.0f} pairs/s, "
                     f"{s['pairs'] / s['wall_s'] / 8:.0f} per GPU) with images of 200-1200 tokens; "
                     f"**{small['wall_s'] / 60:.1f} min** ({small['pairs'] / small['wall_s'] / 8:.0f} pairs/s per GPU) "
                     "with ~256 tokens per image")
    return lines + [""]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--processes", default="1,2,4,8", help="launches: processes per launch")
    ap.add_argument("--pools", default="fixed,adaptive")
    ap.add_argument("--items", type=int, default=2000, help="items in the launches")
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--time-scale", type=float, default=0.25, help="the cost model's sleeps times this")
    ap.add_argument("--sim-items", default="2000,10023", help="simulated item counts (the last: the projection)")
    ap.add_argument("--sim-ranks", default="8,64,256")
    ap.add_argument("--no-launch", action="store_true")
    ap.add_argument("--no-simulate", action="store_true")
    ap.add_argument("--work", default="/tmp/psdistill_judge_scaling")
    ap.add_argument("--resume", action="store_true", help="reuse the launches whose results --work already holds")
    ap.add_argument("--out", default=None)
    ap.add_argument("--rank-run", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--pool", default="fixed", help=argparse.SUPPRESS)
    ap.add_argument("--tag", default="run", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.rank_run:
        rank_run(args)
        return 0
    lines = ["# Judging at scale: utilization of the data-parallel judge (eval/bench_judge_scaling.py)", "",
             command_line("eval/bench_judge_scaling.py", argv),
             f"- load: `{' '.join(f'{x:.2f}' for x in os.getloadavg())}` on {os.cpu_count()} CPUs; "
             f"cost model: {FIXED_S * 1e3:.1f} ms + {PER_TOKEN_S * 1e6:.1f} us per token run (module docstring)", ""]
    util = {}
    if not args.no_launch:
        rows, util = launches(args)
        lines += rows
    if not args.no_simulate:
        lines += simulations(args)
    if util:
        top = max(n for _, n in util)
        lines.append(f"utilization at {top} processes: " + " ".join(
            f"{pool}={util[(pool, top)]:.3f}" for pool in args.pools.split(",")))
    write_report(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
