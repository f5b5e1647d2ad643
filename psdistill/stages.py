"""Run stages in one run directory: skip what is finished, redo what its config changed.

A stage is done when `<run>/stages/<name>.json` holds the fingerprint of the config sections it
reads, the content of the input files it names, and the fingerprints of the stages before it; rerunning with the same config reuses it,
changing e.g. `distill.learning_rate` reruns distill and everything after it, never the judging.
Interrupted stages resume through their own mechanisms (the judgment store, trainer checkpoints).
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from psdistill.config import to_dict


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


def _section(cfg, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return to_dict(node) if hasattr(node, "__dataclass_fields__") else node


def _file_digest(path: str) -> str:
    p = Path(path)
    return hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "missing"


def fingerprint(cfg, stage: Stage, upstream: Sequence[str]) -> str:
    payload = json.dumps({"sections": {s: _section(cfg, s) for s in stage.sections}, "upstream": list(upstream),
                          "files": {f: _file_digest(f) for f in stage.input_files(cfg)}},
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def marker_path(run_dir: Path, name: str) -> Path:
    return Path(run_dir) / "stages" / f"{name}.json"


def run_stages(ctx, stages: Sequence[Stage], stop_after: str | None = None, log=print, state=None) -> dict[str, dict]:
    """Run `stages` in order, reusing finished ones, up to and including `stop_after`.

    `state` (an `accelerate.PartialState`) is given under a multi-process launch: stages that are
    not `all_ranks` then run on the main process while the others wait, and all read its marker.
    """
    results: dict[str, dict] = {}
    upstream: list[str] = []
    is_main = state is None or state.is_main_process
    for stage in stages:
        fp = fingerprint(ctx.cfg, stage, upstream)
        path = marker_path(ctx.run_dir, stage.name)
        marker = json.loads(path.read_text()) if path.is_file() else None
        if marker and marker.get("fingerprint") == fp:
            marker["status"] = "reused"
            log(f"[{stage.name}] finished earlier with the same config: reused")
        else:
            if stage.all_ranks or is_main:
                log(f"[{stage.name}] {stage.description}")
                start = time.time()
                summary = stage.run(ctx)
                if is_main:
                    _write_marker(path, {"stage": stage.name, "fingerprint": fp,
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
