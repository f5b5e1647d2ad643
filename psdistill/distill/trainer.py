"""The ranking objective: `DistillTrainer` (a `transformers.Trainer`) and `train_ranking`, which
`train_student` (job.py) runs for `distill.objective: ranking`.

The Trainer brings accelerate (DDP, DeepSpeed), gradient accumulation, schedulers, checkpoints,
resume and logging; this module adds the data path (image records -> processor inputs + pseudo-scores),
a sampler that makes in-batch pairs informative, the loss (`losses.py`), validation SRCC, and
saving in the scorer format (psdistill/scoring/student.py). Not TRL's `RewardTrainer` (trl 1.16): it takes text
chosen/rejected pairs through a tokenizer into a sequence-classification head, where this trains on
images with pseudo-scores, forms confidence-weighted pairs inside each batch, and reads the score from
the VLM's own level-word logits. Its conventions (config dataclass + `Trainer` subclass, loss in
`compute_loss`) are followed. Launch, one process or many:

    accelerate launch --config_file launch/<x>.yaml recipes/distill.py --config recipes/configs/<y>.yaml
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from accelerate.utils import send_to_device
from scipy.stats import pearsonr, spearmanr
from transformers import Trainer

from psdistill.data.images import load_image
from psdistill.distill.config import DistillConfig
from psdistill.distill.job import TrainingJob, claim_output_dir, fit, start
from psdistill.distill.losses import confidence_matrix, distill_loss
from psdistill.scoring.readout import Readout, processor_inputs
from psdistill.scoring.spec import ScorerSpec


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
        # transformers 5 has no public way to choose the training sampler short of rewriting
        # get_train_dataloader; TRL's GRPOTrainer overrides this method too. test_distill_train checks
        # that the Trainer's train dataloader still asks it.
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
        # Usually already there (the Trainer prepares its dataloaders). Unlike the Trainer's private
        # _prepare_inputs this keeps float dtypes under DeepSpeed: Qwen-VL casts pixel_values to its own.
        inputs = send_to_device(inputs, self.args.device)
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


def train_ranking(job: TrainingJob) -> Path:
    """The ranking objective (objectives.OBJECTIVES["ranking"]): `DistillTrainer` on one row per image."""
    student = start(job)
    dims = job.dimensions
    train_rows = _train_rows(student.signal, dims)
    val_rows = [{"path": r.path, "target": [r.score(d) for d in dims]} for r in job.val_records
                if any(math.isfinite(r.score(d)) for d in dims)]
    claim_output_dir(job, train_rows + val_rows)
    readout = Readout(student.spec, student.processor)
    trainer = DistillTrainer(
        model=student.model, args=job.cfg.to_training_arguments(job.output_dir, with_eval=bool(val_rows)),
        train_dataset=train_rows, eval_dataset=val_rows or None,
        data_collator=DistillCollator(student.processor, readout.text), processing_class=student.processor,
        compute_metrics=partial(srcc_metrics, dimensions=dims) if val_rows else None,
        distill_config=job.cfg, readout=readout, spec=student.spec,
        series=list(student.signal["series"])[:len(train_rows)], callbacks=job.callbacks,  # one block's: one per image
    )
    return fit(trainer, job, student, len(train_rows))
