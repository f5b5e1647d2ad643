"""What every training objective shares: `TrainingJob` (one student to train), `train_student` (the entry
the pipeline calls, which runs the configured objective from objectives.OBJECTIVES), and the steps of a
run: `start` (seed, student, scorer spec, training signal), `claim_output_dir` (checkpoints of another
training are dropped), `fit` (train from the resume point, save, write the base-model record and the
model card). trainer.py (ranking) and grpo.py (GRPO) are these steps around their own Trainer.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import torch
from transformers import PrinterCallback, ProgressCallback, TrainerCallback, set_seed
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from psdistill.core.errors import ConfigError, DataError
from psdistill.core.storage import writing
from psdistill.data.records import DEFAULT_RATING_SCALE, ImageRecord
from psdistill.distill.card import LabelSource, record_base_model, write_model_card
from psdistill.distill.config import DistillConfig
from psdistill.distill.objectives import objective_trainer
from psdistill.distill.signal import training_signal
from psdistill.distill.student_build import build_student
from psdistill.models.device import main_process_only
from psdistill.models.loading import ModelConfig
from psdistill.scoring.spec import ScorerSpec

logger = logging.getLogger(__name__)

FINGERPRINT_FILE = "training_fingerprint.txt"  # which training the checkpoints in the folder belong to


@dataclass
class TrainingJob:
    """One student to train: `pseudo_scores` ({dimension: {image id: (mean, variance)}} on `rating_scale`)
    of `records`, distilled into `model_cfg`'s VLM as `cfg` says, saved in `output_dir`. `val_records`
    (ground truth in `scores[dimension]`) are scored during training where the objective can; `callbacks`
    are extra `transformers.TrainerCallback`s; `labels` (which judge, whether simulated) goes into the
    model card."""

    records: Sequence[ImageRecord]
    pseudo_scores: Mapping[str, Mapping[str, Sequence[float]]]
    model_cfg: ModelConfig
    cfg: DistillConfig
    output_dir: Path
    val_records: Sequence[ImageRecord] = ()
    callbacks: Optional[list] = None
    rating_scale: Sequence[float] = DEFAULT_RATING_SCALE
    labels: Optional[LabelSource] = None

    def __post_init__(self):
        self.output_dir = Path(self.output_dir)
        self.val_records = list(self.val_records or ())
        if not self.pseudo_scores:
            raise DataError("train_student: no pseudo-scores given (pseudo_scores has no dimension)")

    @property
    def dimensions(self) -> list[str]:
        return list(self.pseudo_scores)


@dataclass
class Student:
    """What `start` builds: the model to train, its processor, the scorer spec its folder gets, and the
    training signal (signal.py)."""

    model: torch.nn.Module
    processor: Any
    spec: ScorerSpec
    signal: Any


def train_student(train_records: Sequence[ImageRecord], pseudo_scores: Mapping[str, Mapping[str, Sequence[float]]],
                  model_cfg: ModelConfig, cfg: DistillConfig, output_dir, val_records: Optional[Sequence[ImageRecord]] = None,
                  callbacks: Optional[list] = None, rating_scale: Sequence[float] = DEFAULT_RATING_SCALE,
                  labels: Optional[LabelSource] = None) -> Path:
    """Train one student on `pseudo_scores` ({dimension: {id: (mean, variance)}} on `rating_scale`) that
    scores every dimension in one pass per image (`scoring.readout.Readout`), by `cfg.objective`, and save it.

    Returns `output_dir`, which holds the adapter (or full weights), the processor, `scorer_config.json`,
    the trainer state and the model card (`card.py`); `checkpoint-N/` folders are scorers too. Works the
    same in one process and under `accelerate launch`. The ranking objective scores `val_records` every
    `cfg.eval_steps` (and at the start), logged as eval_srcc / eval_plcc (per dimension too, with several);
    the arguments are `TrainingJob`'s.
    """
    job = TrainingJob(train_records, pseudo_scores, model_cfg, cfg, output_dir, val_records or (), callbacks,
                      rating_scale, labels)
    return objective_trainer(cfg.objective)(job)


def start(job: TrainingJob) -> Student:
    """Seed, then build the student, its scorer spec and the training signal."""
    cfg = job.cfg
    weights = "full" if cfg.tuning == "full" else "adapter"
    spec = ScorerSpec.build(job.model_cfg, cfg.readout_config(job.dimensions), weights=weights, name="psdistill",
                            rating_scale=job.rating_scale, distill_config=dataclasses.asdict(cfg))
    set_seed(cfg.seed)  # LoRA and scalar-head initialisation happen before the Trainer seeds
    model, processor = build_student(job.model_cfg, cfg, job.rating_scale)
    return Student(model, processor, spec, training_signal(job.records, job.pseudo_scores, spec.prompts))


def training_fingerprint(job: TrainingJob, rows: list[dict]) -> str:
    """What decides a checkpoint's meaning: the model, the data `rows`, the dimensions, the rating scale
    and the distill config, all but where to resume from."""
    payload = {"model": dataclasses.asdict(job.model_cfg), "dimension": [job.dimensions, list(job.rating_scale)],
               "rows": rows,
               "distill": {k: v for k, v in dataclasses.asdict(job.cfg).items() if k != "resume_from_checkpoint"}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def claim_output_dir(job: TrainingJob, rows: list[dict]) -> None:
    """Record (on the main process) which training the output folder's checkpoints belong to; drop those of
    another one, which resuming would silently continue (another learning rate, data set or model)."""
    fingerprint = training_fingerprint(job, rows)

    def claim():
        record = job.output_dir / FINGERPRINT_FILE
        if record.is_file() and record.read_text().strip() != fingerprint:
            stale = sorted(job.output_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*"))
            if stale:
                logger.warning("%s: %d checkpoint(s) of another training config; starting fresh", job.output_dir,
                               len(stale))
            for ckpt in stale:
                shutil.rmtree(ckpt)
        job.output_dir.mkdir(parents=True, exist_ok=True)
        record.write_text(fingerprint + "\n")
    main_process_only(claim)


def resume_point(cfg: DistillConfig, output_dir: Path) -> Optional[str]:
    """The checkpoint `cfg.resume_from_checkpoint` names ('last': the newest complete one), or None."""
    if cfg.resume_from_checkpoint in (None, ""):
        return None
    if cfg.resume_from_checkpoint == "last":
        # trainer_state.json is written last: a checkpoint cut off mid-write by a kill lacks it and is skipped.
        done = [p for p in output_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*") if (p / TRAINER_STATE_NAME).is_file()]
        if not done:
            logger.info("distill.resume_from_checkpoint=last: no checkpoint in %s, starting fresh", output_dir)
            return None
        return str(max(done, key=lambda p: int(p.name.rsplit("-", 1)[1])))
    if not Path(cfg.resume_from_checkpoint).is_dir():
        raise ConfigError(f"distill.resume_from_checkpoint: {cfg.resume_from_checkpoint} is not a folder")
    return cfg.resume_from_checkpoint


class _LogMetrics(TrainerCallback):
    """The Trainer's metric dicts at DEBUG: in the run's log file (psdistill.core.logs), on the console
    only with --verbose, instead of printed between the progress bar's lines."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero:
            logger.debug("step %d: %s", state.global_step, {k: v for k, v in logs.items() if k != "total_flos"})


class _LoggedProgress(_LogMetrics, ProgressCallback):
    """transformers' progress bar, with `_LogMetrics.on_log`."""


def _log_metrics_instead_of_printing(trainer) -> None:
    if trainer.pop_callback(PrinterCallback) is not None:  # disable_tqdm=True
        trainer.add_callback(_LogMetrics)
    # Only where the bar is drawn: swapped on the other ranks too, rank 1 of a 2-process gloo run aborted
    # at exit ("terminate called without an active exception"), every time; the cause is not found yet.
    if trainer.is_world_process_zero() and trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(_LoggedProgress)


def fit(trainer, job: TrainingJob, student: Student, n_images: int, scratch: Sequence[Path] = ()) -> Path:
    """Train (from `resume_point`), save the scorer folder and its state, then on the main process remove
    the `scratch` folders and write the base-model record and the model card; returns the folder."""
    _log_metrics_instead_of_printing(trainer)
    out = job.output_dir
    # torch.save and safetensors name neither the file nor the cause of a failed checkpoint write.
    with writing(out, needed=_checkpoint_bytes(student.model)):
        trainer.train(resume_from_checkpoint=resume_point(job.cfg, out))
        trainer.save_model(str(out))
        trainer.save_state()

        def finish():
            for folder in scratch:
                shutil.rmtree(folder, ignore_errors=True)
            record_base_model(out, student.spec)
            write_model_card(out, student.spec, student.processor, n_images, job.labels)
        # The other ranks wait for these files: one that left early tore its process group down while rank 0
        # still wrote, aborted at exit (gloo) and had the launcher kill rank 0 mid-write.
        main_process_only(finish)
    return out


def _checkpoint_bytes(model: torch.nn.Module) -> int:
    """About what one checkpoint takes: the weights, and AdamW's two fp32 moments per trained parameter."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return weights + sum(2 * 4 * p.numel() for p in model.parameters() if p.requires_grad)
