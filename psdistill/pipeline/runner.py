"""Run stages in one run directory: skip what is finished, redo what its config changed.

A stage is done when `<run>/stages/<name>.json` holds the fingerprint of the config sections it
reads, the content of the input files it names, and the fingerprints of the stages before it; rerunning with the same config reuses it,
changing e.g. `distill.learning_rate` reruns distill and everything after it, never the judging.
Interrupted stages resume through their own mechanisms (the judgment store, trainer checkpoints).

With `plan` (the pipeline calls it first), a run directory is never silently repurposed: a stage
with an `identity` (the data set, the judge) whose finished marker records another one is refused
unless overwritten, and the outputs of finished stages that the new config redoes are moved to
`<run>/replaced/<timestamp>/` (with their markers) before anything runs, or deleted if not kept;
a run killed while moving them finishes the same moves when it is rerun (`<run>/.replacing.json`).
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from psdistill.core.config import to_dict
from psdistill.core.errors import ConfigError
from psdistill.core.storage import writing

JOURNAL = ".replacing.json"  # the moves `plan` is making, until they are all made


@dataclass(frozen=True)
class Stage:
    name: str
    sections: tuple[str, ...]  # config sections (dotted) whose values decide this stage's result
    run: Callable[[Any], dict]  # takes the run context, returns a JSON-able summary
    description: str = ""
    all_ranks: bool = False  # True: every process runs it (data-parallel training); else the main one
    # Files outside the run dir whose content decides the result (e.g. the user's manifest): a file
    # edited in place under the same path must redo the stage.
    input_files: Callable[[Any], Sequence[str]] = lambda cfg: ()
    # What the run holds, as {aspect: value} (e.g. the manifest's path and content): a finished marker
    # that agrees on no aspect belongs to another run and is refused; None: any change is a new setting.
    identity: Optional[Callable[[Any], dict]] = None
    # Finished outputs (paths in the run dir) that redoing this stage replaces: set aside first.
    replaces: tuple[str, ...] = ()
    # (section, value) of settings added after runs were made, at the value that keeps the old behaviour:
    # in the fingerprint only when set otherwise, so a run finished before keeps its stage.
    added: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class Replacing:
    """How `plan` treats a run directory that holds other results (see the module docstring)."""

    overwrite: bool = False  # proceed although an identity differs
    overwrite_key: str = "overwrite_run_dir"  # the config key the refusal names
    keep_replaced: bool = True  # move replaced outputs to <run>/replaced/<timestamp>/ (else delete them)


def _section(cfg, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return to_dict(node) if hasattr(node, "__dataclass_fields__") else node


def file_digest(path: str) -> str:
    p = Path(path)
    return hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "missing"


def fingerprint(cfg, stage: Stage, upstream: Sequence[str]) -> str:
    sections = {s: _section(cfg, s) for s in stage.sections}
    sections.update({s: v for s, old in stage.added if (v := _section(cfg, s)) != old})
    payload = json.dumps({"sections": sections, "upstream": list(upstream),
                          "files": {f: file_digest(f) for f in stage.input_files(cfg)}},
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def marker_path(run_dir: Path, name: str) -> Path:
    return Path(run_dir) / "stages" / f"{name}.json"


def read_marker(path: Path) -> Optional[dict]:
    """The marker at `path`, or None (also when another rank's `plan` has just moved it aside)."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def _same(held: dict, wanted: dict) -> bool:
    """Two identities are the same when they agree on any aspect (a manifest: same path or same content)."""
    return any(k in wanted and wanted[k] == v for k, v in held.items())


def _describe(identity: dict) -> str:
    return ", ".join(f"{k}: {v}" for k, v in identity.items())


def _new_folder(path: Path) -> Path:
    """`path`, or `path-2`, `path-3`, ... when replacements come within one second."""
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate


def plan(ctx, stages: Sequence[Stage], replacing: Replacing, log=print, is_main: bool = True) -> list[str]:
    """Before `run_stages(ctx, stages)`: refuse another run's directory, then set aside what the config
    redoes; returns the replaced stages' names. Every rank checks (they read the same markers, so all
    refuse alike); only the main one moves files."""
    if is_main:
        _finish_set_aside(ctx.run_dir, log)
    replaced, upstream = [], []
    for stage in stages:
        fp = fingerprint(ctx.cfg, stage, upstream)
        upstream.append(fp)
        marker = read_marker(marker_path(ctx.run_dir, stage.name))
        if not marker or marker["fingerprint"] == fp:
            continue
        held = marker.get("identity")
        if stage.identity and held and not replacing.overwrite:
            wanted = stage.identity(ctx.cfg)
            if not _same(held, wanted):
                raise ConfigError(
                    f"run_dir {ctx.run_dir}: holds the {stage.name} of another run ({_describe(held)}); this config "
                    f"asks for ({_describe(wanted)}): use a new run_dir or set {replacing.overwrite_key}=true")
        replaced.append(stage)
    if not replaced:
        return []
    outputs = [o for s in replaced for o in s.replaces if (ctx.run_dir / o).exists()]
    aside = _new_folder(ctx.run_dir / "replaced" / time.strftime("%Y%m%d-%H%M%S"))
    where = f"kept in {aside}" if replacing.keep_replaced else "deleted: keep_replaced=false"
    log(f"the config changed since the finished run: redoing {', '.join(s.name for s in replaced)}"
        + (f"; replacing {', '.join(outputs)} ({where})" if outputs else ""))
    if is_main:
        # The markers go too: a rerun killed after this point resumes the new work, never moves it aside.
        _set_aside(ctx.run_dir, outputs + [f"stages/{s.name}.json" for s in replaced],
                   aside if replacing.keep_replaced else None)
    return [s.name for s in replaced]


def _set_aside(run_dir: Path, moves: Sequence[str], aside: Optional[Path]) -> None:
    """Move `moves` (paths in `run_dir`) to `aside`, or delete them (aside None), journaled in
    `<run>/.replacing.json`: a run killed midway would leave a marker whose outputs are gone (reused
    by the old config) and the rest in a second folder; the next `plan` finishes the same moves first."""
    journal = run_dir / JOURNAL
    _write_marker(journal, {"aside": str(aside) if aside else None, "moves": list(moves)})
    for rel in moves:
        src = run_dir / rel
        if not (src.exists() or src.is_symlink()):
            continue  # moved before the kill
        if aside is None:
            shutil.rmtree(src) if src.is_dir() else src.unlink()
        else:
            (aside / rel).parent.mkdir(parents=True, exist_ok=True)
            src.replace(aside / rel)
    journal.unlink()


def _finish_set_aside(run_dir: Path, log) -> None:
    """Finish the moves of a `plan` that was killed midway (`_set_aside`)."""
    try:
        job = json.loads((run_dir / JOURNAL).read_text())
    except FileNotFoundError:
        return
    log(f"finishing what an interrupted run was setting aside: {', '.join(job['moves'])}"
        + (f" (to {job['aside']})" if job["aside"] else " (deleted)"))
    _set_aside(run_dir, job["moves"], Path(job["aside"]) if job["aside"] else None)


def pending(ctx, stages: Sequence[Stage]) -> list[str]:
    """The stages that `run_stages` would run (no marker, or one of another config): none for a finished run."""
    out, upstream = [], []
    for stage in stages:
        fp = fingerprint(ctx.cfg, stage, upstream)
        upstream.append(fp)
        marker = read_marker(marker_path(ctx.run_dir, stage.name))
        if not marker or marker.get("fingerprint") != fp:
            out.append(stage.name)
    return out


def run_stages(ctx, stages: Sequence[Stage], stop_after: str | None = None, log=print, state=None) -> dict[str, dict]:
    """Run `stages` in order, reusing finished ones, up to and including `stop_after`.

    `state` (an `accelerate.PartialState`) is given under a multi-process launch: stages that are
    not `all_ranks` then run on the main process while the others wait, and all read its marker.
    """
    results: dict[str, dict] = {}
    upstream: list[str] = []
    is_main = state is None or state.is_main_process
    # Every rank decides on the markers as they were before this run: read while the stage before
    # it runs, a marker the main process has just written would let a rank skip a stage (and its
    # barrier) that the others run, and the ranks' collectives would no longer pair up.
    found = {s.name: read_marker(marker_path(ctx.run_dir, s.name)) for s in stages}
    if state is not None:
        state.wait_for_everyone()
    for stage in stages:
        fp = fingerprint(ctx.cfg, stage, upstream)
        path = marker_path(ctx.run_dir, stage.name)
        marker = found[stage.name]
        if marker and marker.get("fingerprint") == fp:
            marker["status"] = "reused"
            log(f"[{stage.name}] finished earlier with the same config: reused")
        else:
            if stage.all_ranks or is_main:
                log(f"[{stage.name}] {stage.description}")
                start = time.time()
                # A write the disk refuses that no stage names (a report, a plot, a marker): named by the run dir.
                with writing(ctx.run_dir):
                    summary = stage.run(ctx)
                    if is_main:
                        identity = {"identity": stage.identity(ctx.cfg)} if stage.identity else {}
                        _write_marker(path, {"stage": stage.name, "fingerprint": fp, **identity,
                                             "seconds": round(time.time() - start, 1),
                                             "finished_at": time.strftime("%Y-%m-%d %H:%M:%S"), "summary": summary})
            if state is not None:
                state.wait_for_everyone()
            marker = json.loads(path.read_text())
            marker["status"] = "ran"
        results[stage.name] = marker
        upstream.append(fp)
        if stage.name == stop_after:
            break
    return results


def _write_marker(path: Path, marker: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(marker, indent=2, default=str))
    tmp.replace(path)  # the marker appears only once the stage's outputs are complete
