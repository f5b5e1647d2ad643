"""The pipeline with the real VLM judge class on a tiny Qwen3-VL loaded from disk: one process, two
processes (every stage on the ranks it should use), and a kill during judging that resumes."""
import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from psdistill.data.run_files import read_pseudo_scores

REPO = Path(__file__).resolve().parents[1]
DEMO = str(REPO / "psdistill" / "pipeline" / "configs" / "demo.yaml")
pytestmark = pytest.mark.slow

# One pair per forward pass, each image encoded with its pair, so a pair's P does not depend on which
# other pairs share its batch (batched, float32 rounding moves P by ~6e-8). Across processes P still
# differs by up to ~3e-8 (CPU kernels), which the pool's fit tolerance and its min-max map onto the
# rating scale amplify to ~1e-4 for a random-weight judge whose P all lie near 0.51; the tests compare
# P at 1e-6 and pseudo-scores at 1e-3 (a wrongly gathered shard moves them by whole points).
SMALL = ["data.demo.series_per_category=3", "data.demo.size=32", "model.max_pixels=1024", "pool.k=5",
         "judge.kind=vlm", "judge.vlm.batch_size=1", "judge.vlm.reuse_vision=false", "distill.max_steps=2", "distill.per_device_train_batch_size=4",
         "distill.tuning=full", "distill.report_to=[]", "validation_images=0", "teacher_pointwise=false"]


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    from psdistill.models.tiny import save_tiny, tiny_qwen3_vl

    return save_tiny(*tiny_qwen3_vl(seed=0, image_size=32), tmp_path_factory.mktemp("model") / "tiny-qwen3-vl")


# Every run in its own process with one thread: the thread count changes float32 reduction order.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _cli(*argv, timeout=300):
    done = subprocess.run([sys.executable, "-m", "psdistill.cli", *argv], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _summary(run_dir, stage):
    return json.loads((run_dir / "stages" / f"{stage}.json").read_text())["summary"]


@pytest.fixture(scope="module")
def one_process(tiny_path, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("one") / "run"
    _cli("fit", *_args(run_dir, tiny_path))
    return run_dir


def _store_rows(run_dir) -> int:
    with sqlite3.connect(run_dir / "judgments.sqlite") as db:
        return db.execute("SELECT COUNT(*) FROM judgments").fetchone()[0]


def _comparisons(run_dir) -> list[tuple[tuple[str, str], float]]:
    with open(run_dir / "comparisons.csv", newline="") as f:
        return [((r["first_id"], r["second_id"]), float(r["p_first_preferred"])) for r in csv.DictReader(f)]


def _distinct_pairs(run_dir) -> int:
    with open(run_dir / "comparisons.csv", newline="") as f:
        return len({(r["first_id"], r["second_id"]) for r in csv.DictReader(f)})


def _args(run_dir, tiny_path, *extra):
    return ["--config", DEMO, f"run_dir={run_dir}", f"model.name_or_path={tiny_path}", *SMALL, *extra]


def test_vlm_judge_runs_the_pipeline_and_stores_each_pair_once(one_process):
    run_dir = one_process
    judge = _summary(run_dir, "judge")
    assert judge["simulated"] is False and judge["judge"].startswith(str(Path(judge["judge"].split("|")[0])))
    assert _store_rows(run_dir) == _distinct_pairs(run_dir) == judge["computed"] > 0
    scores = read_pseudo_scores(run_dir / "pseudo_scores.csv")["overall"]
    assert len(scores) == judge["images"] == 15 and all(np.isfinite(s) and v > 0 for s, v in scores.values())


def test_two_processes_split_judging_and_scoring_and_match_one_process(one_process, tiny_path, tmp_path, free_port):
    run_dir = tmp_path / "run"
    launch = ["-m", "accelerate.commands.launch", "--config_file", str(REPO / "launch" / "cpu_ddp.yaml"),
              "--main_process_port", str(free_port)]
    done = subprocess.run([sys.executable, *launch, str(REPO / "recipes" / "distill.py"), *_args(run_dir, tiny_path)],
                          cwd=REPO, capture_output=True, text=True,
                          timeout=400, env=ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    # Every stage announced once (by the main process), not once per rank.
    for stage in ("data", "judge", "fit", "distill", "score", "evaluate"):
        assert done.stdout.count(f"[{stage}] ") == 1, (stage, done.stdout)
    marker = _summary(run_dir, "judge")
    # Both ranks judged; every pair once, in the main process's store only.
    assert len(marker["computed_per_rank"]) == 2 and min(marker["computed_per_rank"]) > 0
    assert sum(marker["computed_per_rank"]) == marker["computed"] == _store_rows(run_dir) == _distinct_pairs(run_dir)
    assert sorted(p.name for p in run_dir.glob("*.sqlite*"))[0] == "judgments.sqlite"
    # Each rank's figures, gathered by the main process: its pairs, and no more busy seconds than the run took.
    stats = json.loads((run_dir / "judge_stats.json").read_text())
    assert [r["pairs"] for r in stats["per_rank"]] == marker["computed_per_rank"]
    assert all(0 < r["busy_s"] <= stats["wall_s"] and r["waiting_s"] > 0 for r in stats["per_rank"])
    assert 0 < stats["utilization"] <= 1 and "judging: 2 ranks, utilization" in done.stdout
    # The same pairs asked in the same order, with the same answers, as in one process.
    asked = [_comparisons(d) for d in (one_process, run_dir)]
    assert [pair for pair, _ in asked[0]] == [pair for pair, _ in asked[1]]
    assert max(abs(a - b) for (_, a), (_, b) in zip(*asked)) < 1e-6
    one, two = (read_pseudo_scores(d / "pseudo_scores.csv")["overall"] for d in (one_process, run_dir))
    assert one.keys() == two.keys()
    assert max(abs(one[k][0] - two[k][0]) for k in one) < 1e-3
    assert max(abs(one[k][1] - two[k][1]) for k in one) < 1e-3
    # The score stage split the images over the ranks and wrote every one.
    with open(run_dir / "predictions" / "student.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    with open(run_dir / "data" / "manifest.csv", newline="") as f:
        images = [r["id"] for r in csv.DictReader(f)]
    assert [r["id"] for r in rows] == images and all(np.isfinite(float(r["overall"])) for r in rows)


def test_judging_killed_midway_resumes_from_the_store(one_process, tiny_path, tmp_path):
    run_dir = tmp_path / "run"
    # The judge commits every 4 pairs: the kill lands with part of them stored.
    args = _args(run_dir, tiny_path)
    proc = subprocess.Popen([sys.executable, "-m", "psdistill.cli", "judge", *args], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    store, killed_at = run_dir / "judgments.sqlite", 0
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if store.is_file():
            try:
                killed_at = _store_rows(run_dir)
            except sqlite3.OperationalError:  # the table is being created
                killed_at = 0
            if killed_at > 0:
                proc.send_signal(signal.SIGKILL)
                break
        time.sleep(0.02)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and killed_at > 0
    assert not (run_dir / "stages" / "judge.json").exists()
    _cli("fit", *args)
    judge = _summary(run_dir, "judge")
    assert judge["from_store"] >= killed_at and judge["computed"] > 0
    assert _store_rows(run_dir) == _distinct_pairs(run_dir) == judge["from_store"] + judge["computed"]
    # The same judgments as the uninterrupted run, so the same pseudo-scores.
    assert _comparisons(run_dir) == _comparisons(one_process)
    one, resumed = (read_pseudo_scores(d / "pseudo_scores.csv")["overall"] for d in (one_process, run_dir))
    assert one == resumed
