"""eval/fault_injection.py in small: a few SIGKILLs at random moments, reruns, outputs identical to an
uninterrupted run; two runs at once on one run directory."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "eval"))

import fault_injection  # noqa: E402

pytestmark = pytest.mark.slow


def test_kills_anywhere_leave_the_outputs_of_an_uninterrupted_run(tmp_path, capsys):
    args = ["--kills", "3", "--per-episode", "3", "--seed", "3", "--work", str(tmp_path), "--cases", "kills,concurrent"]
    assert fault_injection.main(args) == 0
    out = capsys.readouterr().out
    kills_row = next(line for line in out.splitlines() if line.startswith("| kills |"))
    assert kills_row.endswith("| 3 |")  # three kills landed, each while the run was alive
    assert "- two runs at once: ok" in out


def test_a_rank_dying_mid_chunk_stops_the_run_and_the_rerun_judges_only_what_is_missing(tmp_path, capsys):
    assert fault_injection.main(["--kills", "0", "--cases", "rank", "--seed", "1", "--work", str(tmp_path)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("- a rank dying mid-chunk"))
    assert line.startswith("- a rank dying mid-chunk (2 processes): ok: rank 1 SIGKILLed")
    # whoever notices first says it: the main process (its connection to rank 1 closed) or the launcher
    assert ("`psdistill: error: judging stopped: rank 1 stopped answering (" in line
            or "`psdistill: error: rank 1 was killed by SIGKILL" in line)
