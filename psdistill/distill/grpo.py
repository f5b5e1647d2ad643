"""The `grpo` objective: confidence-weighted GRPO through TRL's `GRPOTrainer` (trl 1.16).

The policy is the student VLM as the ranking objective builds it (`build_student`: LoRA by default),
prompted with each training row's own scoring prompt and image; it samples G answers per image, which
`rewards.py` scores against the pseudo-scores (closeness, order agreement, both confidence-weighted);
TRL turns them into group-relative advantages and adds beta x KL to the frozen base model. With
`grpo.constrain_answer` and one-token answers the sampled distribution is the levels head's softmax
over the level words, so GRPO trains exactly what the scorer reads; the output folder is the same
scorer (`scorer_config.json`, levels head) as the ranking objective's, and `psdistill score`, the
score stage and the evaluation read it unchanged. Rows may be of several dimensions (each has its
prompt; order agreement pairs rows of the same dimension only).
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path
from typing import Mapping, Optional, Sequence

from transformers import set_seed
from trl import GRPOConfig, GRPOTrainer

from psdistill.data.records import DEFAULT_RATING_SCALE, ImageRecord
from psdistill.distill.card import LabelSource
from psdistill.distill.config import DistillConfig
from psdistill.distill.rewards import GrpoRewards, LevelAnswers
from psdistill.scoring.readout import Readout
from psdistill.scoring.spec import ScorerSpec
from psdistill.distill.signal import training_signal, with_images
from psdistill.distill.trainer import (
    _claim_output_dir, _log_metrics_instead_of_printing, _resume_point, _training_fingerprint, _write_record_and_card,
    build_student,
)
from psdistill.core.errors import ConfigError
from psdistill.models.device import main_process_only
from psdistill.models.loading import ModelConfig

logger = logging.getLogger(__name__)

_REFERENCE_DIR = "reference_model"  # the frozen base, for a fully tuned policy built in memory (see _reference)


class ScorerGRPOTrainer(GRPOTrainer):
    """`GRPOTrainer` whose saved folders (checkpoints too) are scorers: weights, processor and `spec`."""

    def __init__(self, *args, spec: ScorerSpec, **kwargs):
        super().__init__(*args, **kwargs)
        self.spec = spec

    def save_model(self, output_dir: Optional[str] = None, _internal_call: bool = False) -> None:
        super().save_model(output_dir, _internal_call)
        if self.args.should_save:
            folder = Path(output_dir if output_dir is not None else self.args.output_dir)
            # TRL's "ref" adapter (a copy of the fresh LoRA, i.e. the base) is rebuilt at start, resume included:
            # a scorer folder needs only the trained one.
            shutil.rmtree(folder / "ref", ignore_errors=True)
            self.spec.save(folder)


def grpo_arguments(cfg: DistillConfig, output_dir, processor, level_ids: Sequence[int]) -> GRPOConfig:
    """The `trl.GRPOConfig` of a run: DistillConfig's training fields, then distill.grpo's."""
    g = cfg.grpo
    kwargs = cfg.training_kwargs(output_dir, with_eval=False)
    kwargs["gradient_checkpointing"] = cfg.gradient_checkpointing  # TRL's configs default it to on
    # Our batch counts images, TRL's completions: each image's G answers form one group.
    kwargs["per_device_train_batch_size"] = cfg.per_device_train_batch_size * g.num_generations
    kwargs.update(num_generations=g.num_generations, beta=g.beta, temperature=g.temperature,
                  max_completion_length=g.max_completion_length, reward_weights=list(g.reward_weights))
    kwargs.update(g.args)
    if g.constrain_answer:
        allowed = set(level_ids)
        generation = dict(kwargs.get("generation_kwargs") or {})
        generation["begin_suppress_tokens"] = [t for t in range(len(processor.tokenizer)) if t not in allowed]
        kwargs["generation_kwargs"] = generation
    try:
        return GRPOConfig(**kwargs)
    except ValueError as e:  # TRL's own consistency checks (batch sizes, loss types, ...)
        raise ConfigError(f"distill.grpo: trl.GRPOConfig rejects the settings: {e}") from None


def grpo_dataset(signal):
    """The training signal as TRL wants it: a conversational `prompt` (the row's own scoring prompt, the
    image placed before it as the scorer renders it) and a decoded `image`; the other columns go to the
    reward functions."""
    return with_images(signal.map(lambda text: {"prompt": [{"role": "user", "content": text}]},
                                  input_columns="prompt"))


def _reference(model, cfg: DistillConfig, output_dir: Path) -> None:
    """TRL loads a fully tuned policy's reference from its config's `name_or_path`; a model built in memory
    (the tiny one) has none, so its frozen start is saved to `output_dir/reference_model` first.
    (LoRA needs no copy: the reference is the model with the adapter disabled.)"""
    if cfg.tuning != "full" or cfg.grpo.beta == 0 or model.config.name_or_path:
        return
    folder = output_dir / _REFERENCE_DIR
    main_process_only(lambda: model.save_pretrained(folder))
    model.config.name_or_path = str(folder)


def train_grpo(train_records: Sequence[ImageRecord], pseudo_scores: Mapping[str, Mapping[str, Sequence[float]]],
               model_cfg: ModelConfig, cfg: DistillConfig, output_dir,
               val_records: Optional[Sequence[ImageRecord]] = None, callbacks: Optional[list] = None,
               rating_scale: Sequence[float] = DEFAULT_RATING_SCALE, labels: Optional[LabelSource] = None) -> Path:
    """`train_student` for `cfg.objective == "grpo"` (same arguments, same output folder). `val_records`
    are not scored during training here (TRL's evaluation generates answers; the score stage measures)."""
    output_dir = Path(output_dir)
    if val_records:
        logger.info("distill.objective=grpo: no validation SRCC during training; the evaluate stage reports it")
    dims = list(pseudo_scores)
    set_seed(cfg.seed)  # LoRA initialisation happens before the trainer seeds
    model, processor = build_student(model_cfg, cfg, rating_scale)
    weights = "full" if cfg.tuning == "full" else "adapter"
    spec = ScorerSpec.build(model_cfg, cfg.readout_config(dims), weights=weights, name="psdistill",
                            rating_scale=rating_scale, distill_config=dataclasses.asdict(cfg))
    signal = training_signal(train_records, pseudo_scores, spec.prompts)
    fingerprint = _training_fingerprint(model_cfg, cfg, signal.to_list(), [dims, list(rating_scale)])
    main_process_only(lambda: _claim_output_dir(output_dir, fingerprint))
    _reference(model, cfg, output_dir)
    readout = Readout(spec, processor)
    answers = LevelAnswers(tuple(spec.level_words), tuple(readout.values.tolist()))
    rewards = GrpoRewards(answers, (float(rating_scale[0]), float(rating_scale[1])), cfg.grpo.unparseable_reward)
    trainer = ScorerGRPOTrainer(
        model=model, reward_funcs=rewards.functions(),
        args=grpo_arguments(cfg, output_dir, processor, readout.token_ids.tolist()),
        train_dataset=grpo_dataset(signal), processing_class=processor, callbacks=callbacks, spec=spec)
    _log_metrics_instead_of_printing(trainer)
    trainer.train(resume_from_checkpoint=_resume_point(cfg, output_dir))
    trainer.save_model(str(output_dir))
    trainer.save_state()

    def finish():  # on rank 0, the others waiting (train_student says why)
        shutil.rmtree(output_dir / _REFERENCE_DIR, ignore_errors=True)  # saved again if a rerun needs it
        _write_record_and_card(output_dir, spec, processor, len(train_records), labels)
    main_process_only(finish)
    return output_dir
