"""The FGAesQ run (recipes/fgaesq.py): the pipeline's own data and evaluate stages around FGAesQ's train
and score stages (`psdistill.baselines.fgaesq`), on the shared stage runner (`psdistill.pipeline.runner`):

    data      the pipeline's data stage: build the demo or read data.manifest, check every image opens
    train     coarse pre-training, then alternating coarse/fine batches, on every process (resumes)
    score     every record through the single-image path, and series images through DiffToken
    evaluate  the pipeline's evaluation stage: every predictions file against ground truth

    <run_dir>/config.yaml                 the resolved config
    <run_dir>/data/manifest.csv           the images (the demo is built under <run_dir>/demo)
    <run_dir>/checkpoint/                 config.json + model.safetensors
    <run_dir>/train_state.pt              model + optimizer(s) after the last finished epoch (resume)
    <run_dir>/train_log.jsonl             losses every `train.log_every` steps
    <run_dir>/predictions/fgaesq.csv      every record, single-image path, on data.rating_scale
    <run_dir>/predictions/fgaesq-difftoken.csv  series images scored against their series (DiffToken)
    <run_dir>/report/                     metrics.json, report.md, plots (`psdistill.evaluation`); the
                                          test split is the report's held-out group
    <run_dir>/stages/<stage>.json         what finished, with which config (`psdistill.pipeline.runner`)

The run context holds the run's Accelerator as its process `state`: it answers is_main_process and
wait_for_everyone for every rank as PartialState does, and FGAesQ's stages train and score with it.
Only the main process writes files; the stages other than train run on it alone.
"""
from __future__ import annotations

import json
from dataclasses import fields, replace
from pathlib import Path
from typing import Callable, Optional

from psdistill.baselines.fgaesq.config import FGAesQConfig, FGAesQTrainConfig
from psdistill.baselines.fgaesq.predict import write_fgaesq_predictions
from psdistill.baselines.fgaesq.train import train_fgaesq
from psdistill.core.config import save_config
from psdistill.core.errors import ConfigError
from psdistill.data.config import DataConfig
from psdistill.pipeline.console import print_report
from psdistill.pipeline.context import RunContext
from psdistill.pipeline.run import STAGES as PIPELINE_STAGES
from psdistill.pipeline.runner import Stage, fingerprint, marker_path, run_stages


def stage_data(run: RunContext) -> dict:
    """The pipeline's data stage; FGAesQ's training categories must be named (every other category is its
    test split), where the pipeline would take the first one."""
    summary = PIPELINE_STAGES[0].run(run)
    if not run.cfg.data.train_categories:
        cats = sorted({r.category for r in run.records})
        raise ConfigError(f"data.train_categories: name the categories to train on; the data has {cats}")
    return summary


def stage_train(run: RunContext) -> dict:
    """Train data-parallel on every process; the main one writes <run_dir>/checkpoint."""
    return train_fgaesq(run.cfg, run.train_records, run.state, run.run_dir, train_fingerprint(run.cfg), log=run.log)


def stage_score(run: RunContext) -> dict:
    """Predictions of every record on data.rating_scale: single-image, and series through DiffToken."""
    written = write_fgaesq_predictions(run.cfg, run.path("checkpoint"), run.records, run.path("predictions"),
                                       device=str(run.state.device))
    return {"predictions": [str(p) for p in written]}


# FGAesQ's own data keys (the EMD target, the image cache) do not decide which images there are.
DATA = replace(PIPELINE_STAGES[0], sections=tuple(f"data.{f.name}" for f in fields(DataConfig)), run=stage_data)
# Logging and evaluation settings do not change the trained weights.
_NOT_TRAINING = ("log_every", "eval_batch_size", "eval_difftoken")
TRAIN = Stage("train", ("seed", "data.target_sigma", "data.histogram_prefix", "model", "difftoken", "loss",
                        *(f"train.{f.name}" for f in fields(FGAesQTrainConfig) if f.name not in _NOT_TRAINING)),
              stage_train, "training FGAesQ: coarse pre-training, then alternating coarse/fine batches",
              all_ranks=True)
SCORE = Stage("score", ("train.eval_difftoken",), stage_score, "scoring every image")
# The pipeline's evaluation: every predictions file (no student, so no intervals and no calibration section).
EVALUATE = replace(PIPELINE_STAGES[-1], sections=("compare_predictions",))
STAGES = (DATA, TRAIN, SCORE, EVALUATE)


def train_fingerprint(cfg: FGAesQConfig) -> str:
    """The train stage's fingerprint, as `run_stages` computes it (its sections, then the data stage's):
    it keys the resumable train_state.pt and guards the checkpoint."""
    return fingerprint(cfg, TRAIN, [fingerprint(cfg, DATA, [])])


def make_accelerator():
    """An Accelerator over every launched process, on the device `psdistill.models.device` picks
    (`cpu=True` exactly where that rule found no accelerator, so CPU ranks form one gloo group)."""
    from accelerate import Accelerator

    from psdistill.models.device import process_device

    return Accelerator(cpu=process_device().type == "cpu")


def run_fgaesq(cfg: FGAesQConfig, log: Callable = print, report: Optional[Callable] = None) -> dict[str, dict]:
    """Run the stages, write the report with `report` (default: `log`) on the main process and return the
    stages' markers; a finished stage with the same config is reused, a killed training resumes from its
    last finished epoch."""
    from accelerate.utils import set_seed

    acc = make_accelerator()
    quiet = lambda *a, **k: None  # noqa: E731 (the other ranks' messages would repeat the main one's)
    run = RunContext(cfg, log=log if acc.is_main_process else quiet, state=acc)
    try:
        _refuse_to_replace(cfg)
        set_seed(cfg.seed)
        if acc.is_main_process:  # only now: a refused config must not replace the run's config.yaml
            run.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, run.path("config.yaml"))
        results = run_stages(run, STAGES, log=run.log, state=acc)
        print_report(cfg, results, out=(report or log) if acc.is_main_process else quiet)
        return results
    finally:
        acc.end_training()  # destroys the process group: gloo may hang on exit otherwise


def _refuse_to_replace(cfg: FGAesQConfig) -> None:
    """A checkpoint trained with another config or data is kept unless `overwrite=true`."""
    marker = marker_path(Path(cfg.run_dir), TRAIN.name)
    if cfg.overwrite or not marker.is_file():
        return
    trained, wanted = json.loads(marker.read_text())["fingerprint"], train_fingerprint(cfg)
    if trained != wanted:
        raise ConfigError(f"{Path(cfg.run_dir) / 'checkpoint'}: holds a model trained with another config or data "
                          f"(fingerprint {trained} != {wanted}); use a new run_dir or set overwrite=true to retrain")
