"""A judge in front of the judgment store: each pair is judged once, ever, and a killed run resumes.

    judge = CachedJudge(VLMJudge(model, processor, model_id=...), JudgmentStore("run/judgments.sqlite"))
    p, p_ab, p_ba = prefer_both_orders(judge, pairs, "overall")     # base.py; both orders are stored

Data-parallel judging wraps the judge, not the store: `CachedJudge(DataParallelJudge(...), store)`
on the main process (parallel.py), so one process writes the store. A judge with
`prefer_chunks(pairs, dimension)` (DataParallelJudge) gets a call's missing pairs at once and yields
(indices, answers) per chunk as its ranks finish them; each is stored as it comes.

`CachedJudge` needs nothing of the judge beyond the `Judge` protocol; a judge that also has
`prompt_hash(dimension)` gets it in the key, and one with a `failures` dict (path -> reason) gets
its unreadable images recorded in the store.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from tqdm.auto import tqdm

from psdistill.core.errors import DataError
from psdistill.core.logs import bar_disable
from psdistill.judge.base import Judge, Pair
from psdistill.judge.store import JudgmentStore


class CachedJudge:
    """Implements `Judge`: answers from the store, computes only missing pairs, a chunk at a time.

    Each chunk is committed as soon as it is judged, so a killed run loses at most the chunks in
    flight. The chunk is `chunk_size` pairs, by default the judge's own `chunk_size` (VLMJudge: the
    pairs it sorts by size at once), else 64; a judge with `prefer_chunks` chunks the call itself.
    Counters over the object's life: `hits` (pairs answered from the store), `computed` (pairs
    judged now), `failed` (pairs with an image that could not be hashed or judged: NaN).
    """

    def __init__(self, judge: Judge, store: JudgmentStore, chunk_size: Optional[int] = None, progress: bool = True):
        self.judge, self.store, self.progress = judge, store, progress
        self.chunk_size = chunk_size or getattr(judge, "chunk_size", 64)
        self.judge_id, self.simulated = judge.judge_id, judge.simulated
        self.hits = self.computed = self.failed = 0
        self._recorded: set[str] = set()  # failure paths already written to the store
        self._bar = None

    def _progress_bar(self, dimension: str, more: int):
        """One bar for all of this judge's calls (each pool round is one call): its total grows by `more`."""
        if self._bar is None:
            self._bar = tqdm(total=0, desc=f"judging {dimension}", unit="pair", disable=bar_disable(self.progress))
        self._bar.set_description(f"judging {dimension}", refresh=False)  # a run judges its dimensions in turn
        self._bar.total += more
        self._bar.refresh()
        return self._bar

    def close(self) -> None:
        """Close the progress bar (the stage is done)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def prompt_hash(self, dimension: str) -> str:
        own = getattr(self.judge, "prompt_hash", None)
        return own(dimension) if own else "-"  # a judge without a prompt (the simulated one)

    def prefer(self, pairs: Sequence[Pair], dimension: str) -> np.ndarray:
        """P(first shown preferred) per pair, in presentation order; NaN for pairs with a failed image."""
        pairs = list(pairs)
        hashes, keys, out = self._lookup(pairs, dimension)
        self.hits += int(np.isfinite(out).sum())
        missing: dict[tuple, list[int]] = {}  # a pair asked twice is judged once
        for n, key in enumerate(keys):
            if key is not None and np.isnan(out[n]):
                missing.setdefault(key, []).append(n)
        self.failed += sum(key is None for key in keys)
        # Pairs that show the same image first, side by side: a judge reusing their shared prompt
        # prefix (VLMJudge) then gets whole groups in each chunk, not one pair of each.
        todo = sorted(missing, key=lambda key: key[0])
        prompt = self.prompt_hash(dimension)
        bar = self._progress_bar(dimension, len(todo))
        asked = [pairs[missing[k][0]] for k in todo]
        chunks = (self.judge.prefer_chunks(asked, dimension) if hasattr(self.judge, "prefer_chunks") and asked
                  else self._chunks(asked, dimension))
        for idx, p in chunks:
            chunk, p = [todo[i] for i in idx], np.asarray(p, dtype=float)
            self._record_failures(hashes)
            ok = np.isfinite(p)
            self.store.put(self.judge_id, prompt, dimension, [k for k, good in zip(chunk, ok) if good], p[ok])
            for k, value in zip(chunk, p):
                out[missing[k]] = value
            self.computed += int(ok.sum())
            self.failed += int(sum(len(missing[k]) for k, good in zip(chunk, ok) if not good))
            bar.update(len(chunk))
        return out

    def _chunks(self, pairs: list[Pair], dimension: str):
        """(indices, answers) per `chunk_size` pairs, judged here in turn."""
        for start in range(0, len(pairs), self.chunk_size):
            yield np.arange(start, min(start + self.chunk_size, len(pairs))), \
                self.judge.prefer(pairs[start:start + self.chunk_size], dimension)

    def lookup(self, pairs: Sequence[Pair], dimension: str) -> np.ndarray:
        """Stored P(first shown preferred) per pair, NaN where not (yet) stored; judges nothing."""
        return self._lookup(list(pairs), dimension)[2]

    def position_bias(self, dimension: str) -> tuple[float, int]:
        """(mean logit shift toward the first-shown image, pairs) over this judge's pairs stored in both orders."""
        return self.store.position_bias(self.judge_id, self.prompt_hash(dimension), dimension)

    def _lookup(self, pairs: list[Pair], dimension: str):
        hashes = {}
        for path, h in self.store.content_hashes(list(dict.fromkeys(r.path for pair in pairs for r in pair))).items():
            hashes[path] = None if isinstance(h, DataError) else h
            if hashes[path] is None and path not in self._recorded:
                self.store.add_failures([(path, None, str(h))])
                self._recorded.add(path)
        keys = [(ha, hb) if ha and hb else None for ha, hb in ((hashes[a.path], hashes[b.path]) for a, b in pairs)]
        known = [k for k in keys if k is not None]
        stored = iter(self.store.get(self.judge_id, self.prompt_hash(dimension), dimension, known))
        return hashes, keys, np.array([next(stored) if k is not None else np.nan for k in keys])

    def _record_failures(self, hashes: dict[str, str | None]):
        new = {p: r for p, r in getattr(self.judge, "failures", {}).items() if p not in self._recorded}
        if new:
            self.store.add_failures([(p, hashes.get(p), r) for p, r in new.items()])
            self._recorded.update(new)

