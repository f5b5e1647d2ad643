import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from psdistill.data.records import ImageRecord
from psdistill.core.errors import DataError
from psdistill.judge.base import position_bias, prefer_both_orders
from psdistill.judge.cached import CachedJudge
from psdistill.judge.simulated import SimulatedJudge, SimulatedJudgeConfig
from psdistill.judge.store import JudgmentStore


def _images(folder: Path, n: int, size: int = 32) -> list[ImageRecord]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    records = []
    for k in range(n):
        path = folder / f"img{k:02d}.png"
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
        records.append(ImageRecord(id=path.stem, path=str(path), scores={"overall": float(k)}))
    return records


def test_put_get_ignores_duplicates_and_keeps_the_first_value(tmp_path):
    store = JudgmentStore(tmp_path / "j.sqlite")
    keys = [("h1", "h2"), ("h2", "h1")]
    assert store.put("judge", "prompt", "overall", keys, [0.7, 0.4]) == 2
    assert store.put("judge", "prompt", "overall", keys + [("h1", "h3")], [0.1, 0.1, 0.2]) == 1
    np.testing.assert_array_equal(store.get("judge", "prompt", "overall", keys + [("h1", "h3")]), [0.7, 0.4, 0.2])
    # Every part of the key separates judgments.
    assert np.isnan(store.get("judge", "prompt", "color", keys)).all()
    assert np.isnan(store.get("judge", "other prompt", "overall", keys)).all()
    assert np.isnan(store.get("other judge", "prompt", "overall", keys)).all()
    assert len(store.rows()) == 3
    store.close()
    assert len(JudgmentStore(tmp_path / "j.sqlite").rows("judge")) == 3  # persisted


def test_content_hash_follows_bytes_not_names(tmp_path):
    store = JudgmentStore(tmp_path / "j.sqlite")
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"same bytes")
    b.write_bytes(b"same bytes")
    assert store.content_hash(str(a)) == store.content_hash(str(b))
    before = store.content_hash(str(a))
    a.write_bytes(b"other bytes!")
    os.utime(a, ns=(1, 1))  # a new (size, mtime) key, even on filesystems with coarse mtimes
    assert store.content_hash(str(a)) != before
    # The hash of an unchanged file comes from the store in a new process (no re-read).
    assert JudgmentStore(tmp_path / "j.sqlite").conn.execute("SELECT count(*) FROM file_hashes").fetchone()[0] == 3
    with pytest.raises(DataError, match="missing.jpg: cannot read file"):
        store.content_hash(str(tmp_path / "missing.jpg"))


def test_failures_table_and_summary(tmp_path):
    store = JudgmentStore(tmp_path / "j.sqlite")
    assert store.failure_summary() == "no image failures"
    store.add_failures([("/x/missing.jpg", None, "/x/missing.jpg: not found"), ("/x/bad.jpg", "abc", "/x/bad.jpg: truncated")])
    store.add_failures([("/x/bad.jpg", "abc", "/x/bad.jpg: truncated again")])  # latest reason wins, no duplicate
    failures = store.failures()
    assert [(f.path, f.hash) for f in failures] == [("/x/bad.jpg", "abc"), ("/x/missing.jpg", None)]
    assert failures[0].reason.endswith("truncated again")
    summary = store.failure_summary()
    assert summary.startswith("2 image(s)") and "missing.jpg" in summary and "bad.jpg" in summary


def test_cached_judge_stores_both_orders_and_reports_position_bias(tmp_path):
    records = _images(tmp_path / "img", 6)
    pairs = [(records[i], records[j]) for i in range(6) for j in range(i + 1, 6)]
    store = JudgmentStore(tmp_path / "j.sqlite")
    sim = SimulatedJudge(SimulatedJudgeConfig(position_bias=0.4))
    judge = CachedJudge(sim, store, chunk_size=4, progress=False)
    p, p_ab, p_ba = prefer_both_orders(judge, pairs, "overall")
    assert (judge.hits, judge.computed, judge.failed) == (0, 30, 0)
    np.testing.assert_array_equal(np.concatenate([p_ab, p_ba]),
                                  sim.prefer(pairs + [(b, a) for a, b in pairs], "overall"))
    rows = {(r[3], r[4]): r[5] for r in store.rows(sim.judge_id)}
    assert len(rows) == 30
    for (a, b), x, y in zip(pairs, p_ab, p_ba):
        ha, hb = store.content_hash(a.path), store.content_hash(b.path)
        assert rows[(ha, hb)] == x and rows[(hb, ha)] == y  # two rows, order swapped
    bias, n = judge.position_bias("overall")
    assert n == 15 and bias == pytest.approx(position_bias(p_ab, p_ba)) and bias == pytest.approx(0.4)
    # Asked again, in another order and with repeats: everything from the store.
    again = CachedJudge(sim, store, chunk_size=4, progress=False).prefer(pairs[::-1] + pairs[:2], "overall")
    np.testing.assert_array_equal(again, np.concatenate([p_ab[::-1], p_ab[:2]]))


def test_get_answers_alike_by_scan_and_by_key_queries(tmp_path):
    store = JudgmentStore(tmp_path / "j.sqlite")
    keys = [(f"a{i}", f"b{i}") for i in range(1000)]
    store.put("j", "p", "overall", keys[::2], np.arange(500) / 500)
    store.put("j", "p", "other", keys[1::2], np.full(500, 0.5))  # another dimension: not an answer
    expected = np.full(1000, np.nan)
    expected[::2] = np.arange(500) / 500
    many = store.get("j", "p", "overall", keys)  # 500 rows < 20 x 1000 keys: one scan
    few = np.array([store.get("j", "p", "overall", [k])[0] for k in keys[:30]])  # by key queries
    np.testing.assert_array_equal(many, expected)
    np.testing.assert_array_equal(few, expected[:30])
    assert store.get("j", "p", "overall", []).shape == (0,)
