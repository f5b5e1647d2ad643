"""Judging on every process of an `accelerate launch`: the main process leads, the others serve.

The adaptive reference pool decides each round's pairs from the previous rounds' answers, so it
runs once, on the main process, in front of the one judgment store. Each call it makes (a fixed
pool's pairs, an adaptive round, the references' calibration) is split over the ranks once, by
cost, prefix groups whole (schedule.py), and each rank gets its whole share at once (a scatter).
Every rank then judges its share a chunk at a time (the judge's `chunk_size`) and streams each
chunk's answers back to the main process as soon as it has them; the main process judges its own
share in a thread beside them, and its main thread writes every chunk to the store as it arrives
(`prefer_chunks`, which `CachedJudge` consumes). So no rank waits for another before the end of a
call, the store writes are off the judging's critical path, and a kill loses only the chunks in
flight.

Why one cost-balanced split per call and not ranks pulling chunks from a queue: a pull needs a
round trip to the leader per chunk and hands a rank whichever chunk comes next, which cuts prefix
groups across ranks (each rank would pay the shared prefix again, issue 24: 46% -> 35.5% tokens
saved at 8 processes); the split keeps each group on one rank and, from the judge's own token
counts, balances the ranks to within LPT's 4/3 bound (in practice within a pair or two of even,
eval/results/judge_scaling.md). Answers are the same whatever rank gives them (one pair, one
deterministic forward pass), so the adaptive pool's decisions do not depend on the split.

The ranks talk over a gloo group of their own (`torch.distributed.new_group(backend="gloo")`):
pairs and answers are small Python objects, kept off the GPUs' NCCL group, and gloo lets the main
process receive from every rank at once (one thread per rank; `recv_object_list` needs a source).
Only the main process opens the SQLite store, so multi-node judging never depends on SQLite locking
over a network file system (which SQLite does not support for WAL databases).

Bad cases stop every rank with one line: a rank whose judge or prompt differs from the main
process's (compared at every call, before any pair is judged); a rank that dies or falls silent
(gloo's "connection closed", or no answer for `timeout_s`): the main process raises, the others
stop at their next message, and the store keeps every chunk that arrived, so a rerun judges only
what is missing.

    judge = DataParallelJudge(VLMJudge(...), state)      # on every rank
    if state.is_main_process:
        with judge.leading():
            CachedJudge(judge, store).prefer(pairs, dim)   # any number of calls
    else:
        judge.serve()                                      # returns when the leader is done
    judge.stats                                            # per rank: pairs, busy and waiting seconds (main)
"""
from __future__ import annotations

import queue
import re
import threading
import time
from contextlib import contextmanager
from datetime import timedelta
from typing import Iterator, Optional, Sequence

import numpy as np

from psdistill.core.errors import PsdistillError
from psdistill.judge.base import Judge, Pair
from psdistill.judge.schedule import cap_groups, prefix_costs, prefix_keys, shard

_DONE, _FAILED = "done", "failed"
_RERUN = "the store keeps every finished answer, rerun to judge the rest"


def _cause(error: Exception) -> str:
    """A torch.distributed error's first sentence, without gloo's source location ("[.../pair.cc:553] ")."""
    text = (str(error).splitlines() or [type(error).__name__])[0]
    return re.sub(r"^\[[^\]]*\]\s*", "", text).split(". ")[0][:200]


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
        """This rank's figures; `prefix_tokens_saved`: the judge's own count (VLMJudge), else 0."""
        return {"rank": rank, "pairs": self.pairs, "busy_s": round(self.busy, 6), "waiting_s": round(waiting, 6),
                "pairs_per_s": round(self.pairs / self.busy, 2) if self.busy else 0.0,
                "prefix_tokens_saved": int(getattr(self.judge, "prefix_tokens_saved", 0))}


def run_stats(ranks: list[dict], wall: float) -> dict:
    """The run's judging figures (written as judge_stats.json): utilization = busy / (ranks x wall)."""
    pairs, busy = sum(r["pairs"] for r in ranks), sum(r["busy_s"] for r in ranks)
    return {"ranks": len(ranks), "wall_s": round(wall, 6), "pairs": pairs,  # µs: a simulated judge is that fast
            "pairs_per_s": round(pairs / wall, 2) if wall else 0.0,
            "prefix_tokens_saved": sum(r.get("prefix_tokens_saved", 0) for r in ranks),
            "utilization": round(busy / (len(ranks) * wall), 3) if wall else 0.0, "per_rank": ranks}


def pair_costs(judge, pairs: Sequence[Pair], sizes: Optional[dict] = None) -> np.ndarray:
    """Each pair's cost for the split, in tokens (schedule.prefix_costs): its images' tokens where the
    judge can count them, from its own `image_tokens(path)` or its image processor (Qwen-VL's patch
    arithmetic on the file's size, header only); else 1 per pair."""
    tokens = getattr(judge, "image_tokens", None)
    processor = getattr(getattr(judge, "processor", None), "image_processor", None)
    if tokens is None and hasattr(processor, "get_number_of_image_patches") and not judge.simulated:
        tokens = _processor_tokens(processor, {} if sizes is None else sizes)
    if tokens is None:
        return np.ones(len(pairs))
    first = np.array([tokens(a.path) for a, _ in pairs], dtype=float)
    second = np.array([tokens(b.path) for _, b in pairs], dtype=float)
    return prefix_costs(first, second, prefix_keys([a.path for a, _ in pairs]))


def _processor_tokens(processor, sizes: dict):
    from PIL import Image

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

    return tokens


class DataParallelJudge:
    """Implements `Judge` on the main process by splitting each call over all ranks of `state`.

    `prefer_chunks` yields the answers chunk by chunk as the ranks send them (`CachedJudge` stores
    each as it comes); `prefer` returns them all. After `leading()` (main process) and `serve()`
    (the others) end, `stats` holds every rank's figures (`run_stats`) on the main process. A rank
    silent for `timeout_s` seconds is taken for dead, and a serving rank waits that long for the next
    call (30 min: torch's default for a process group, which the ranks' wait had before).
    """

    def __init__(self, judge: Judge, state, timeout_s: float = 1800.0):
        self.judge, self.state, self.timeout_s = TimedJudge(judge), state, timeout_s
        self.judge_id, self.simulated = judge.judge_id, judge.simulated
        self.chunk_size = getattr(judge, "chunk_size", 64)  # pairs per answer message of each rank
        self.failures: dict[str, str] = {}  # every rank's, taken in by the main thread
        self.computed_per_rank = [0] * state.num_processes
        self.stats: Optional[dict] = None
        self._waiting, self._sizes, self._sent_failures, self._group = 0.0, {}, set(), None
        self._in_call = False  # the ranks are judging a call: a failure then ends the run without a last message

    def identity(self, dimension: str) -> tuple[str, str]:
        """(judge_id, prompt hash): what every rank must share for its answers to mix in one store."""
        own = getattr(self.judge.judge, "prompt_hash", None)
        return self.judge_id, own(dimension) if own else "-"

    def prompt_hash(self, dimension: str) -> str:
        return self.identity(dimension)[1]

    def prefer(self, pairs: Sequence[Pair], dimension: str) -> np.ndarray:
        out = np.full(len(pairs), np.nan)
        for idx, p in self.prefer_chunks(pairs, dimension):
            out[idx] = p
        return out

    def prefer_chunks(self, pairs: Sequence[Pair], dimension: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(indices into `pairs`, P(first preferred)) per chunk, in the order the ranks finish them."""
        pairs, world = list(pairs), self.state.num_processes
        costs = pair_costs(self.judge.judge, pairs, self._sizes)
        shards = shard(costs, cap_groups(costs, prefix_keys([a.path for a, _ in pairs]), world), world)
        identity = self.identity(dimension)
        own = self._scatter([("judge", [pairs[i] for i in s], dimension, identity) for s in shards])
        start, busy, self._in_call = time.perf_counter(), self.judge.busy, True
        answers: queue.Queue = queue.Queue()
        threads = [threading.Thread(target=self._judge_own, args=(own[1], dimension, answers), daemon=True)]
        threads += [threading.Thread(target=self._receive_from, args=(r, answers), daemon=True) for r in range(1, world)]
        for t in threads:
            t.start()
        pending, failure = set(range(world)), None
        while pending and failure is None:
            try:
                kind, rank, payload = answers.get(timeout=self.timeout_s)
            except queue.Empty:
                raise PsdistillError(f"judging stopped: no answer from rank(s) {sorted(pending)} in {self.timeout_s:g} s "
                                     f"(dead or hung); {_RERUN}") from None
            if kind == "end":
                pending.discard(rank)
            elif kind == "chunk":
                yield self._arrived(shards[rank], rank, payload)
            else:  # "raise": the main process's own judge failed, its error as it is; "error": one line
                failure = payload if kind == "raise" else PsdistillError(payload)
        while failure is not None:  # chunks that came before the failure are finished: stored first
            try:
                kind, rank, payload = answers.get_nowait()
            except queue.Empty:
                raise failure from None
            if kind == "chunk":
                yield self._arrived(shards[rank], rank, payload)
        self._waiting += (time.perf_counter() - start) - (self.judge.busy - busy)  # own judge idle in the call
        self._in_call = False

    def _arrived(self, share: np.ndarray, rank: int, payload) -> tuple[np.ndarray, np.ndarray]:
        """A chunk's (indices into the call, P), its failures and counts taken in."""
        local, p, failed = payload
        self.failures.update(failed)
        self.computed_per_rank[rank] += int(np.isfinite(p).sum())
        return share[local], p

    @contextmanager
    def leading(self):
        """On the main process, around its judging; releases the serving ranks however it ends."""
        start = time.perf_counter()
        try:
            yield self
        except BaseException:
            if not self._in_call:  # else the ranks are busy (or one is gone): they stop when this process ends
                try:
                    self._scatter([(_FAILED, None, None, None)] * self.state.num_processes)
                except PsdistillError:  # a rank is gone: the others stop when this process ends
                    pass
            raise
        self._scatter([(_DONE, None, None, None)] * self.state.num_processes)
        self._gather_stats(time.perf_counter() - start)

    def serve(self) -> None:
        """On the other processes: judge this rank's share of every call the leader sends until it is done."""
        while True:
            kind, pairs, dimension, identity = self._scatter(None)
            if kind == _DONE:
                self._gather_stats(0.0)
                return
            if kind == _FAILED:
                raise PsdistillError("judging stopped: the main process failed (its error is printed above)")
            for reply in self._replies(pairs, dimension, identity):
                self._send(reply)

    def _replies(self, pairs: list[Pair], dimension: str, identity: tuple[str, str]):
        """This rank's messages for one call: its chunks, or one error if its judge is not the leader's."""
        if self.identity(dimension) != identity:
            rank, (judge_id, prompt) = self.state.process_index, self.identity(dimension)
            yield ("error", rank, f"rank {rank} judges with {judge_id} (prompt {prompt}), the main process with "
                                  f"{identity[0]} (prompt {identity[1]}): every rank must load the same judge model "
                                  "and prompt set")
            return  # the leader stops the run
        yield from self._chunks(pairs, dimension)

    def _chunks(self, pairs: list[Pair], dimension: str):
        """("chunk", rank, (indices, P, new failures)) per chunk of this rank's share, then ("end", rank, None)."""
        for start in range(0, len(pairs), self.chunk_size):
            p = self.judge.prefer(pairs[start:start + self.chunk_size], dimension)
            failures = getattr(self.judge.judge, "failures", {})
            new = {k: v for k, v in failures.items() if k not in self._sent_failures}
            self._sent_failures.update(new)
            yield "chunk", self.state.process_index, (np.arange(start, start + len(p)), p, new)
        yield "end", self.state.process_index, None

    def _judge_own(self, pairs: list[Pair], dimension: str, answers: queue.Queue) -> None:
        """The main process's own share, in a thread: its main thread meanwhile stores what arrives."""
        try:
            for message in self._chunks(pairs, dimension):
                answers.put(message)
        except BaseException as e:  # re-raised by the main thread
            answers.put(("raise", 0, e))

    def _receive_from(self, rank: int, answers: queue.Queue) -> None:
        """Rank `rank`'s messages of one call, until its "end" (or its error)."""
        while True:
            try:
                message = self._receive(rank)
            except RuntimeError as e:  # gloo: connection closed by a dead peer, or its timeout
                answers.put(("error", rank, f"judging stopped: rank {rank} stopped answering ({_cause(e)}); "
                                            f"{_RERUN}"))
                return
            answers.put(message)
            if message[0] != "chunk":
                return

    def _gather_stats(self, wall: float) -> None:
        """Every rank's figures to the main process; the leader's wall is the run's."""
        ranks = self._gather(self.judge.rank_stats(self.state.process_index, self._waiting))
        self.stats = run_stats(sorted(ranks, key=lambda r: r["rank"]), wall) if self.state.is_main_process else None

    # ---- transport: a gloo group of the judge's own (the tests replace these four) ----------------

    def _side_group(self):
        import torch.distributed as dist

        if self._group is None:  # every rank builds its DataParallelJudge, so every rank gets here in step
            self._group = dist.new_group(backend="gloo", timeout=timedelta(seconds=self.timeout_s))
        return self._group

    def _scatter(self, messages: Optional[list]):
        """Message r of the main process's `messages` on rank r (blocking: the serving ranks' wait for work)."""
        import torch.distributed as dist

        if self.state.num_processes == 1:  # no process group to speak through (a one-process launch)
            return messages[0]
        group, out, start = self._side_group(), [None], time.perf_counter()
        try:
            dist.scatter_object_list(out, messages, src=0, group=group)
        except RuntimeError as e:  # a peer died, or fell silent for timeout_s
            who = "a rank stopped answering" if messages is not None else "no word from the main process"
            raise PsdistillError(f"judging stopped: {who} ({_cause(e)}); {_RERUN}") from None
        finally:
            if messages is None:
                self._waiting += time.perf_counter() - start
        return out[0]

    def _send(self, message) -> None:
        import torch.distributed as dist

        start = time.perf_counter()
        try:
            dist.send_object_list([message], dst=0, group=self._side_group())
        except RuntimeError as e:  # the main process died or fell silent: stop, its error says why
            raise PsdistillError(f"judging stopped: the main process stopped receiving ({_cause(e)})") from None
        finally:
            self._waiting += time.perf_counter() - start

    def _receive(self, rank: int):
        import torch.distributed as dist

        box = [None]
        dist.recv_object_list(box, src=rank, group=self._side_group())
        return box[0]

    def _gather(self, item) -> Optional[list]:
        import torch.distributed as dist

        if self.state.num_processes == 1:
            return [item]
        out = [None] * self.state.num_processes if self.state.is_main_process else None
        dist.gather_object(item, out, dst=0, group=self._side_group())
        return out
