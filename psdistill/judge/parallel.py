"""Judging on every process of an `accelerate launch`: the main process leads, the others serve.

The adaptive reference pool decides each round's pairs from the previous rounds' answers, so it
runs once, on the main process, in front of the one judgment store. Each chunk of pairs it needs
judged is split over the ranks by cost, prefix groups whole (schedule.py): the main process
broadcasts the chunk, every rank judges its share on its own device, and the answers are gathered
back to the main process, which stores them and puts them back in the caller's order.

Only the main process opens the SQLite store. Multi-node judging therefore never depends on SQLite
locking over a network file system (which SQLite does not support for WAL databases): the ranks
exchange pairs and answers through the process group (gloo on CPU, NCCL on GPUs). A kill loses
at most the chunk in flight, as on one process.

    judge = DataParallelJudge(VLMJudge(...), state)      # on every rank
    if state.is_main_process:
        with judge.leading():
            CachedJudge(judge, store).prefer(pairs, dim)   # any number of calls
    else:
        judge.serve()                                      # returns when the leader is done
    judge.stats                                            # per rank: pairs, busy and waiting seconds (main)
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Optional, Sequence

import numpy as np

from psdistill.core.errors import PsdistillError
from psdistill.judge.base import Judge, Pair
from psdistill.judge.schedule import PAIR_OVERHEAD_TOKENS, cap_groups, prefix_keys, shard

_DONE, _FAILED = "done", "failed"


class TimedJudge:
    """Implements `Judge` around another judge, counting its pairs and the seconds spent inside it."""

    def __init__(self, judge: Judge):
        self.judge, self.judge_id, self.simulated = judge, judge.judge_id, judge.simulated
        self.pairs, self.busy = 0, 0.0

    def __getattr__(self, name):  # chunk_size, prompt_hash, failures: the wrapped judge's
        if name == "judge":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.judge, name)

    def prefer(self, pairs: Sequence[Pair], dimension: str) -> np.ndarray:
        start = time.perf_counter()
        try:
            return np.asarray(self.judge.prefer(pairs, dimension), dtype=float)
        finally:
            self.busy += time.perf_counter() - start
            self.pairs += len(pairs)

    def rank_stats(self, rank: int = 0, waiting: float = 0.0) -> dict:
        return {"rank": rank, "pairs": self.pairs, "busy_s": round(self.busy, 6), "waiting_s": round(waiting, 6),
                "pairs_per_s": round(self.pairs / self.busy, 2) if self.busy else 0.0}


def run_stats(ranks: list[dict], wall: float) -> dict:
    """The run's judging figures (written as judge_stats.json): utilization = busy / (ranks x wall)."""
    pairs, busy = sum(r["pairs"] for r in ranks), sum(r["busy_s"] for r in ranks)
    return {"ranks": len(ranks), "wall_s": round(wall, 6), "pairs": pairs,  # µs: a simulated judge is that fast
            "pairs_per_s": round(pairs / wall, 2) if wall else 0.0,
            "utilization": round(busy / (len(ranks) * wall), 3) if wall else 0.0, "per_rank": ranks}


def pair_costs(judge, pairs: Sequence[Pair], sizes: Optional[dict] = None) -> np.ndarray:
    """Each pair's cost for the split: a fixed cost plus both images' tokens, where the judge's image
    processor can count them (Qwen-VL's patch arithmetic on the file's size); else 1 per pair."""
    processor = getattr(getattr(judge, "processor", None), "image_processor", None)
    if getattr(judge, "simulated", False) or not hasattr(processor, "get_number_of_image_patches"):
        return np.ones(len(pairs))
    from PIL import Image

    sizes = {} if sizes is None else sizes
    merge = getattr(processor, "merge_size", 1) ** 2

    def tokens(path: str) -> int:
        if path not in sizes:
            try:
                with Image.open(path) as im:  # reads the header only
                    w, h = im.size
                sizes[path] = processor.get_number_of_image_patches(h, w) // merge
            except (OSError, ValueError):  # the judge records the failure; it costs next to nothing
                sizes[path] = 0
        return sizes[path]

    return np.array([PAIR_OVERHEAD_TOKENS + tokens(a.path) + tokens(b.path) for a, b in pairs], dtype=float)


class DataParallelJudge:
    """Implements `Judge` on the main process by splitting each call over all ranks of `state`.

    `chunk_size` is the wrapped judge's chunk times the number of processes, so that `CachedJudge`
    hands over enough pairs to give every rank a full chunk per round trip. After `leading()` (main
    process) and `serve()` (the others) end, `stats` holds every rank's figures (`run_stats`) on the
    main process.
    """

    def __init__(self, judge: Judge, state):
        self.judge, self.state = TimedJudge(judge), state
        self.judge_id, self.simulated = judge.judge_id, judge.simulated
        self.chunk_size = getattr(judge, "chunk_size", 64) * state.num_processes
        self.failures: dict[str, str] = getattr(judge, "failures", {})
        self.computed_per_rank = [0] * state.num_processes
        self.stats: Optional[dict] = None
        self._waiting, self._sizes = 0.0, {}  # image tokens per path, for the costs

    def prompt_hash(self, dimension: str) -> str:
        return self.judge.prompt_hash(dimension) if hasattr(self.judge.judge, "prompt_hash") else "-"

    def prefer(self, pairs: Sequence[Pair], dimension: str) -> np.ndarray:
        pairs = list(pairs)
        world = self.state.num_processes
        costs = pair_costs(self.judge.judge, pairs, self._sizes)
        shards = shard(costs, cap_groups(costs, prefix_keys([a.path for a, _ in pairs]), world), world)
        per_rank = [[pairs[i] for i in s] for s in shards]
        self._broadcast(("judge", per_rank, dimension))
        shares, counts = self._judge_share(per_rank, dimension)
        out = np.full(len(pairs), np.nan)
        for s, p in zip(shards, shares):
            out[s] = p  # back in the caller's order
        self.computed_per_rank = [a + b for a, b in zip(self.computed_per_rank, counts)]
        return out

    @contextmanager
    def leading(self):
        """On the main process, around its judging; releases the serving ranks however it ends."""
        start = time.perf_counter()
        try:
            yield self
        except BaseException:
            self._broadcast((_FAILED, None, None))
            raise
        self._broadcast((_DONE, None, None))
        self._gather_stats(time.perf_counter() - start)

    def serve(self) -> None:
        """On the other processes: judge the share of every chunk the leader sends until it is done."""
        while True:
            kind, shards, dimension = self._broadcast(None)
            if kind == _DONE:
                self._gather_stats(0.0)
                return
            if kind == _FAILED:
                raise PsdistillError("judging stopped: the main process failed (its error is printed above)")
            self._judge_share(shards, dimension)

    def _judge_share(self, shards: list[list[Pair]], dimension: str):
        rank = self.state.process_index
        mine = self.judge.prefer(shards[rank], dimension) if shards[rank] else np.zeros(0)
        failures = dict(getattr(self.judge.judge, "failures", {}))
        gathered = self._gather([(rank, mine, failures)])  # one entry per rank, on every rank
        shares, counts = [None] * len(shards), [0] * len(shards)
        for r, p, failed in gathered:
            shares[r], counts[r] = p, int(np.isfinite(p).sum())
            self.failures.update(failed)
        return shares, counts

    def _gather_stats(self, wall: float) -> None:
        """Every rank's figures to all ranks (the main process keeps them); the leader's wall is the run's."""
        ranks = self._gather([self.judge.rank_stats(self.state.process_index, self._waiting)])
        self.stats = run_stats(sorted(ranks, key=lambda r: r["rank"]), wall) if self.state.is_main_process else None

    def _broadcast(self, message):
        from accelerate.utils import broadcast_object_list

        start = time.perf_counter()
        try:
            return broadcast_object_list([message], from_process=0)[0]
        finally:
            self._waiting += time.perf_counter() - start

    def _gather(self, items: list):
        from accelerate.utils import gather_object

        start = time.perf_counter()
        try:
            return gather_object(items)
        finally:
            self._waiting += time.perf_counter() - start
