"""Judging on every process of an `accelerate launch`: the main process leads, the others serve.

The adaptive reference pool decides each round's pairs from the previous rounds' answers, so it
runs once, on the main process, in front of the one judgment store. Each chunk of pairs it needs
judged is split over the ranks: the main process broadcasts the chunk, every rank judges its share
on its own device, and the answers are gathered back to the main process, which stores them.

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
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Sequence

import numpy as np

from psdistill.core.errors import PsdistillError
from psdistill.judge.base import Judge, Pair

_DONE, _FAILED = "done", "failed"


class DataParallelJudge:
    """Implements `Judge` on the main process by splitting each call over all ranks of `state`.

    `chunk_size` is the wrapped judge's chunk times the number of processes, so that `CachedJudge`
    hands over enough pairs to give every rank a full chunk per round trip.
    """

    def __init__(self, judge: Judge, state):
        self.judge, self.state = judge, state
        self.judge_id, self.simulated = judge.judge_id, judge.simulated
        self.chunk_size = getattr(judge, "chunk_size", 64) * state.num_processes
        self.failures: dict[str, str] = getattr(judge, "failures", {})
        self.computed_per_rank = [0] * state.num_processes

    def prompt_hash(self, dimension: str) -> str:
        return self.judge.prompt_hash(dimension) if hasattr(self.judge, "prompt_hash") else "-"

    def prefer(self, pairs: Sequence[Pair], dimension: str) -> np.ndarray:
        pairs = list(pairs)
        self._broadcast(("judge", pairs, dimension))
        p, counts = self._judge_share(pairs, dimension)
        self.computed_per_rank = [a + b for a, b in zip(self.computed_per_rank, counts)]
        return p

    @contextmanager
    def leading(self):
        """On the main process, around its judging; releases the serving ranks however it ends."""
        try:
            yield self
        except BaseException:
            self._broadcast((_FAILED, None, None))
            raise
        self._broadcast((_DONE, None, None))

    def serve(self) -> None:
        """On the other processes: judge the share of every chunk the leader sends until it is done."""
        while True:
            kind, pairs, dimension = self._broadcast(None)
            if kind == _DONE:
                return
            if kind == _FAILED:
                raise PsdistillError("judging stopped: the main process failed (its error is printed above)")
            self._judge_share(pairs, dimension)

    def _judge_share(self, pairs: list[Pair], dimension: str):
        from accelerate.utils import gather_object

        rank, world = self.state.process_index, self.state.num_processes
        mine = np.asarray(self.judge.prefer(pairs[rank::world], dimension), dtype=float) if pairs[rank::world] \
            else np.zeros(0)
        failures = dict(getattr(self.judge, "failures", {}))
        shares = gather_object([(rank, mine, failures)])  # one entry per rank, on every rank
        out = np.full(len(pairs), np.nan)
        counts = [0] * world
        for r, p, failed in shares:
            out[r::world] = p
            counts[r] = int(np.isfinite(p).sum())
            self.failures.update(failed)
        return out, counts

    def _broadcast(self, message):
        from accelerate.utils import broadcast_object_list

        return broadcast_object_list([message], from_process=0)[0]
