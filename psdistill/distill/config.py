"""`DistillConfig`: the `distill:` section of a pipeline config.

Built on `transformers.TrainingArguments` the way TRL's configs are, field by field: the training
fields below are TrainingArguments' own names and meanings, redeclared with our defaults and help
(as TRL's `_BaseConfig` redeclares `logging_steps` and `bf16`), and `training_kwargs` hands every
field whose name TrainingArguments has to it by that name (no map to keep in step); any other
TrainingArguments field goes through `training_args` (checked by name). Not a subclass: constructing a TrainingArguments
resets and sets up accelerate's distributed state (`__post_init__` reads `self.device`) and rewrites
fields from the environment (`disable_tqdm` from the log level, `report_to: all` from the installed
loggers); a pipeline config is built in every process of a run, by `--help` and by tests, and its
`distill` section is fingerprinted (pipeline/runner.py) and saved to config.yaml, so it holds only
what the user wrote. The TrainingArguments of a run are built when it trains (`to_training_arguments`).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
from dataclasses import dataclass, field
from typing import Optional

from psdistill.core.errors import ConfigError
from psdistill.distill.grpo_config import GrpoConfig
from psdistill.distill.objectives import OBJECTIVES
from psdistill.scoring.spec import (DEFAULT_LEVEL_VALUES, DEFAULT_LEVEL_WORDS, DEFAULT_PROMPT, HEADS, ReadoutConfig,
                                    check_levels, render_prompts)

RANKING_LOSSES = ("pairwise", "listnet", "listmle")
PAIR_WEIGHTINGS = ("margin", "soft")
CALIBRATIONS = ("mse", "gaussian_nll", "none")
SAMPLERS = ("series", "random")
TUNINGS = ("lora", "qlora", "full")
# Fields DistillTrainer sets itself; setting them through `training_args` would break it.
_RESERVED = {"output_dir", "remove_unused_columns", "label_names", "include_for_metrics", "prediction_loss_only"}
# TrainingArguments fields of the same name but another meaning here: "last" is resolved by job.resume_point.
_NOT_PASSED = {"resume_from_checkpoint"}


@dataclass
class DistillConfig:
    """How the single-pass student is built and trained from pseudo-scores.

    Groups (defaults differing from `TrainingArguments` are marked *):
    - objective: `objective`, `grpo` (the grpo objective's knobs, grpo_config.py)
    - head and prompt: `head`, `level_words`, `level_values`, `prompt` (the rating scale is the data's:
      `data.rating_scale`, passed to `train_student`)
    - loss: `ranking_loss`, `pair_weighting`, `temperature`, `calibration`, `calibration_weight`
    - batches: `sampler`, `images_per_series`
    - tuning: `tuning`, `tune_vision`, `lora_r`, `lora_alpha`, `lora_dropout`, `lora_target_modules`
    - optimisation (passed to TrainingArguments by name; warmup_ratio and gradient_checkpointing under
      transformers 5's names warmup_steps and activation_checkpointing): `learning_rate`* (1e-4),
      `num_train_epochs`, `max_steps`, `per_device_train_batch_size`, `per_device_eval_batch_size`* (16),
      `gradient_accumulation_steps`, `warmup_ratio`* (0.05), `lr_scheduler_type`* (cosine), `weight_decay`,
      `max_grad_norm`, `seed`* (0), `bf16`* (auto), `gradient_checkpointing`
    - bookkeeping: `logging_steps`* (10), `eval_steps`* (50), `save_steps`* (100),
      `save_total_limit`* (2), `report_to`* (tensorboard), `resume_from_checkpoint`* (last),
      `dataloader_num_workers`, `training_args`
    """

    # --- objective
    objective: str = field(default="ranking", metadata={"help": (
        "A key of distill/objectives.py's OBJECTIVES. 'ranking': the confidence-weighted ranking + calibration loss on the levels readout (trainer.py). "
        "'grpo': confidence-weighted GRPO through TRL: the VLM answers with level words, rewarded by closeness "
        "to the pseudo-score and by order agreement, with a KL term to the base model (grpo.py, distill.grpo). "
        "Either way the output folder is the same levels scorer.")})
    grpo: GrpoConfig = field(default_factory=GrpoConfig)
    # --- head and prompt
    head: str = field(default="levels", metadata={"help": (
        "'levels': expected value over the next-token probabilities of the level words after the prompt "
        "(Q-Align style, no new parameters: the student is the same VLM). 'scalar': a linear head on the "
        "last token's final hidden state.")})
    level_words: list[str] = field(default_factory=lambda: list(DEFAULT_LEVEL_WORDS), metadata={
        "help": (
            "Answer words of the 'levels' head (Q-Align's five levels), read right after the generation prompt, "
            "where a one-word answer starts: each must be one token there (checked when the model's processor is "
            "loaded). Capitalised because in Qwen3's vocabulary 'excellent' and 'poor' are two tokens each; "
            "Q-Align itself reads ' excellent' etc. with a leading space after an answer prefix.")})
    level_values: list[float] = field(default_factory=lambda: list(DEFAULT_LEVEL_VALUES), metadata={
        "help": "Value of each level word; min..max is mapped linearly onto the rating scale."})
    prompt: str = field(default=DEFAULT_PROMPT, metadata={
        "help": "User text after the image; '{dimension}' is replaced by the dimension name (needed with several "
                "data.dimensions: each dimension's prompt must differ)."})
    # --- loss
    ranking_loss: str = field(default="pairwise", metadata={"help": (
        "'pairwise' (confidence-weighted Bradley-Terry over all pairs of a batch), 'listnet' or 'listmle'.")})
    pair_weighting: str = field(default="margin", metadata={"help": (
        "'margin': pairs ordered by pseudo-score, weight |2c-1| (c = 0.5 pairs count for nothing); "
        "'soft': cross-entropy against the confidence c.")})
    temperature: float = field(default=1.0, metadata={
        "help": "T in sigmoid((f_i - f_j) / T), in rating-scale units."})
    calibration: str = field(default="mse", metadata={"help": (
        "Term that keeps outputs on the rating scale: 'mse', 'gaussian_nll' (weighted by the "
        "pseudo-score variance) or 'none'.")})
    calibration_weight: float = field(default=0.1, metadata={"help": "Weight of the calibration term."})
    # --- batches
    sampler: str = field(default="series", metadata={"help": (
        "'series': each batch holds groups of images_per_series images from one series (fine, within-"
        "series pairs) drawn from several series and categories (coarse pairs); 'random': uniform.")})
    images_per_series: int = field(default=2, metadata={"help": "Group size of the 'series' sampler."})
    # --- tuning
    tuning: str = field(default="lora", metadata={"help": (
        "'lora', 'qlora' (4-bit NF4 base via bitsandbytes, GPU or CPU: psdistill/models/quant.py) or 'full' fine-tuning.")})
    tune_vision: bool = field(default=False, metadata={"help": (
        "Also adapt the vision tower (LoRA on its linear layers, or train it under 'full'); frozen otherwise.")})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (scale alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: Optional[list[str]] = field(default=None, metadata={"help": (
        "peft target_modules; default: the language model's attention and MLP projections (plus the "
        "vision tower's with tune_vision). Given explicitly, used as is.")})
    # --- optimisation (same names and meanings as transformers.TrainingArguments)
    learning_rate: float = field(default=1e-4, metadata={"help": "Peak learning rate (AdamW)."})
    num_train_epochs: float = field(default=3.0, metadata={"help": "Epochs, when max_steps is -1."})
    max_steps: int = field(default=-1, metadata={"help": "Optimizer steps; overrides num_train_epochs when > 0."})
    per_device_train_batch_size: int = field(default=8, metadata={
        "help": "Images per device per step; pairs are formed inside it, so at least 2."})
    per_device_eval_batch_size: int = field(default=16, metadata={"help": "Images per device when validating."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Batches accumulated per optimizer step."})
    warmup_ratio: float = field(default=0.05, metadata={"help": "Share of the steps with linear warmup."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "transformers scheduler name."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm."})
    seed: int = field(default=0, metadata={"help": "Seed of LoRA/head initialisation, sampling and dropout."})
    bf16: Optional[bool] = field(default=None, metadata={
        "help": "bf16 mixed precision; default: on where CUDA supports it, off on CPU."})
    gradient_checkpointing: bool = field(default=False, metadata={
        "help": "Recompute activations in backward (less memory, ~20-30% slower)."})
    # --- bookkeeping
    logging_steps: int = field(default=10, metadata={"help": "Steps between loss logs."})
    eval_steps: int = field(default=50, metadata={"help": "Steps between validation SRCC evaluations (eval_srcc)."})
    save_steps: int = field(default=100, metadata={"help": "Steps between checkpoints (output_dir/checkpoint-N)."})
    save_total_limit: Optional[int] = field(default=2, metadata={"help": "Checkpoints kept (null: all)."})
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"], metadata={
        "help": "Loggers: 'tensorboard', 'wandb' (must be installed), or 'none'."})
    resume_from_checkpoint: Optional[str] = field(default="last", metadata={"help": (
        "'last': continue from the newest complete checkpoint in the output folder if there is one, so a "
        "killed or requeued run picks up where it stopped (checkpoints of another config or data set are "
        "discarded, never resumed); a checkpoint folder; null: always start fresh.")})
    dataloader_num_workers: int = field(default=0, metadata={"help": "Image-loading worker processes."})
    training_args: dict = field(default_factory=dict, metadata={
        "help": "Any other transformers.TrainingArguments field, by name (e.g. {optim: adamw_torch_fused})."})

    def __post_init__(self):
        def bad(name, msg):
            raise ConfigError(f"distill.{name}: {msg}")

        if isinstance(self.grpo, dict):  # DistillConfig(grpo={...}) in Python, as a YAML mapping reads
            from psdistill.core.config import from_dict

            self.grpo = from_dict(GrpoConfig, self.grpo, "distill.grpo.")
        for name, allowed in (("objective", OBJECTIVES), ("head", HEADS), ("ranking_loss", RANKING_LOSSES),
                              ("pair_weighting", PAIR_WEIGHTINGS),
                              ("calibration", CALIBRATIONS), ("sampler", SAMPLERS), ("tuning", TUNINGS)):
            if getattr(self, name) not in allowed:
                bad(name, f"{getattr(self, name)!r} is not one of {', '.join(allowed)}")
        if self.objective == "grpo" and self.head != "levels":
            bad("head", f"{self.head!r} with objective 'grpo': GRPO rewards level-word answers, which only the "
                "'levels' head reads; use head: levels or objective: ranking")
        check_levels(self.level_words, self.level_values)
        if not self.prompt.strip():
            bad("prompt", "is empty")
        for name in ("temperature", "learning_rate", "lora_alpha", "lora_r", "logging_steps", "eval_steps",
                     "save_steps", "per_device_eval_batch_size", "gradient_accumulation_steps",
                     "images_per_series", "num_train_epochs", "max_grad_norm"):
            if not getattr(self, name) > 0:
                bad(name, f"must be > 0, got {getattr(self, name)}")
        for name in ("calibration_weight", "weight_decay", "dataloader_num_workers"):
            if getattr(self, name) < 0:
                bad(name, f"must be >= 0, got {getattr(self, name)}")
        if self.per_device_train_batch_size < 2:
            bad("per_device_train_batch_size", f"pairs are formed inside a batch, so at least 2, got "
                f"{self.per_device_train_batch_size}")
        if not 0 <= self.lora_dropout < 1:
            bad("lora_dropout", f"must be in [0, 1), got {self.lora_dropout}")
        if not 0 <= self.warmup_ratio < 1:
            bad("warmup_ratio", f"must be in [0, 1), got {self.warmup_ratio}")
        if self.max_steps == 0 or self.max_steps < -1:
            bad("max_steps", f"must be -1 (use num_train_epochs) or > 0, got {self.max_steps}")
        if self.save_total_limit is not None and self.save_total_limit < 1:
            bad("save_total_limit", f"must be >= 1 or null, got {self.save_total_limit}")
        if "wandb" in self.report_to and importlib.util.find_spec("wandb") is None:
            bad("report_to", "'wandb' asked for but not installed (pip install wandb), or drop it")
        known = {f.name for f in dataclasses.fields(_training_arguments_cls())} if self.training_args else set()
        for key in self.training_args:
            if key in _RESERVED or key in {f.name for f in dataclasses.fields(self)}:
                bad(f"training_args.{key}", "is set by psdistill (or is a distill field); remove it here")
            if key not in known:
                bad(f"training_args.{key}", "is not a transformers.TrainingArguments field")

    def rendered_prompt(self, dimension: str) -> str:
        return self.prompt.replace("{dimension}", dimension)

    def rendered_prompts(self, dimensions) -> dict[str, str]:
        """{dimension: its prompt}, in order; several dimensions need '{dimension}' in the prompt."""
        return render_prompts(self.prompt, dimensions)

    def readout_config(self, dimensions) -> ReadoutConfig:
        """What the scorer trained from this config reads for `dimensions` (psdistill.scoring.spec)."""
        return ReadoutConfig.from_template(self.prompt, dimensions, self.head, self.level_words, self.level_values)

    def to_training_arguments(self, output_dir, with_eval: bool):
        """The `TrainingArguments` for one run; `with_eval` turns on validation every `eval_steps`."""
        return _training_arguments_cls()(**self.training_kwargs(output_dir, with_eval))

    def training_kwargs(self, output_dir, with_eval: bool) -> dict:
        """`to_training_arguments`' keyword arguments, for a `TrainingArguments` subclass too (TRL's GRPOConfig):
        every field TrainingArguments also has, by name; then what follows from the machine and the run."""
        import torch

        names = {f.name for f in dataclasses.fields(_training_arguments_cls()) if f.init} - _NOT_PASSED
        kwargs = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name in names}
        kwargs.update(
            output_dir=str(output_dir), save_strategy="steps",
            bf16=self.bf16 if self.bf16 is not None else bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported()),
            dataloader_pin_memory=torch.cuda.is_available(),  # pinning needs an accelerator (else a warning per run)
            eval_strategy="steps" if with_eval else "no", eval_on_start=with_eval,
            # The collator needs the image paths and pseudo-scores, which are no model arguments.
            remove_unused_columns=False, label_names=["target"],
            # Every trainable parameter is used in each forward; saying so skips DDP's graph walk, which
            # would also miss the scalar head (applied to the model's outputs, outside its forward).
            ddp_find_unused_parameters=False,
            # transformers 5 names: a float warmup_steps below 1 is a ratio; activation_checkpointing.
            warmup_steps=float(self.warmup_ratio), activation_checkpointing=self.gradient_checkpointing,
        )
        if self.gradient_checkpointing:
            # Non-reentrant checkpointing works with frozen inputs (LoRA) without enable_input_require_grads.
            kwargs["activation_checkpointing_kwargs"] = {"use_reentrant": False}
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
            # Ranks launched by accelerate/torchrun on CPU: without use_cpu accelerate sees no device to
            # distribute over and every rank trains alone; with it they form one gloo DDP group.
            kwargs["use_cpu"] = True
        kwargs.update(self.training_args)
        return kwargs


def _training_arguments_cls():
    from transformers import TrainingArguments

    return TrainingArguments
