"""The README's main command, end to end, as a user runs it (slow: a few minutes on 2 cores)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _launch(run_dir, *overrides):
    accelerate = Path(sys.executable).with_name("accelerate")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([str(accelerate), "launch", "--num_processes", "1", str(ROOT / "recipes/distill.py"),
                           f"run_dir={run_dir}", *overrides], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=1200)


@pytest.mark.slow
def test_accelerate_launch_recipe_runs_every_stage_then_reuses_them(tmp_path):
    # The demo config with a shorter training, so the test checks the wiring, not the figures.
    short = ["distill.max_steps=30", "distill.eval_steps=30", "distill.save_steps=30"]
    first = _launch(tmp_path / "run", *short)
    assert first.returncode == 0, first.stderr[-3000:]
    report = (tmp_path / "run/report/report.md").read_text()
    assert "student" in report and "pseudo-scores" in report and "teacher-pointwise" in report
    assert "SIMULATED judge" in first.stdout
    second = _launch(tmp_path / "run", *short)
    assert second.returncode == 0, second.stderr[-3000:]
    for stage in ("data", "judge", "fit", "distill", "score", "evaluate"):
        assert f"[{stage}] finished earlier with the same config: reused" in second.stdout
