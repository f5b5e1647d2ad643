"""Fault injection: SIGKILL the demo pipeline at random moments in every stage, rerun until it finishes,
and compare the outputs with an uninterrupted run; plus a full disk and two runs at once.

    nice python eval/fault_injection.py --kills 50 --seed 0 --out eval/results/fault_injection.md

Each run is `psdistill run` on the demo config with small settings (15 training images, 6 steps, a
checkpoint every 2), in a child process that only adds markers: its stage lines ("[judge] ...") and
"@@checkpoint start/end" around the Trainer's checkpoint writes, and a pause of --pace seconds at each
judgment-store commit and each file rename, so that the stages that take milliseconds (data, judge,
fit, evaluate) last long enough to be hit. A kill is aimed at a stage (or a checkpoint write): the
parent waits for its start line, then sends SIGKILL to the process group after a delay drawn uniformly
over that stage's duration in the reference run; it is counted where it landed (the last marker seen).
An episode is a fresh run directory killed up to --per-episode times at targets in stage order, then
rerun to the end; its outputs must equal the uninterrupted run's:

- judgments: the same rows (judge, prompt, dimension, image hashes, P(first)), none twice; comparisons.csv
  and pool.json byte-identical; pseudo_scores.csv byte-identical;
- student weights within --tol (max abs difference) and every predictions CSV within --tol;
- metrics.json and report.md identical once the run directory's path is replaced by <run>;
- no "Traceback" on any attempt's stderr, the last attempt's exit status 0.
Time lost per kill: (the episode's total wall time - the uninterrupted run's) / its kills.
Then a finished run rerun with a changed config, killed while it moves the replaced outputs aside; and
the run on two processes (gloo) with rank 1 SIGKILLed while it judges (`rank_death`).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

from _bench_common import command_line, write_report  # noqa: E402

STAGES = ("data", "judge", "fit", "distill", "score", "evaluate")
CHECKPOINT = "checkpoint"  # a kill target and a place: inside the Trainer's checkpoint write
TARGETS = STAGES[:4] + (CHECKPOINT,) + STAGES[4:]  # in the order a run meets them
SETTINGS = ["--config", str(ROOT / "psdistill/pipeline/configs/demo.yaml"), "data.demo.series_per_category=3",
            "data.demo.size=32", "pool.k=5", "distill.max_steps=6", "distill.save_steps=2",
            "distill.per_device_train_batch_size=4", "distill.report_to=[]", "validation_images=0",
            "teacher_pointwise=true"]
TRACEBACK = "Traceback (most recent call last)"
REPLACING = "replacing"  # a finished run rerun with a changed config, moving the replaced outputs aside
REPLACING_LINE = "the config changed since the finished run"
CHANGED = ["distill.learning_rate=0.001"]
RANK_LINE = "@@rank"  # "@@rank R pid P": each process of a launch says who it is


# ---- the child: the pipeline with markers -----------------------------------------------------------

def child(argv: list[str], pace: float, judge_pace: float = 0.0) -> int:
    """`psdistill run ARGV` with checkpoint markers on stdout and pauses at commits and renames (and,
    with `judge_pace`, in every call of the judge); prints its rank and pid first."""
    import pathlib

    from transformers import Trainer

    from psdistill.cli import main
    from psdistill.judge.simulated import SimulatedJudge
    from psdistill.judge.store import JudgmentStore

    def paced(fn):
        def wrapper(*args, **kwargs):
            time.sleep(pace)
            return fn(*args, **kwargs)
        return wrapper

    def marked(fn):
        def wrapper(*args, **kwargs):
            print("@@checkpoint start", flush=True)
            out = fn(*args, **kwargs)
            print("@@checkpoint end", flush=True)
            return out
        return wrapper

    JudgmentStore.put = paced(JudgmentStore.put)
    pathlib.Path.replace = paced(pathlib.Path.replace)
    Trainer._save_checkpoint = marked(Trainer._save_checkpoint)
    if judge_pace:
        prefer = SimulatedJudge.prefer
        SimulatedJudge.prefer = lambda self, *a: time.sleep(judge_pace) or prefer(self, *a)
    # one write, so that the ranks' lines do not interleave (print writes its end apart)
    print(f"{RANK_LINE} {os.environ.get('RANK', '0')} pid {os.getpid()}\n", end="", flush=True)
    return main(["run", *argv])


# ---- the parent: attempts, kills, checks --------------------------------------------------------------

@dataclass
class Attempt:
    rc: int
    seconds: float
    killed_in: str | None  # where the kill landed (a stage, "checkpoint", "startup"); None: not killed
    stderr: str
    lines: list[tuple[float, str]] = field(default_factory=list)  # (seconds since start, stdout line)


def attempt(run_dir: Path, pace: float, target: str | None = None, delay: float = 0.0, extra=()) -> Attempt:
    """One run of the child; with `target`, SIGKILL `delay` s after that stage (or checkpoint, or the
    setting aside of replaced outputs) starts."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TQDM_DISABLE="1")
    cmd = [sys.executable, __file__, "--child", "--pace", str(pace), "--", f"run_dir={run_dir}", *SETTINGS, *extra]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True, cwd=ROOT)
    lines: list[tuple[float, str]] = []
    reached = threading.Event()
    start_line = {CHECKPOINT: "@@checkpoint start", REPLACING: REPLACING_LINE}.get(target, f"[{target}] ")
    err: list[str] = []
    drain = threading.Thread(target=lambda: err.append(proc.stderr.read()))
    drain.start()

    def read():
        for line in proc.stdout:
            lines.append((time.monotonic() - start, line.rstrip("\n")))
            if target and line.startswith(start_line) and "reused" not in line:
                reached.set()
        reached.set()  # the child ended (or never met the target)

    reader = threading.Thread(target=read)
    reader.start()
    killed_in = None
    if target:
        reached.wait()
        time.sleep(delay)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            killed_in = place(lines)
    rc = proc.wait()
    reader.join()
    drain.join()
    return Attempt(rc, time.monotonic() - start, killed_in, err[0], lines)


def place(lines: list[tuple[float, str]]) -> str:
    """Where a run is, by the last marker it printed."""
    where = "startup"
    for _, line in lines:
        if line.startswith(REPLACING_LINE):
            where = REPLACING
        elif line == "@@checkpoint start":
            where = CHECKPOINT
        elif line == "@@checkpoint end":
            where = "distill"
        elif line.startswith("[") and "] " in line and line[1:line.index("]")] in STAGES:
            where = line[1:line.index("]")]
    return where


def durations(ref: Attempt) -> dict[str, float]:
    """Each target's duration in the uninterrupted run: from its start line to the next stage's (a
    checkpoint: to its end marker; the last stage: to the exit)."""
    starts = [(t, line[1:line.index("]")]) for t, line in ref.lines
              if line.startswith("[") and "] " in line and line[1:line.index("]")] in STAGES]
    out = {}
    for (t, name), nxt in zip(starts, starts[1:] + [(ref.seconds, None)]):
        out[name] = nxt[0] - t
    ckpt = [t for t, line in ref.lines if line.startswith("@@checkpoint")]
    out[CHECKPOINT] = float(np.mean(np.diff(ckpt)[::2])) if len(ckpt) >= 2 else 0.1
    return out


def finished(run_dir: Path, target: str) -> bool:
    """Whether a rerun would pass `target` by (its stage's marker is written)."""
    stage = "distill" if target == CHECKPOINT else target
    return (run_dir / "stages" / f"{stage}.json").is_file()


# ---- comparing with the uninterrupted run ----------------------------------------------------------------

def judgments(run_dir: Path) -> tuple[list[tuple], int]:
    """(sorted rows without their timestamps, distinct keys) of the run's judgment store."""
    with sqlite3.connect(run_dir / "judgments.sqlite") as db:
        rows = db.execute("SELECT judge_id, prompt_hash, dimension, first_hash, second_hash, p_first "
                          "FROM judgments").fetchall()
        keys = db.execute("SELECT COUNT(*) FROM (SELECT DISTINCT judge_id, prompt_hash, dimension, first_hash, "
                          "second_hash FROM judgments)").fetchone()[0]
    return sorted(rows), keys


def _weights(path: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(path))


def _predictions(path: Path) -> dict[tuple[str, str], float]:
    from psdistill.data.predictions import read_predictions

    return {(i, d): v for i, scores in read_predictions(path).items() for d, v in scores.items()}


def _normalised(path: Path, run_dir: Path) -> str:
    return path.read_text().replace(str(run_dir.resolve()), "<run>").replace(str(run_dir), "<run>")


def compare(run_dir: Path, ref_dir: Path, tol: float) -> dict[str, bool]:
    """Each output of `run_dir` against the uninterrupted run's (see the module docstring)."""
    rows, keys = judgments(run_dir)
    same_bytes = lambda name: (run_dir / name).read_bytes() == (ref_dir / name).read_bytes()  # noqa: E731
    a, b = _weights(run_dir / "student/model.safetensors"), _weights(ref_dir / "student/model.safetensors")
    weights = a.keys() == b.keys() and max(float(np.abs(a[k] - b[k]).max()) for k in a) <= tol
    preds = sorted(p.name for p in (ref_dir / "predictions").glob("*.csv"))
    predictions = preds == sorted(p.name for p in (run_dir / "predictions").glob("*.csv")) and all(
        _close(_predictions(run_dir / "predictions" / n), _predictions(ref_dir / "predictions" / n), tol) for n in preds)
    report = all(_normalised(run_dir / "report" / n, run_dir) == _normalised(ref_dir / "report" / n, ref_dir)
                 for n in ("metrics.json", "report.md"))
    return {"judgments": rows == judgments(ref_dir)[0], "no duplicates": len(rows) == keys,
            "comparisons": same_bytes("comparisons.csv") and same_bytes("pool.json"),
            "pseudo-scores": same_bytes("pseudo_scores.csv"), "student weights": weights,
            "predictions": predictions, "report": report}


def _close(a: dict, b: dict, tol: float) -> bool:
    return a.keys() == b.keys() and all(abs(a[k] - b[k]) <= tol for k in a)


# ---- the cases ----------------------------------------------------------------------------------------------

@dataclass
class Episode:
    kills: list[str]
    attempts: list[Attempt]
    checks: dict[str, bool]
    lost_per_kill: float


def episode(run_dir: Path, ref: Attempt, ref_dir: Path, targets: list[str], spans: dict, rng: random.Random,
            pace: float, tol: float) -> Episode:
    attempts, kills = [], []
    for target in sorted(targets, key=TARGETS.index):
        if finished(run_dir, target):
            continue
        a = attempt(run_dir, pace, target, rng.uniform(0, spans[target]))
        attempts.append(a)
        if a.killed_in is None:
            break  # it finished before the kill: the episode is over
        kills.append(a.killed_in)
    if not attempts or attempts[-1].killed_in is not None:
        attempts.append(attempt(run_dir, pace))
    last = attempts[-1]
    checks = compare(run_dir, ref_dir, tol) if last.rc == 0 else {"finished": False}
    checks["exit 0"] = last.rc == 0
    lost = (sum(a.seconds for a in attempts) - ref.seconds) / max(len(kills), 1)
    return Episode(kills, attempts, checks, lost)


def full_disk(work: Path, ref_dir: Path, pace: float, tol: float) -> str:
    """The run on a 5 MB tmpfs (full at the second checkpoint), then on the same disk grown to 64 MB."""
    disk = work / "disk"
    disk.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=5m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        return f"skipped: cannot mount a tmpfs here ({mounted.stderr.strip()})"
    try:
        full = attempt(disk / "run", pace)
        errors = [line for line in full.stderr.splitlines() if line.startswith("psdistill: error:")]
        kept = sorted(p.stem for p in (disk / "run/stages").glob("*.json"))
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        rerun = attempt(disk / "run", pace)
        checks = compare(disk / "run", ref_dir, tol) if rerun.rc == 0 else {"finished": False}
        ok = (full.rc == 2 and len(errors) == 1 and "no space left" in errors[0] and TRACEBACK not in full.stderr
              and rerun.rc == 0 and all(checks.values()))
        return (f"{'ok' if ok else 'FAILED'}: exit {full.rc}, `{errors[0] if errors else full.stderr[-300:]}`; "
                f"stages kept: {', '.join(kept)}; after growing the disk: exit {rerun.rc}, "
                f"identical outputs: {sum(checks.values())}/{len(checks)}")
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def replace_kills(work: Path, ref_dir: Path, args, rng: random.Random) -> str:
    """The finished run rerun with a changed learning rate, killed while it sets the student, predictions
    and report aside (or just after), then rerun to the end: the replaced outputs must sit together in
    one folder, equal to the finished run's, and the new ones equal an uninterrupted rerun's."""
    import shutil

    changed_ref = work / "reference-changed"
    shutil.copytree(ref_dir, changed_ref)
    if attempt(changed_ref, args.pace, extra=CHANGED).rc != 0:
        return "FAILED: the uninterrupted rerun with a changed config failed"
    kept = identical = killed = 0
    places = []
    for n in range(args.replace_kills):
        run_dir = work / f"replace-{n:02d}"
        shutil.copytree(ref_dir, run_dir)
        # the journal and up to 6 moves, each paced, then the stages
        a = attempt(run_dir, args.pace, REPLACING, rng.uniform(0, 8 * args.pace), extra=CHANGED)
        killed += a.killed_in is not None
        places.append(a.killed_in or "not killed")
        final = attempt(run_dir, args.pace, extra=CHANGED)
        asides = list((run_dir / "replaced").iterdir()) if (run_dir / "replaced").is_dir() else []
        kept += len(asides) == 1 and all((asides[0] / rel).exists() for rel in (
            "student", "predictions", "report", "stages/distill.json", "stages/evaluate.json")) and \
            (asides[0] / "student/model.safetensors").read_bytes() == (ref_dir / "student/model.safetensors").read_bytes()
        identical += final.rc == 0 and TRACEBACK not in a.stderr + final.stderr and \
            all(compare(run_dir, changed_ref, args.tol).values())
    ok = kept == identical == killed == args.replace_kills
    return (f"{'ok' if ok else 'FAILED'}: {killed} kills ({', '.join(places)}); replaced outputs kept together "
            f"and intact: {kept}/{args.replace_kills}; new outputs identical to an uninterrupted rerun: "
            f"{identical}/{args.replace_kills}")


def concurrent(work: Path, ref_dir: Path, pace: float, tol: float) -> str:
    """Two runs started together on one fresh run directory: one refused at once, the other finishes."""
    run_dir = work / "concurrent"
    out: list[Attempt] = [None, None]
    threads = [threading.Thread(target=lambda n=n: out.__setitem__(n, attempt(run_dir, pace))) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    refused = [a for a in out if a.rc == 2 and "in use by pid" in a.stderr]
    done = [a for a in out if a.rc == 0]
    checks = compare(run_dir, ref_dir, tol) if done else {"finished": False}
    ok = len(refused) == 1 and len(done) == 1 and all(checks.values()) and not any(TRACEBACK in a.stderr for a in out)
    return (f"{'ok' if ok else 'FAILED'}: exit statuses {sorted(a.rc for a in out)}; refused after "
            f"{refused[0].seconds:.1f} s; " if refused else f"FAILED: exit statuses {[a.rc for a in out]}; ") + \
        f"identical outputs: {sum(checks.values())}/{len(checks)}"


def rank_death(work: Path, ref_dir: Path, args, rng: random.Random) -> str:
    """The run on two processes (gloo), rank 1 SIGKILLed while it judges a chunk: the run must stop (not
    hang) with one line, its store hold only answers equal to the uninterrupted run's, and a rerun (one
    process) judge only the pairs the store lacks and end with identical outputs."""
    import socket

    run_dir = work / "rank-death"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TQDM_DISABLE="1",
               OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "psdistill.cli", "launch", "--config_file", str(ROOT / "launch/cpu_ddp.yaml"),
           "--main_process_port", str(port), __file__, "--child", "--pace", str(args.pace), "--judge-pace", "0.3",
           "--", f"run_dir={run_dir}", *SETTINGS]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True, cwd=ROOT)
    err: list[str] = []
    drain = threading.Thread(target=lambda: err.append(proc.stderr.read()))
    drain.start()
    pid, judging = None, False
    for line in proc.stdout:
        said = re.search(rf"{RANK_LINE} 1 pid (\d+)", line)
        pid = int(said.group(1)) if said else pid
        judging = judging or line.startswith("[judge] ")
        if pid and judging:
            break
    if not (pid and judging):
        proc.wait()
        return f"FAILED: the two-process run ended before judging (exit {proc.returncode}): {proc.stderr.read()[-500:]}"
    delay = rng.uniform(0.5, 1.5)  # a few rounds in: answers stored, rank 1 inside a paced call
    time.sleep(delay)
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    try:
        rc = proc.wait(timeout=args.rank_timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        rc = None
    stopped = time.monotonic() - killed
    proc.stdout.read()
    drain.join()
    kept = judgments(run_dir)[0] if (run_dir / "judgments.sqlite").is_file() else []
    ref_rows = judgments(ref_dir)[0]
    errors = [line for line in err[0].splitlines() if line.startswith("psdistill: error:")]
    rerun = attempt(run_dir, args.pace)
    computed = json.loads((run_dir / "stages/judge.json").read_text())["summary"]["computed"] if rerun.rc == 0 else -1
    checks = compare(run_dir, ref_dir, args.tol) if rerun.rc == 0 else {"finished": False}
    last = err[0].strip().splitlines()[-1:]
    ok = (rc not in (0, None) and len(errors) == 1 and last == errors and 0 < len(kept) and set(kept) <= set(ref_rows)
          and computed == len(ref_rows) - len(kept) and all(checks.values()) and TRACEBACK not in rerun.stderr)
    said = f"`{errors[-1]}`" if errors else f"no psdistill error line: {last!r}"
    return (f"{'ok' if ok else 'FAILED'}: rank 1 SIGKILLed {delay:.1f} s into judging; the run "
            + (f"stopped {stopped:.1f} s later, exit {rc}, {said}" if rc is not None else
               f"HUNG ({args.rank_timeout:.0f} s)") +
            f"; the store kept {len(kept)} of {len(ref_rows)} judgments, "
            f"{'all' if set(kept) <= set(ref_rows) else 'NOT all'} equal to the uninterrupted run's; the rerun judged "
            f"{computed} (the {len(ref_rows) - len(kept)} missing); identical outputs: {sum(checks.values())}/{len(checks)}")


def run(args) -> tuple[str, bool]:
    """Everything the options ask for; returns (the report's markdown, whether every check passed)."""
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    ref_dir = work / "reference"
    ref = attempt(ref_dir, args.pace)
    if ref.rc != 0:
        raise SystemExit(f"the uninterrupted run failed (exit {ref.rc}):\n{ref.stderr[-3000:]}")
    spans = durations(ref)
    pool: list[str] = []
    episodes: list[Episode] = []
    while sum(len(e.kills) for e in episodes) < args.kills:
        if len(pool) < args.per_episode:
            pool += rng.sample(TARGETS, len(TARGETS))  # every target once per round: each stage gets kills
        want = args.kills - sum(len(e.kills) for e in episodes)
        targets, pool = pool[:min(args.per_episode, want)], pool[min(args.per_episode, want):]
        episodes.append(episode(work / f"episode-{len(episodes):02d}", ref, ref_dir, targets, spans, rng,
                                args.pace, args.tol))
        e = episodes[-1]
        print(f"episode {len(episodes)}: kills in {e.kills}, {len(e.attempts)} attempts, "
              f"{'all identical' if all(e.checks.values()) else e.checks}", flush=True)
    extra = {}
    if "disk" in args.cases:
        extra["full disk"] = full_disk(work, ref_dir, args.pace, args.tol)
    if "replace" in args.cases:
        extra["changed config, killed while replacing"] = replace_kills(work, ref_dir, args, rng)
    if "concurrent" in args.cases:
        extra["two runs at once"] = concurrent(work, ref_dir, args.pace, args.tol)
    if "rank" in args.cases:
        extra["a rank dying mid-chunk (2 processes)"] = rank_death(work, ref_dir, args, rng)
    return table(args, ref, spans, episodes, extra)


def table(args, ref: Attempt, spans: dict, episodes: list[Episode], extra: dict) -> tuple[str, bool]:
    kills = [k for e in episodes for k in e.kills]
    attempts = [a for e in episodes for a in e.attempts]
    tracebacks = sum(TRACEBACK in a.stderr for a in attempts)
    checks = sorted({k for e in episodes for k in e.checks})
    lost = [e.lost_per_kill for e in episodes if e.kills]
    where = ["startup", *TARGETS]
    lines = ["# Fault injection: SIGKILL anywhere, rerun, compare", "", command_line("eval/fault_injection.py"),
             f"- load: `{os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}` "
             f"(1/5/15 min) on {os.cpu_count()} CPUs; pace {args.pace} s per commit and rename; "
             f"uninterrupted run {ref.seconds:.1f} s", "",
             "| where the kill landed | " + " | ".join(where) + " | total |",
             "|---" * (len(where) + 2) + "|",
             "| kills | " + " | ".join(str(kills.count(w)) for w in where) + f" | {len(kills)} |",
             "| stage duration in the uninterrupted run (s) | – | "
             + " | ".join(f"{spans.get(w, 0):.2f}" for w in TARGETS) + " | |", "",
             "| episodes | reruns | " + " | ".join(checks) + " | time lost per kill (s): mean / max | raw tracebacks |",
             "|---" * (len(checks) + 4) + "|",
             f"| {len(episodes)} | {len(attempts) - len(episodes)} | "
             + " | ".join(f"{sum(e.checks.get(c, False) for e in episodes)}/{len(episodes)}" for c in checks)
             + (f" | {np.mean(lost):.1f} / {np.max(lost):.1f}" if lost else " | –") + f" | {tracebacks} |", ""]
    lines += [f"- {name}: {result}" for name, result in extra.items()]
    lines += ["- time lost per kill: the killed attempt's work since the last commit or checkpoint, the "
              "rerun's start-up (imports, the readout check's processor load) and its reused-stage checks"]
    ok = (tracebacks == 0 and all(all(e.checks.values()) for e in episodes)
          and all(r.startswith(("ok", "skipped")) for r in extra.values()))
    return "\n".join(lines) + "\n", ok


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=50, help="SIGKILLs in all")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--per-episode", type=int, default=5, help="kills in one run directory before it may finish")
    ap.add_argument("--pace", type=float, default=0.1, help="seconds the child pauses at each commit and rename")
    ap.add_argument("--tol", type=float, default=1e-5, help="max abs difference of weights and predictions")
    ap.add_argument("--cases", default="kills,replace,disk,concurrent,rank",
                    help="comma-separated: kills, replace, disk, concurrent, rank (a rank of two dying mid-chunk)")
    ap.add_argument("--rank-timeout", type=float, default=120.0,
                    help="seconds the other rank may take to stop after one dies before it counts as hung")
    ap.add_argument("--replace-kills", type=int, default=5, help="kills of reruns with a changed config")
    ap.add_argument("--work", default="/tmp/psdistill_fault_injection", help="folder for the run directories")
    ap.add_argument("--out", default=None, help="markdown file for the table")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--judge-pace", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args.rest, args.pace, args.judge_pace)
    if "kills" not in args.cases:
        args.kills = 0
    text, ok = run(args)
    write_report([text], args.out)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
