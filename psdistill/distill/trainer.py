"""Distill pseudo-scores into a single-pass scorer: `DistillTrainer` (a `transformers.Trainer`) and
`train_student`, the entry point the pipeline calls.

The Trainer brings accelerate (DDP, DeepSpeed), gradient accumulation, schedulers, checkpoints,
resume and logging; this module adds the data path (image records -> processor inputs + pseudo-scores),
a sampler that makes in-batch pairs informative, the loss (`losses.py`), validation SRCC, and
saving in the scorer format (`scorer.py`). Not TRL's `RewardTrainer` (trl 1.16): it takes text
chosen/rejected pairs through a tokenizer into a sequence-classification head, where this trains on
images with pseudo-scores, forms confidence-weighted pairs inside each batch, and reads the score from
the VLM's own level-word logits. Its conventions (config dataclass + `Trainer` subclass, loss in
`compute_loss`) are followed. Launch, one process or many:

    accelerate launch --config_file launch/<x>.yaml recipes/distill.py --config recipes/configs/<y>.yaml
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import shutil
from collections import defaultdict
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr
from transformers import PrinterCallback, ProgressCallback, Trainer, TrainerCallback, set_seed
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from psdistill.data.images import load_image
from psdistill.data.records import DEFAULT_RATING_SCALE, ImageRecord
from psdistill.distill.card import LabelSource, record_base_model, write_model_card
from psdistill.distill.config import DistillConfig
from psdistill.distill.losses import confidence_matrix, distill_loss
from psdistill.distill.signal import training_signal
from psdistill.scoring.student import Readout, ScorerSpec, attach_score_head, level_token_ids, processor_inputs
from psdistill.core.errors import ConfigError, DataError
from psdistill.models.device import main_process_only
from psdistill.models.loading import ModelConfig, load_vlm
from psdistill.models.quant import load_4bit
from psdistill.core.storage import writing

logger = logging.getLogger(__name__)

# Qwen-VL layer names. Language model: attention and MLP projections. Vision tower: its blocks'
# attention and MLP, and the patch mergers (not the conv patch embedding).
_LANGUAGE_TARGETS = r"(.*\.)?language_model\..*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
_VISION_TARGETS = (r"(.*\.)?visual\.(blocks\.\d+\.(attn\.(qkv|proj)|mlp\.linear_fc[12])"
                   r"|(merger|deepstack_merger_list\.\d+)\.linear_fc[12])")

_FINGERPRINT_FILE = "training_fingerprint.txt"  # which training the checkpoints in the folder belong to


class SeriesSampler(torch.utils.data.Sampler[int]):
    """An epoch's order in which every `images_per_series` consecutive indices share a series.

    A batch of B images then holds B / images_per_series groups: pairs inside a group are the fine,
    within-series comparisons (a degradation ladder, a photo's variants), pairs across groups are
    coarse comparisons across series and categories. Records without a series are their own series.
    Deterministic in (seed, epoch), so every DDP process and a resumed run see the same order.
    """

    def __init__(self, series: Sequence[str], images_per_series: int, seed: int):
        self.groups: dict[str, list[int]] = defaultdict(list)
        for n, s in enumerate(series):
            self.groups[s].append(n)
        self.n = len(series)
        self.k = images_per_series
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        chunks = []
        for members in self.groups.values():
            members = rng.permutation(members)
            chunks += [members[i:i + self.k] for i in range(0, len(members), self.k)]
        for c in rng.permutation(len(chunks)):
            yield from (int(i) for i in chunks[c])


@dataclass
class DistillCollator:
    """Loads the images of a batch and builds left-padded processor inputs for the readout's `text`
    (the pointwise prompt, or the dimensions' shared prefix).

    Training features carry `mu`, `var` (pseudo-score mean and variance, one per dimension), which become
    `mu`, `var` (B, D) and the pair confidences `confidence` (D, B, B): pairs only within a dimension.
    Validation features carry `target` (ground truth per dimension, NaN where unknown).

        >>> collator = DistillCollator(processor, render_prompt(processor, "Rate ..."))   # doctest: +SKIP
        >>> batch = collator([{"path": "a.png", "mu": [3.2], "var": [0.1]}, {"path": "b.png", "mu": [2.0], "var": [0.2]}])
        >>> batch["confidence"]  # P(s_a > s_b) = Phi(1.2 / sqrt(0.3)) = 0.986               # doctest: +SKIP
        tensor([[[0.5000, 0.9858], [0.0142, 0.5000]]])
    """

    processor: Any
    text: str

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch = processor_inputs(self.processor, self.text, [load_image(f["path"]) for f in features])
        if "mu" in features[0]:
            mu = np.array([f["mu"] for f in features], dtype=float)
            var = np.array([f["var"] for f in features], dtype=float)
            batch["mu"] = torch.tensor(mu, dtype=torch.float32)
            batch["var"] = torch.tensor(var, dtype=torch.float32)
            batch["confidence"] = torch.tensor(np.stack([confidence_matrix(mu[:, d], var[:, d])
                                                         for d in range(mu.shape[1])]), dtype=torch.float32)
        if "target" in features[0]:
            batch["target"] = torch.tensor([f["target"] for f in features], dtype=torch.float32)
        return batch


def srcc_metrics(eval_pred, dimensions: Sequence[str] = ("overall",)) -> dict[str, float]:
    """SRCC and PLCC of the scores (N, D) against ground truth (N, D; NaN: unknown), logged as eval_srcc,
    eval_plcc; with several dimensions their means, and eval_srcc_<dimension> etc. per dimension."""
    scores = np.asarray(eval_pred.predictions, float).reshape(-1, len(dimensions))
    target = np.asarray(eval_pred.label_ids, float).reshape(-1, len(dimensions))
    per = {}
    for k, dim in enumerate(dimensions):
        known = np.isfinite(target[:, k])
        s, t = scores[known, k], target[known, k]
        if len(s) < 2 or np.ptp(s) == 0 or np.ptp(t) == 0:
            per[dim] = (math.nan, math.nan)  # undefined (constant scores), as psdistill.evaluation.metrics says
        else:
            per[dim] = (float(spearmanr(s, t)[0]), float(pearsonr(s, t)[0]))
    if len(dimensions) == 1:
        return dict(zip(("srcc", "plcc"), per[dimensions[0]]))
    out = {"srcc": float(np.mean([v[0] for v in per.values()])), "plcc": float(np.mean([v[1] for v in per.values()]))}
    for dim, (srcc, plcc) in per.items():
        out[f"srcc_{dim}"], out[f"plcc_{dim}"] = srcc, plcc
    return out


class DistillTrainer(Trainer):
    """`Trainer` whose loss is the confidence-weighted ranking + calibration loss of `distill_loss`.

    `model` is the VLM (peft-wrapped or not), `readout` turns one forward pass into scores, `series`
    gives each training record's series for the `series` sampler.
    """

    # compute_loss returns a per-batch mean: the Trainer divides it by the accumulation steps (the
    # attribute transformers >= 5.23 documents for Trainer subclasses with their own loss).
    loss_is_scaled_for_ga = False

    def __init__(self, *args, distill_config: DistillConfig, readout: Readout, spec: ScorerSpec,
                 series: Optional[Sequence[str]] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.distill_config = distill_config
        self.readout = readout
        self.spec = spec
        self.series = series
        self._terms: dict[str, list[float]] = defaultdict(list)

    def _get_train_sampler(self, train_dataset=None):
        # No public hook chooses the training sampler; TRL's trainers override this one method too.
        if self.distill_config.sampler == "series" and self.series is not None:
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            return SeriesSampler(self.series, self.distill_config.images_per_series, seed)
        return super()._get_train_sampler(train_dataset)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        cfg = self.distill_config
        mu, var, confidence = inputs.pop("mu"), inputs.pop("var"), inputs.pop("confidence")
        scores = self.readout(model, inputs)  # (B, D)
        # One loss per dimension, each over its own pairs, averaged: dimensions weigh alike.
        parts = [distill_loss(scores[:, d], mu[:, d], var[:, d], confidence[d], ranking=cfg.ranking_loss,
                              weighting=cfg.pair_weighting, temperature=cfg.temperature,
                              calibration=cfg.calibration, calibration_weight=cfg.calibration_weight)
                 for d in range(scores.shape[1])]
        loss, rank, cal = (sum(p[k] for p in parts) / len(parts) for k in ("loss", "rank", "cal"))
        self._terms["loss_rank"].append(rank.item())
        self._terms["loss_cal"].append(cal.item())
        return (loss, {"scores": scores}) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        target = inputs.pop("target")
        with torch.no_grad():
            scores = self.readout(model, inputs)
        return None, scores.detach().float(), target

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        # Add the mean loss terms since the last log (averaged over processes) to the training logs.
        if "loss" in logs and self._terms:
            for key, values in self._terms.items():
                mean = torch.tensor(float(np.mean(values)), device=self.args.device)
                logs[key] = round(self.accelerator.gather(mean).mean().item(), 6)
            self._terms.clear()
        super().log(logs, *args, **kwargs)

    def save_model(self, output_dir: Optional[str] = None, _internal_call: bool = False) -> None:
        # The weights and processor as the Trainer saves them (checkpoints too), plus the spec that makes
        # the folder a scorer.
        super().save_model(output_dir, _internal_call)
        if self.args.should_save:
            self.spec.save(output_dir if output_dir is not None else self.args.output_dir)


def lora_target_modules(cfg: DistillConfig):
    if cfg.lora_target_modules is not None:
        return list(cfg.lora_target_modules)
    return f"({_LANGUAGE_TARGETS}|{_VISION_TARGETS})" if cfg.tune_vision else _LANGUAGE_TARGETS


def build_student(model_cfg: ModelConfig, cfg: DistillConfig, rating_scale: Sequence[float] = DEFAULT_RATING_SCALE):
    """(model, processor) ready to train: head attached, LoRA wrapped or parameters (un)frozen."""
    model, processor = load_4bit(model_cfg) if cfg.tuning == "qlora" else load_vlm(model_cfg)
    if cfg.head == "levels":
        level_token_ids(processor, cfg.level_words, cfg.prompt)  # fail before training, not after
    else:
        attach_score_head(model, rating_scale)
    if cfg.tuning == "full":
        model.requires_grad_(True)
        if not cfg.tune_vision:
            _vision_tower(model).requires_grad_(False)
        if cfg.head == "scalar":
            model.get_output_embeddings().requires_grad_(False)  # lm_head plays no part in a scalar score
        return model, processor
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if cfg.tuning == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=lora_target_modules(cfg),
                      modules_to_save=["score_head"] if cfg.head == "scalar" else None)
    return get_peft_model(model, lora), processor


def _vision_tower(model) -> torch.nn.Module:
    inner = getattr(model, "model", model)
    for name in ("visual", "vision_tower", "vision_model"):
        if hasattr(inner, name):
            return getattr(inner, name)
    raise ConfigError(f"distill.tune_vision: cannot find the vision tower of {type(model).__name__} to freeze; "
                      "set tune_vision: true")


def _train_rows(signal, dimensions: Sequence[str]) -> list[dict]:
    """The ranking objective's rows, one per image (scored in every dimension in one pass): its path and
    pseudo-score means and variances in `dimensions` order. The signal holds one block of rows per
    dimension, each in the same image order."""
    columns = signal.to_dict()
    n = len(columns["image"]) // len(dimensions)
    blocks = range(0, len(columns["image"]), n)
    return [{"path": columns["image"][i],
             "mu": [columns["pseudo_score"][b + i] for b in blocks],
             "var": [columns["variance"][b + i] for b in blocks]} for i in range(n)]


def _training_fingerprint(model_cfg: ModelConfig, cfg: DistillConfig, rows: list[dict], dimension: list) -> str:
    """What decides a checkpoint's meaning: everything but where to resume from."""
    payload = {"model": dataclasses.asdict(model_cfg), "dimension": dimension, "rows": rows,
               "distill": {k: v for k, v in dataclasses.asdict(cfg).items() if k != "resume_from_checkpoint"}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _claim_output_dir(output_dir: Path, fingerprint: str) -> None:
    """Record which training `output_dir`'s checkpoints belong to; drop those of another one, which
    resuming would silently continue (another learning rate, data set or model)."""
    record = output_dir / _FINGERPRINT_FILE
    if record.is_file() and record.read_text().strip() != fingerprint:
        stale = sorted(output_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*"))
        if stale:
            logger.warning("%s: %d checkpoint(s) of another training config; starting fresh", output_dir, len(stale))
        for ckpt in stale:
            shutil.rmtree(ckpt)
    output_dir.mkdir(parents=True, exist_ok=True)
    record.write_text(fingerprint + "\n")


def _resume_point(cfg: DistillConfig, output_dir: Path):
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


def _log_metrics_instead_of_printing(trainer: Trainer) -> None:
    if trainer.pop_callback(PrinterCallback) is not None:  # disable_tqdm=True
        trainer.add_callback(_LogMetrics)
    # Only where the bar is drawn: swapped on the other ranks too, rank 1 of a 2-process gloo run aborted
    # at exit ("terminate called without an active exception"), every time; the cause is not found yet.
    if trainer.is_world_process_zero() and trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(_LoggedProgress)


def train_student(train_records: Sequence[ImageRecord], pseudo_scores: Mapping[str, Mapping[str, Sequence[float]]],
                  model_cfg: ModelConfig, cfg: DistillConfig, output_dir, val_records: Optional[Sequence[ImageRecord]] = None,
                  callbacks: Optional[list] = None, rating_scale: Sequence[float] = DEFAULT_RATING_SCALE,
                  labels: Optional[LabelSource] = None) -> Path:
    """Train one student on `pseudo_scores` ({dimension: {id: (mean, variance)}} on `rating_scale`) that
    scores every dimension in one pass per image (`scorer.Readout`), and save it.

    `val_records` with ground truth in `scores[dimension]` are scored every `cfg.eval_steps` (and at
    the start), logged as eval_srcc / eval_plcc (per dimension too, with several). Returns `output_dir`, which holds the adapter (or full
    weights), the processor, `scorer_config.json` and the trainer state; `checkpoint-N/` folders are
    scorers too. Works the same in one process and under `accelerate launch`. `callbacks` are extra
    `transformers.TrainerCallback`s (early stopping, timing, ...). `labels` (which judge gave the
    pseudo-scores, whether simulated) goes into the folder's model card (`card.py`). `cfg.objective ==
    "grpo"` trains the same scorer by GRPO instead (grpo.py).
    """
    if cfg.objective == "grpo":
        from psdistill.distill.grpo import train_grpo  # imports trl

        return train_grpo(train_records, pseudo_scores, model_cfg, cfg, output_dir, val_records, callbacks,
                          rating_scale, labels)
    output_dir = Path(output_dir)
    dims = list(pseudo_scores)
    if not dims:
        raise DataError("train_student: no pseudo-scores given (pseudo_scores has no dimension)")
    weights = "full" if cfg.tuning == "full" else "adapter"
    spec = ScorerSpec.from_config(model_cfg, cfg, dims, weights=weights, name="psdistill", rating_scale=rating_scale)
    set_seed(cfg.seed)  # LoRA and scalar-head initialisation happen before the Trainer seeds
    model, processor = build_student(model_cfg, cfg, rating_scale)
    signal = training_signal(train_records, pseudo_scores, spec.prompts)
    train_rows = _train_rows(signal, dims)
    val_rows = [{"path": r.path, "target": [r.score(d) for d in dims]} for r in (val_records or [])
                if any(math.isfinite(r.score(d)) for d in dims)]
    fingerprint = _training_fingerprint(model_cfg, cfg, train_rows + val_rows, [dims, list(rating_scale)])
    main_process_only(lambda: _claim_output_dir(output_dir, fingerprint))
    readout = Readout(spec, processor)
    trainer = DistillTrainer(
        model=model, args=cfg.to_training_arguments(output_dir, with_eval=bool(val_rows)),
        train_dataset=train_rows, eval_dataset=val_rows or None,
        data_collator=DistillCollator(processor, readout.text), processing_class=processor,
        compute_metrics=partial(srcc_metrics, dimensions=dims) if val_rows else None,
        distill_config=cfg, readout=readout, spec=spec,
        series=list(signal["series"])[:len(train_rows)], callbacks=callbacks,  # one block's: one per image
    )
    _log_metrics_instead_of_printing(trainer)
    # torch.save and safetensors name neither the file nor the cause of a failed checkpoint write.
    with writing(output_dir, needed=_checkpoint_bytes(model)):
        trainer.train(resume_from_checkpoint=_resume_point(cfg, output_dir))
        trainer.save_model(str(output_dir))
        trainer.save_state()
        # The other ranks wait for these files: one that left early tore its process group down while rank 0
        # still wrote, aborted at exit (gloo) and had the launcher kill rank 0 mid-write.
        main_process_only(lambda: _write_record_and_card(output_dir, spec, processor, len(train_rows), labels))
    return output_dir


def _write_record_and_card(output_dir, spec, processor, n_images: int, labels) -> None:
    """What a finished student folder has beside its weights (both objectives): the base model's record and
    the model card."""
    record_base_model(output_dir, spec)
    write_model_card(output_dir, spec, processor, n_images, labels)


def _checkpoint_bytes(model: torch.nn.Module) -> int:
    """About what one checkpoint takes: the weights, and AdamW's two fp32 moments per trained parameter."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return weights + sum(2 * 4 * p.numel() for p in model.parameters() if p.requires_grad)
