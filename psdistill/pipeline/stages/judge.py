"""The judge stage: every training image judged against an Elo reference pool, per dimension, on every rank."""
from __future__ import annotations

import json
import time
from typing import Callable, Optional

import numpy as np

from psdistill.core.errors import ConfigError
from psdistill.data.run_files import PoolFile, write_comparisons, write_pool
from psdistill.judge.registry import build_judge, judge_identity
from psdistill.pipeline.context import RunContext
from psdistill.pipeline.runner import Stage


def run(run: RunContext) -> dict:
    """Judge the training images against an Elo reference pool (both orders, cached), on every rank."""
    _check_pool_size(run)
    judge = build_judge(run.cfg.judge, run.cfg.model)
    done = judge_on_ranks(judge, run.state, run.path("judgments.sqlite"), lambda cached: _judge_pool(run, cached))
    if done is None:  # a serving rank
        return {}
    summary, stats = done
    run.path("judge_stats.json").write_text(json.dumps(stats, indent=2))
    return {**summary, "judging": {k: stats[k] for k in ("ranks", "utilization", "pairs_per_s", "prefix_tokens_saved")}
            | {"prefix_tokens_saved_per_rank": [r["prefix_tokens_saved"] for r in stats["per_rank"]]}}


def judge_on_ranks(judge, state, store_path, work: Callable) -> Optional[tuple[dict, dict]]:
    """`work(cached_judge)` on the main process, `judge` judging on every rank of `state` (accelerate's
    PartialState; None: this process alone) in front of the store at `store_path`.

    Returns (work's summary, the run's judging figures: `run_stats`) on the main process, None on the
    others. eval/bench_judge_scaling.py runs its cost-model judge through here.
    """
    from psdistill.judge.cached import CachedJudge
    from psdistill.judge.parallel import DataParallelJudge, TimedJudge, run_stats
    from psdistill.judge.store import JudgmentStore

    if state is None:
        timed, start = TimedJudge(judge), time.perf_counter()
        summary = work(CachedJudge(timed, JudgmentStore(store_path)))
        return summary, run_stats([timed.rank_stats()], time.perf_counter() - start)
    parallel = DataParallelJudge(judge, state)
    if not state.is_main_process:
        parallel.serve()
        return None
    with parallel.leading():
        summary = work(CachedJudge(parallel, JudgmentStore(store_path)))
    return {**summary, "computed_per_rank": parallel.computed_per_rank}, parallel.stats


def _check_pool_size(run: RunContext) -> None:
    """Before a judge model is loaded: the pool needs more training images than references."""
    n, k = len(run.train_records), run.cfg.pool.k
    if n <= k:
        fix = f"set pool.k to at most {n - 1} (and at least 3)" if n > 3 else "add training images (at least 4)"
        raise ConfigError(f"pool.k={k}: the pool needs more training images than references, and "
                          f"data.train_categories={list(run.train_categories)} has {n}; {fix}")


def _judge_pool(run: RunContext, judge) -> dict:
    from psdistill.ranking import run_reference_pool

    records = run.train_records
    results = {}
    try:
        for dim in run.cfg.data.dimensions:
            def judge_indices(pairs: np.ndarray, dim=dim) -> np.ndarray:
                # In presentation order: the pool schedules both orders itself and measures the bias.
                return judge.prefer([(records[i], records[j]) for i, j in pairs.tolist()], dim)

            results[dim] = run_reference_pool(len(records), judge_indices, run.cfg.pool)
    finally:
        judge.close()  # the stage's one progress bar
    ids = [r.id for r in records]
    write_comparisons(run.path("comparisons.csv"), ids, {d: r.comparisons for d, r in results.items()})
    write_pool(run.path("pool.json"), {d: PoolFile(
        ids=ids, reference_ids=[ids[i] for i in r.reference_ids], mu=list(map(float, r.mu)),
        var=list(map(float, r.var)), judge_id=judge.judge_id, simulated=judge.simulated) for d, r in results.items()})
    per = {d: {"pair_judgments": len(r.comparisons), "judge_calls": r.n_judge_calls,
               "judgments_per_image": round(len(r.comparisons) / max(len(records), 1), 2),
               "position_bias": round(float(r.position_bias), 3),
               # 3 significant digits: a barely-preferring judge's noise is 1e-4 logit, not 0
               "judge_model": {k: v if isinstance(v, str) else float(f"{v:.3g}") for k, v in r.judge_model.items()}}
           for d, r in results.items()}
    n = sum(p["pair_judgments"] for p in per.values())
    return {"judge": judge.judge_id, "simulated": judge.simulated, "images": len(records),
            "references": len(next(iter(results.values())).reference_ids), "pair_judgments": n,
            "judgments_per_image": round(n / max(len(records), 1), 2),
            # the judge's lean toward the first-shown image, averaged over its dimensions (each: "dimensions")
            "position_bias": round(float(np.mean([r.position_bias for r in results.values()])), 3),
            "computed": judge.computed, "from_store": judge.hits, "dimensions": per}


def _judge_identity(cfg) -> dict:
    """The judge, as its judgments are keyed in the store (the prompt and pool settings are settings);
    a VLM judge by its weights, known without loading them."""
    return {"judge": judge_identity(cfg.judge, cfg.model)}


STAGE = Stage("judge", ("data.dimensions", "model", "judge", "pool"), run, "judging against the reference pool",
              all_ranks=True, identity=_judge_identity)
