"""Every judgment ever made, in one SQLite file, so no pair is judged twice.

    judgments(judge_id, prompt_hash, dimension, first_hash, second_hash) -> p_first, created
    failures(path, hash) -> reason, created          images that could not be judged
    file_hashes(path, size, mtime_ns) -> hash        so a resumed run does not re-read every file

An image is named by the blake2b hash of its file bytes, so renaming or moving files keeps their
judgments, and an edited file is judged afresh. Both presentation orders are separate rows
(first_hash, second_hash): P(first preferred) as the judge answered for that order.

A run writes its store from one process (the main one under `accelerate launch`, see parallel.py).
WAL journaling lets readers run beside that writer, the busy timeout makes a second writer (another
run on the same file) queue, and the primary key with INSERT OR IGNORE keeps a judgment stored once
whoever writes it first. Each process opens its own `JudgmentStore` (a connection must not cross a fork).
"""
from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from pathlib import Path
from typing import NamedTuple, Optional, Sequence

import numpy as np

from psdistill.core.errors import DataError, PsdistillError
from psdistill.judge.base import position_bias
from psdistill.core.storage import writing

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS judgments (
    judge_id TEXT NOT NULL, prompt_hash TEXT NOT NULL, dimension TEXT NOT NULL,
    first_hash TEXT NOT NULL, second_hash TEXT NOT NULL,
    p_first REAL NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (judge_id, prompt_hash, dimension, first_hash, second_hash)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS failures (
    path TEXT NOT NULL, hash TEXT NOT NULL, reason TEXT NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (path, hash)
);
CREATE TABLE IF NOT EXISTS file_hashes (
    path TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, hash TEXT NOT NULL,
    PRIMARY KEY (path, size, mtime_ns)
);
"""

Key = tuple[str, str]  # (first_hash, second_hash)
_KEYS_PER_QUERY = 400  # 803 parameters: under SQLite's oldest limit (999)


class Failure(NamedTuple):
    path: str
    hash: Optional[str]  # None when the file could not even be read
    reason: str
    created: float


def _file_hash(path: str) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class JudgmentStore:
    """The judgment store at `path` (created if absent). `timeout`: seconds a writer waits for the lock."""

    def __init__(self, path: str | Path, timeout: float = 600.0):
        self.path = Path(path)
        with writing(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(self.path, timeout=timeout)
            self.conn.execute("PRAGMA journal_mode=WAL")
            # In WAL mode NORMAL loses nothing when a process dies, only on power loss: fewer fsyncs.
            self.conn.execute("PRAGMA synchronous=NORMAL")
            version = self.conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise PsdistillError(f"{self.path}: judgment store schema {version}, this psdistill reads {SCHEMA_VERSION}")
            with self.conn:
                self.conn.executescript(_SCHEMA + f"PRAGMA user_version={SCHEMA_VERSION};")
        self._hashes: dict[tuple, str] = {}

    def close(self):
        self.conn.close()

    # ---- images ---------------------------------------------------------------------------

    def content_hash(self, path: str) -> str:
        """blake2b of the file's bytes, cached per (path, size, mtime) in memory and in the store.

        Raises DataError when the file cannot be read.
        """
        out = self.content_hashes([path])[path]
        if isinstance(out, DataError):
            raise out
        return out

    def content_hashes(self, paths: Sequence[str]) -> dict[str, str | DataError]:
        """`content_hash` of each path (a DataError where the file cannot be read); new hashes are
        stored in one transaction (a run's first call hashes every image: not a commit per file)."""
        out, new = {}, []
        for path in paths:
            try:
                st = os.stat(path)
                key = (str(path), st.st_size, st.st_mtime_ns)
                if key not in self._hashes:
                    row = self.conn.execute("SELECT hash FROM file_hashes WHERE path=? AND size=? AND mtime_ns=?",
                                            key).fetchone()
                    if row is None:
                        row = (_file_hash(path),)
                        new.append((*key, row[0]))
                    self._hashes[key] = row[0]
                out[path] = self._hashes[key]
            except OSError as e:
                out[path] = DataError(f"{path}: cannot read file ({e.strerror or e})")
        if new:
            with writing(self.path), self.conn:
                self.conn.executemany("INSERT OR IGNORE INTO file_hashes VALUES (?, ?, ?, ?)", new)
        return out

    def add_failures(self, failures: Sequence[tuple[str, Optional[str], str]]):
        """Record (path, hash or None, reason) for images that could not be judged (latest reason wins)."""
        now = time.time()
        with writing(self.path), self.conn:
            self.conn.executemany("INSERT OR REPLACE INTO failures VALUES (?, ?, ?, ?)",
                                  [(p, h or "", r, now) for p, h, r in failures])

    def failures(self) -> list[Failure]:
        rows = self.conn.execute("SELECT path, hash, reason, created FROM failures ORDER BY path").fetchall()
        return [Failure(p, h or None, r, c) for p, h, r, c in rows]

    def failure_summary(self) -> str:
        """One line per image that could not be judged, or a line saying there were none."""
        failures = self.failures()
        if not failures:
            return "no image failures"
        return f"{len(failures)} image(s) could not be judged:\n" + "\n".join(f"  {f.reason}" for f in failures)

    # ---- judgments ------------------------------------------------------------------------

    def get(self, judge_id: str, prompt_hash: str, dimension: str, keys: Sequence[Key]) -> np.ndarray:
        """Stored P(first preferred) for each (first_hash, second_hash), NaN where not stored.

        A call of many pairs (a fixed pool's 320k) is looked up on the main process while every rank
        waits: it reads the judge's rows in one scan (~1 us a row) where they are fewer than 20 per key
        asked, else a few hundred keys per query (~25 us a key)."""
        where, args = "judge_id=? AND prompt_hash=? AND dimension=?", (judge_id, prompt_hash, dimension)
        stored = self.conn.execute(f"SELECT COUNT(*) FROM judgments WHERE {where}", args).fetchone()[0]
        if stored < 20 * len(keys):
            rows = self.conn.execute(f"SELECT first_hash, second_hash, p_first FROM judgments WHERE {where}", args)
            found = {(a, b): p for a, b, p in rows}
        else:
            found = {}
            for start in range(0, len(keys), _KEYS_PER_QUERY):
                part = list(dict.fromkeys(keys[start:start + _KEYS_PER_QUERY]))
                values = ",".join(["(?, ?)"] * len(part))
                rows = self.conn.execute(f"SELECT first_hash, second_hash, p_first FROM judgments WHERE {where} "
                                         f"AND (first_hash, second_hash) IN (VALUES {values})",
                                         (*args, *(h for key in part for h in key)))
                found.update(((a, b), p) for a, b, p in rows)
        return np.array([found.get(tuple(key), np.nan) for key in keys], dtype=float)

    def put(self, judge_id: str, prompt_hash: str, dimension: str, keys: Sequence[Key], p_first) -> int:
        """Store judgments in one transaction (committed on return); keys already stored are kept as they are.

        Returns how many rows were new.
        """
        now = time.time()
        rows = [(judge_id, prompt_hash, dimension, a, b, float(p), now) for (a, b), p in zip(keys, p_first)]
        # A failed transaction (a full disk) is rolled back whole: stored judgments stay, none is half-written.
        with writing(self.path), self.conn:
            before = self.conn.total_changes
            self.conn.executemany("INSERT OR IGNORE INTO judgments VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            return self.conn.total_changes - before

    def rows(self, judge_id: Optional[str] = None) -> list[tuple]:
        """All judgments (judge_id, prompt_hash, dimension, first_hash, second_hash, p_first, created)."""
        if judge_id is None:
            return self.conn.execute("SELECT * FROM judgments").fetchall()
        return self.conn.execute("SELECT * FROM judgments WHERE judge_id=?", (judge_id,)).fetchall()

    def position_bias(self, judge_id: str, prompt_hash: str, dimension: str) -> tuple[float, int]:
        """(mean logit shift toward the first-shown image, number of pairs) over pairs stored in both orders."""
        rows = self.conn.execute(
            "SELECT a.p_first, b.p_first FROM judgments a JOIN judgments b ON a.judge_id=b.judge_id "
            "AND a.prompt_hash=b.prompt_hash AND a.dimension=b.dimension "
            "AND a.first_hash=b.second_hash AND a.second_hash=b.first_hash "
            "WHERE a.judge_id=? AND a.prompt_hash=? AND a.dimension=? AND a.first_hash < a.second_hash",
            (judge_id, prompt_hash, dimension)).fetchall()
        if not rows:
            return 0.0, 0
        p_ab, p_ba = np.array(rows).T
        return position_bias(p_ab, p_ba), len(rows)
