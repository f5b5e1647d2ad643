"""A full disk, a read-only run directory, a file system without locks: one line naming the path, nothing
finished lost, a finished run still readable. The disks are real where this machine lets the test mount
them (a size-limited tmpfs, a read-only bind mount: root with mount rights); elsewhere those tests skip,
and a read-only directory is made with chmod (which binds only non-root users)."""
import errno
import fcntl
import os
import stat
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from psdistill.cli import DEMO_CONFIG, main
from psdistill.data.run_files import write_csv
from psdistill.core.errors import StorageError
from psdistill.judge.store import JudgmentStore
from psdistill.pipeline import run_pipeline
from tests.test_pipeline import SMALL, _cfg

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def _mounted(path: Path, *options: str):
    """`mount -t tmpfs -o OPTIONS` (a size-limited disk) on `path`, or skip where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


@contextmanager
def _read_only(path: Path):
    """`path` read-only: a read-only bind mount as root (chmod does not bind root), else chmod a-w."""
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [path, *path.rglob("*")] if not p.is_symlink()}
        for p, mode in modes.items():
            p.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        try:
            yield path
        finally:
            for p, mode in modes.items():
                p.chmod(mode)
        return
    for cmd in (["mount", "--bind", str(path), str(path)], ["mount", "-o", "remount,ro,bind", str(path)]):
        if subprocess.run(cmd, capture_output=True).returncode != 0:
            subprocess.run(["umount", str(path)], capture_output=True)
            pytest.skip("cannot bind-mount read-only here")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_a_full_disk_under_the_judgment_store_names_it_and_keeps_what_was_stored(tmp_path):
    with _mounted(tmp_path / "disk", "size=256k") as disk:
        store = JudgmentStore(disk / "judgments.sqlite")
        keys = [(f"{i:032x}", f"{i + 1:032x}") for i in range(20000)]
        assert store.put("j", "p", "overall", keys[:10], [0.5] * 10) == 10
        with pytest.raises(StorageError) as e:
            for start in range(10, len(keys), 2000):  # until the disk is full
                store.put("j", "p", "overall", keys[start:start + 2000], [0.5] * 2000)
        assert f"{disk / 'judgments.sqlite'}: no space left on the device" in str(e.value)
        assert "\n" not in str(e.value)
        stored = len(store.rows())
        assert stored >= 10 and stored % 2000 == 10  # the failed transaction is rolled back whole
        store.close()


def test_a_full_disk_under_a_csv_write_leaves_no_half_file(tmp_path):
    with _mounted(tmp_path / "disk", "size=64k") as disk:
        with pytest.raises(StorageError) as e:
            write_csv(disk / "pseudo_scores.csv", ["id", "score"], ([f"image-{i}", i] for i in range(100000)))
        assert str(e.value).startswith(f"{disk / 'pseudo_scores.csv'}: no space left on the device (0.1 MB free)")
        assert list(disk.iterdir()) == []  # the temporary file is gone, and the space it took is free again


@pytest.mark.slow
def test_a_full_disk_at_a_checkpoint_is_one_line_and_the_rerun_finishes(tmp_path, capsys):
    # 5 MB: the demo and the first 3.3 MB checkpoint fit, the second checkpoint does not.
    with _mounted(tmp_path / "disk", "size=5m") as disk:
        args = ["run", "--config", DEMO_CONFIG, f"run_dir={disk / 'run'}", *SMALL, "distill.max_steps=6",
                "distill.save_steps=2"]
        assert main(args) == 2
        err = capsys.readouterr().err
        (line,) = [x for x in err.splitlines() if x.startswith("psdistill: error:")]
        assert f"{disk / 'run/student'}: no space left on the device (0.0 MB free, about " in line
        assert "Traceback" not in err
        assert sorted(p.name for p in (disk / "run/stages").iterdir()) == ["data.json", "fit.json", "judge.json"]
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        assert main(args) == 0
        assert "distill.resume_from_checkpoint=last: no checkpoint" not in capsys.readouterr().out


@pytest.mark.slow
def test_a_finished_run_on_a_read_only_disk_is_reread_rescored_and_rereported(tmp_path, capsys):
    args = ["run", f"run_dir={tmp_path / 'run'}", *SMALL]
    assert main(args) == 0
    run = tmp_path / "run"
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    capsys.readouterr()
    with _read_only(run):
        assert main(args) == 0
        out, err = capsys.readouterr()
        assert "read-only and finished: reading its results without taking its lock" in out
        assert out.count("finished earlier with the same config: reused") == 6 and "report:" in out
        assert "Traceback" not in err
        assert main(["eval", *args[1:]]) == 0 and "report:" in capsys.readouterr().out
        images = sorted(str(p) for p in (run / "demo/images/objects").iterdir())[:3]
        assert main(["score", "--model", str(run), *images, "-o", str(tmp_path / "scores.csv")]) == 0
    assert (tmp_path / "scores.csv").read_text().count("\n") == 4
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before  # config.yaml and the rest untouched


def test_unfinished_work_on_a_read_only_disk_is_one_line_naming_the_run_dir(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    with _read_only(tmp_path / "run"):
        assert main(["data", f"run_dir={tmp_path / 'run'}", *SMALL]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"run_dir {tmp_path / 'run'}: cannot write its lock file" in err
    assert "read-only file system" in err or "permission denied" in err


def test_a_file_system_without_locks_runs_unlocked_with_a_warning(tmp_path, monkeypatch, caplog):
    # Simulated (flock raising ENOLCK, as NFS without lockd does): no such file system can be mounted here.
    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    lines = []
    assert run_pipeline(_cfg(tmp_path), stop_after="data", log=lines.append)["data"]["status"] == "ran"
    assert any("cannot lock" in r.getMessage() and "running unlocked" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
@pytest.mark.parametrize("launcher", [["--num_processes", "1"],  # accelerate's simple launcher
                                      ["--config_file", "launch/cpu_ddp.yaml"]],
                         ids=["one process", "two processes (torchrun)"])
def test_a_recipes_error_is_the_last_line_under_psdistill_launch(tmp_path, launcher, free_port):
    if "--config_file" in launcher:
        launcher = [*launcher, "--main_process_port", str(free_port)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", "psdistill.cli", "launch", *launcher,
                           "recipes/distill.py", f"run_dir={tmp_path / 'run'}", *SMALL, "pool.k=100"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("psdistill: error: pool.k=100:") and "Traceback" not in done.stderr
    assert done.stderr.count("psdistill: error:") == 1
