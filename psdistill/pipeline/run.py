"""The orchestrator: a config in, every stage run (or reused) in order in its run directory, the results out.

    results = run_pipeline(cfg)        # all stages; stop_after="judge" runs data and judge only

It reads top to bottom: check the words the model will be read by, take the run directory's lock,
set aside what a changed config replaces, save the config, run the stages (psdistill.pipeline.runner
skips the finished ones).
"""
from __future__ import annotations

import os
from contextlib import nullcontext

from psdistill.core.config import save_config
from psdistill.core.run_lock import run_lock
from psdistill.models.device import process_state
from psdistill.pipeline.config import PipelineConfig
from psdistill.pipeline.context import RunContext
from psdistill.pipeline.runner import Replacing, pending, plan, run_stages
from psdistill.pipeline.stages import data, distill, evaluate, fit, judge, score

STAGES = tuple(m.STAGE for m in (data, judge, fit, distill, score, evaluate))
STAGE_NAMES = tuple(s.name for s in STAGES)


def run_pipeline(cfg: PipelineConfig, stop_after: str | None = None, log=print) -> dict:
    """Run the stages (all, or up to `stop_after`); under `accelerate launch` with several processes
    each stage uses the ranks as the module docstring says."""
    state = process_state() if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None
    run = RunContext(cfg, log if state is None or state.is_main_process else (lambda *a, **k: None), state)
    stages = STAGES[:STAGE_NAMES.index(stop_after) + 1] if stop_after else STAGES
    if run.is_main and pending(run, stages):  # a finished run reads no model files: its rerun takes seconds
        from psdistill.models.loading import load_vlm_processor
        from psdistill.pipeline.readout_check import check_readout_tokens

        # A word the model cannot read as one token stops the run now, not after hours of judging.
        check_readout_tokens(load_vlm_processor(cfg.model), cfg)
    try:
        with _claim(run, stages):
            # Refused or replaced before config.yaml is: a refused config must not overwrite the run's.
            plan(run, stages, Replacing(overwrite=cfg.overwrite_run_dir, keep_replaced=cfg.keep_replaced),
                 log=run.log, is_main=run.is_main)
            if run.is_main:
                save_config(cfg, run.path("config.yaml"))
            if state is not None:
                state.wait_for_everyone()  # nothing starts before the replaced outputs are set aside
            results = run_stages(run, stages, log=run.log, state=state)
            if state is not None:
                state.wait_for_everyone()  # no rank tears its process group down while another still works
            return results
    finally:
        if state is not None:
            state.destroy_process_group()  # gloo may hang on exit otherwise


def _claim(run: RunContext, stages):
    """The run directory's lock, held by the main process (the other ranks of its launch work under it);
    none for a finished run on a disk it cannot write: reading it writes nothing."""
    if not run.is_main:
        return nullcontext()
    if run.run_dir.is_dir() and not os.access(run.run_dir, os.W_OK) and not pending(run, stages):
        run.log(f"run_dir {run.run_dir}: read-only and finished: reading its results without taking its lock")
        return nullcontext()
    return run_lock(run.run_dir)
