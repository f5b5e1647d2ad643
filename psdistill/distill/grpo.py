"""The `grpo` objective: confidence-weighted GRPO through TRL's `GRPOTrainer` (trl 1.16).

The policy is the student VLM as the ranking objective builds it (`job.start`: LoRA by default),
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

import logging
import shutil
from pathlib import Path
from typing import Optional, Sequence

from trl import GRPOConfig, GRPOTrainer

from psdistill.core.errors import ConfigError
from psdistill.distill.config import DistillConfig
from psdistill.distill.job import TrainingJob, claim_output_dir, fit, start
from psdistill.distill.rewards import GrpoRewards, LevelAnswers
from psdistill.distill.signal import with_images
from psdistill.models.device import main_process_only
from psdistill.scoring.readout import Readout
from psdistill.scoring.spec import ScorerSpec

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
    """The `trl.GRPOConfig` of a run: DistillConfig's training fields, then distill.grpo's (by name)."""
    g = cfg.grpo
    kwargs = cfg.training_kwargs(output_dir, with_eval=False)  # gradient_checkpointing too: TRL defaults it to on
    # Our batch counts images, TRL's completions: each image's G answers form one group.
    kwargs["per_device_train_batch_size"] = cfg.per_device_train_batch_size * g.num_generations
    kwargs.update(g.trl_kwargs())
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
    """TRL loads a fully tuned policy's reference from the config's `name_or_path`; a model built in memory
    (the tiny one) has none, so its frozen start is saved to `output_dir/reference_model` first.
    (LoRA needs no copy: the reference is the model with the adapter disabled.)"""
    if cfg.tuning != "full" or cfg.grpo.beta == 0 or model.config.name_or_path:
        return
    folder = output_dir / _REFERENCE_DIR
    main_process_only(lambda: model.save_pretrained(folder))
    model.config.name_or_path = str(folder)


def train_grpo(job: TrainingJob) -> Path:
    """The grpo objective (objectives.OBJECTIVES["grpo"]). `job.val_records` are not scored during training
    here (TRL's evaluation generates answers; the score stage measures)."""
    if job.val_records:
        logger.info("distill.objective=grpo: no validation SRCC during training; the evaluate stage reports it")
    cfg = job.cfg
    student = start(job)
    claim_output_dir(job, student.signal.to_list())
    _reference(student.model, cfg, job.output_dir)
    readout = Readout(student.spec, student.processor)
    answers = LevelAnswers(tuple(student.spec.level_words), tuple(readout.values.tolist()))
    scale = (float(job.rating_scale[0]), float(job.rating_scale[1]))
    rewards = GrpoRewards(answers, scale, cfg.grpo.unparseable_reward)
    trainer = ScorerGRPOTrainer(
        model=student.model, reward_funcs=rewards.functions(),
        args=grpo_arguments(cfg, job.output_dir, student.processor, readout.token_ids.tolist()),
        train_dataset=grpo_dataset(student.signal), processing_class=student.processor, callbacks=job.callbacks,
        spec=student.spec)
    # The reference copy is saved again if a rerun needs it.
    return fit(trainer, job, student, len(job.records), scratch=[job.output_dir / _REFERENCE_DIR])
