"""The CLI's console by verbosity, the run's full log file, and the report printed last."""
import contextlib
import importlib.util
import io
import subprocess
from pathlib import Path
import sys

import pytest
import torch

from psdistill.cli import main
from test_pipeline import SMALL


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """stdout of a fresh small run at each verbosity, and its log file."""
    out = {}
    for flag in ("-q", None, "--verbose"):
        run_dir = tmp_path_factory.mktemp("run")
        with contextlib.redirect_stdout(io.StringIO()) as stdout:
            assert main(["run", f"run_dir={run_dir}", *SMALL, *([flag] if flag else [])]) == 0
        out[flag] = stdout.getvalue(), (run_dir / "logs" / "run.log").read_text()
    return out


def _report(stdout):
    return stdout[stdout.index("psdistill run: "):]


def test_the_console_follows_the_verbosity_and_the_report_is_last(runs):
    quiet, default, verbose = (runs[f][0] for f in ("-q", None, "--verbose"))
    assert "[judge] judging against the reference pool" in default and "[judge]" not in quiet
    assert "train_loss" in verbose and "train_loss" not in default  # the Trainer's dict lines
    for stdout in (quiet, default, verbose):
        report = _report(stdout)
        assert report.rstrip().splitlines()[-1].startswith("  report: ")  # nothing printed after the report
        assert "[evaluate]" not in report


def test_the_log_file_holds_everything_at_any_verbosity(runs):
    for flag, (stdout, log) in runs.items():
        assert "INFO psdistill.pipeline: [judge] judging against the reference pool" in log
        assert "DEBUG psdistill.distill.job: step 2: {" in log and "train_loss" in log
        for line in _report(stdout).strip().splitlines():  # the report too, once
            assert log.count(f"psdistill.pipeline: {line}\n") == 1


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="deepspeed not installed")
@pytest.mark.skipif(torch.cuda.is_available(), reason="the warning is for machines without CUDA")
def test_deepspeed_cpu_fallback_warning_is_not_shown():
    probe = "from deepspeed.accelerator import get_accelerator; get_accelerator()"

    def output(code):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        return done.stdout + done.stderr
    assert "Setting accelerator to CPU" in output(probe)  # what deepspeed prints by itself
    assert "Setting accelerator to CPU" not in output("import psdistill.core.logs; " + probe)


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="bitsandbytes not installed")
@pytest.mark.parametrize("offline", ["0", "1"])
def test_bitsandbytes_optional_cpu_kernel_warnings_are_not_shown(offline):
    import os

    def output(code):
        env = {**os.environ, "HF_HUB_OFFLINE": offline}
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
        return done.stdout + done.stderr
    alone = output("import bitsandbytes")
    if "kernels-community" not in alone:
        pytest.skip("bitsandbytes does not warn on this CPU (no AVX512-BF16, or the hub kernel loaded)")
    assert output("import psdistill.core.logs, bitsandbytes").strip() == ""


def test_an_unknown_command_is_one_error_line_with_the_nearest_command(capsys):
    assert main(["evalute"]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.strip().splitlines() == [
        "psdistill: error: unknown command 'evalute'; did you mean 'evaluate'? (psdistill --help lists them)"]
    assert main(["bogus"]) == 2
    assert "did you mean" not in capsys.readouterr().err


def test_version_prints_the_installed_version(capsys):
    import importlib.metadata

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"psdistill {importlib.metadata.version('psdistill')}"


def test_the_run_log_opens_at_the_first_message_and_an_unwritable_one_warns_once(tmp_path, capsys):
    from psdistill.core.logs import get_logger, run_logging

    log = get_logger("test")
    with run_logging(tmp_path / "run"):
        assert not (tmp_path / "run").exists()  # nothing made before the first message
        log.info("first")
        log.debug("second")
    assert (tmp_path / "run/logs/run.log").read_text().splitlines()[-1].endswith("DEBUG psdistill.test: second")
    (tmp_path / "file").write_text("")  # a file where the run directory should be: logs/ cannot be made
    with run_logging(tmp_path / "file"):
        log.info("one")
        log.info("two")
    out = capsys.readouterr()
    assert out.out.splitlines()[-2:] == ["one", "two"]  # the console goes on
    assert out.err.count("cannot write the run log") == 1 and "Traceback" not in out.err


def test_no_progress_bars_are_drawn_into_a_pipe(tmp_path):
    # A run whose output goes to a file or a pipe (a log, CI, nohup): stage lines, not redrawn bars.
    import os

    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}  # as a user's shell has it (-q sets it here)
    done = subprocess.run([sys.executable, "recipes/distill.py", f"run_dir={tmp_path / 'run'}", *SMALL],
                          capture_output=True, text=True, timeout=600, env=env, cwd=Path(__file__).parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
    assert "[distill] distilling the single-pass scorer" in done.stdout
    assert "\r" not in done.stderr + done.stdout and "it/s]" not in done.stderr + done.stdout


def _stderr_on_a_terminal(args, cwd) -> str:
    """What `recipes/distill.py args` writes to stderr when stderr is a terminal (a pseudo-terminal)."""
    import os
    import pty
    import threading

    import fcntl
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 0 columns: tqdm draws nothing
    chunks = []

    def drain():  # a full terminal buffer would block the run
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the run closed its end
                return
            if not data:
                return
            chunks.append(data)
    reader = threading.Thread(target=drain)
    reader.start()
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}
    done = subprocess.run([sys.executable, "recipes/distill.py", *args], stdout=subprocess.DEVNULL, stderr=slave,
                          env=env, cwd=cwd, timeout=600)
    os.close(slave)
    reader.join(timeout=60)
    os.close(master)
    assert done.returncode == 0
    return b"".join(chunks).decode(errors="replace")


def test_quiet_draws_no_progress_bars_on_a_terminal(tmp_path):
    # -q must turn tqdm off before tqdm is imported: it reads TQDM_* once, at import.
    root = Path(__file__).parents[1]
    assert "100%|" in _stderr_on_a_terminal([f"run_dir={tmp_path / 'a'}", *SMALL], root)  # bars by default
    assert "%|" not in _stderr_on_a_terminal(["-q", f"run_dir={tmp_path / 'b'}", *SMALL], root)

