"""A run killed (SIGKILL) while it sets aside the outputs that its changed config replaces: the rerun
finishes the same moves, so the replaced student, predictions, report and their markers end up together
in one folder, and no marker is left claiming outputs that were moved away."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from psdistill.pipeline import run_pipeline
from tests.test_pipeline import _cfg

ROOT = Path(__file__).resolve().parents[1]
QUIET = dict(log=lambda *a: None)
REPLACED = ["student", "predictions", "report", "stages/distill.json", "stages/score.json", "stages/evaluate.json"]

# The rerun with a changed learning rate, SIGKILLed by itself just before its second move into replaced/.
_KILLED_MID_MOVE = """
import os, pathlib, signal, sys
from psdistill.pipeline import run_pipeline
from tests.test_pipeline import _cfg
real, moves = pathlib.Path.replace, []
def replace(self, target):
    if "/replaced/" in str(target):
        moves.append(target)
        if len(moves) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
    return real(self, target)
pathlib.Path.replace = replace
run_pipeline(_cfg(pathlib.Path(sys.argv[1]), "distill.learning_rate=0.002"), log=lambda *a: None)
"""


def _tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_a_kill_while_setting_outputs_aside_is_finished_by_the_rerun(tmp_path):
    run_pipeline(_cfg(tmp_path), **QUIET)
    run = tmp_path / "run"
    before = {rel: _tree(run / rel) if (run / rel).is_dir() else (run / rel).read_bytes() for rel in REPLACED}
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    killed = subprocess.run([sys.executable, "-c", _KILLED_MID_MOVE, str(tmp_path)], env=env, cwd=ROOT, timeout=300)
    assert killed.returncode == -9
    assert not (run / "student").exists() and (run / "stages/distill.json").exists()  # caught mid-way

    lines = []
    run_pipeline(_cfg(tmp_path, "distill.learning_rate=0.002"), stop_after="fit", log=lines.append)
    assert any(line.startswith("finishing what an interrupted run was setting aside") for line in lines)
    (aside,) = (run / "replaced").iterdir()
    assert {rel: _tree(aside / rel) if (aside / rel).is_dir() else (aside / rel).read_bytes() for rel in REPLACED} \
        == before
    assert not any((run / rel).exists() for rel in REPLACED) and not (run / ".replacing.json").exists()
    assert json.loads((aside / "stages/distill.json").read_text())["stage"] == "distill"
