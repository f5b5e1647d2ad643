"""RewardFinetuneConfig: a diffusers generator fine-tuned on a scorer's reward (DRaFT-K / AlignProp).

Groups:
- `generator`: the diffusion model ("tiny": a random UNet2DModel built locally; "tiny-sd": a random
  Stable-Diffusion-style text-to-image one; or a hub id / folder of either layout), its DDIM sampling (eta 0:
  deterministic, so a seed is an image) and classifier-free guidance;
- `lora`: the adapter on the UNet (peft);
- `train`: the prompts (text-to-image), the truncated backpropagation (K), optimisation, the KL /
  reference-image penalties, early stop;
- `eval`: the fixed held-out (prompt, seed) pairs and how often they are scored.

Defaults are the CPU demo's; DRaFT-K's paper (Clark et al. 2024, arXiv 2309.17400) uses K=1 with DDPM-style
sampling on Stable Diffusion, AlignProp (Prabhudesai et al. 2023, arXiv 2310.03739) K in 1..T with gradient
checkpointing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from psdistill.core.errors import ConfigError

LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2")


@dataclass
class GeneratorConfig:
    model: str = field(default="tiny", metadata={
        "help": "'tiny' (a random UNet2DModel, saved to <run_dir>/base), 'tiny-sd' (a random text-to-image "
                "pipeline, likewise), or a hub id / folder of an unconditional pixel-space pipeline with unet/ "
                "(UNet2DModel) and scheduler/ (e.g. google/ddpm-cifar10-32) or of a Stable-Diffusion-style one "
                "with unet/ (UNet2DConditionModel), vae/, text_encoder/, tokenizer/, scheduler/ (e.g. "
                "stable-diffusion-v1-5/stable-diffusion-v1-5)"})
    resolution: int = field(default=64, metadata={
        "help": "'tiny' / 'tiny-sd' only (a hub UNet has its own sample_size): side in pixels; a multiple of 32 "
                "is a size Qwen-VL's smart_resize keeps, so the reward sees the generated pixels unresized"})
    seed: int = field(default=0, metadata={"help": "random weights of 'tiny' / 'tiny-sd' and the adapter's "
                                                   "initial lora_A"})
    steps: int = field(default=8, metadata={"help": "DDIM sampling steps T"})
    timestep_spacing: Literal["trailing", "leading", "linspace"] = field(default="trailing", metadata={
        "help": "DDIM's; 'leading' ends at t=0, where the image barely depends on the UNet (then K >= 2)"})
    guidance_scale: float = field(default=1.0, metadata={
        "help": "text-to-image: classifier-free guidance, uncond + scale * (text - uncond) with the empty prompt "
                "as unconditional (diffusers' convention); 1.0: none (one UNet pass per step instead of two)"})

    def __post_init__(self):
        if self.resolution < 8 or self.resolution % 8:
            raise ConfigError(f"generator.resolution: a multiple of 8 (>= 8), got {self.resolution}")
        if self.steps < 1:
            raise ConfigError(f"generator.steps: must be >= 1, got {self.steps}")
        if self.guidance_scale < 1:
            raise ConfigError(f"generator.guidance_scale: must be >= 1 (1: no guidance), got {self.guidance_scale}")


def read_prompts(inline: tuple[str, ...], file: Optional[str], key: str) -> list[str]:
    """`inline` then the file's lines (one prompt a line, blank lines skipped); a missing or empty file, or a
    blank inline prompt, is one line of error naming it."""
    blank = next((i for i, p in enumerate(inline) if not p.strip()), None)
    if blank is not None:
        raise ConfigError(f"{key}.prompts[{blank}]: an empty prompt (the empty prompt is guidance's unconditional)")
    prompts = [p.strip() for p in inline]
    if file is not None:
        path = Path(file)
        if not path.is_file():
            raise ConfigError(f"{key}.prompts_file {file}: no such file")
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not lines:
            raise ConfigError(f"{key}.prompts_file {file}: no prompts in it (one prompt a line)")
        prompts += lines
    return prompts


@dataclass
class GeneratorLoraConfig:
    r: int = 4
    alpha: float = 4.0
    target_modules: tuple[str, ...] = field(default=LORA_TARGETS, metadata={
        "help": "UNet module names (suffixes) the adapter wraps: attention projections and the resnets' convs"})

    def __post_init__(self):
        if self.r < 1:
            raise ConfigError(f"lora.r: must be >= 1, got {self.r}")
        if not self.target_modules:
            raise ConfigError("lora.target_modules: empty")


@dataclass
class DraftTrainConfig:
    prompts: tuple[str, ...] = field(default=(), metadata={
        "help": "text-to-image: training prompts inline, e.g. '[a red barn, a calm lake]' (with prompts_file: "
                "both); the batch's image j of step s takes prompt (s * batch_size + j) mod their number"})
    prompts_file: Optional[str] = field(default=None, metadata={
        "help": "text-to-image: a text file of training prompts, one a line"})
    max_steps: int = field(default=30, metadata={"help": "optimizer steps"})
    batch_size: int = field(default=2, metadata={"help": "images generated per step (fresh noise each step)"})
    learning_rate: float = 1e-2
    max_grad_norm: float = 1.0
    backprop_steps: int = field(default=2, metadata={
        "help": "K: the reward's gradient flows through the last K denoising steps (DRaFT-K); earlier ones are "
                "run without gradient"})
    adapter_in: Literal["last_k", "all"] = field(default="last_k", metadata={
        "help": "last_k: the LoRA acts only in the last K steps (the base model runs the others, so the truncated "
                "gradient is the whole gradient of what the adapter changes); all: in every step (DRaFT's "
                "truncation, biased: measured here to lower the reward with K=1)"})
    kl_weight: float = field(default=0.0, metadata={
        "help": "weight of the KL penalty: the mean squared difference of the LoRA and base noise predictions over "
                "the K steps (the KL between their Gaussian steps up to a per-step weight, as DPOK's bound)"})
    image_weight: float = field(default=0.0, metadata={
        "help": "weight of the reference-image penalty: mean squared pixel difference ([0, 1]) from the base "
                "model's image from the same noise"})
    gradient_checkpointing: bool = field(default=False, metadata={
        "help": "recompute the UNet's and the reward model's activations in backward (less memory)"})
    save_steps: int = field(default=10, metadata={"help": "checkpoint (LoRA + optimizer) every this many steps"})
    early_stop_diversity: Optional[float] = field(default=None, metadata={
        "help": "stop when the held-out diversity falls below this fraction of its value before training"})
    early_stop_second_drop: Optional[float] = field(default=None, metadata={
        "help": "stop when the second scorer's held-out mean falls this far below its value before training"})

    def __post_init__(self):
        for name in ("max_steps", "batch_size", "backprop_steps", "save_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("learning_rate", "max_grad_norm"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"train.{name}: must be > 0, got {getattr(self, name)}")
        for name in ("kl_weight", "image_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name}: must be >= 0, got {getattr(self, name)}")
        if self.early_stop_diversity is not None and not 0 < self.early_stop_diversity < 1:
            raise ConfigError(f"train.early_stop_diversity: a fraction in (0, 1), got {self.early_stop_diversity}")
        read_prompts(self.prompts, self.prompts_file, "train")


@dataclass
class DraftEvalConfig:
    images: int = field(default=8, metadata={"help": "held-out images, one per fixed seed (and prompt)"})
    prompts: tuple[str, ...] = field(default=(), metadata={
        "help": "text-to-image: held-out prompts inline; image i takes prompt i mod their number and seed "
                "eval.seed + i (fixed pairs); none given: the training prompts (then only the seeds are held out)"})
    prompts_file: Optional[str] = field(default=None, metadata={
        "help": "text-to-image: a text file of held-out prompts, one a line"})
    seed: int = field(default=1000, metadata={"help": "the held-out seeds are seed, seed+1, ...; training "
                                                         "noise never uses them"})
    every: int = field(default=5, metadata={"help": "score the held-out images every this many steps (and at 0 "
                                                    "and the last)"})

    def __post_init__(self):
        if self.images < 2:
            raise ConfigError(f"eval.images: at least 2 (diversity compares images), got {self.images}")
        if self.every < 1:
            raise ConfigError(f"eval.every: must be >= 1, got {self.every}")
        read_prompts(self.prompts, self.prompts_file, "eval")


@dataclass
class RewardFinetuneConfig:
    run_dir: str = field(default="runs/reward_finetune", metadata={"help": "outputs; a rerun resumes here"})
    scorer: Optional[str] = field(default=None, metadata={
        "help": "the reward: a run directory, student/ folder or registered scorer (psdistill.load_reward); "
                "null: the demo's student, trained first into <run_dir>/demo by recipes/reward_finetune.py"})
    second_scorer: Optional[str] = field(default="teacher-pointwise", metadata={
        "help": "another scorer reported beside the reward on the held-out images (over-optimisation shows as "
                "the reward rising while this one does not); null: none"})
    device: Optional[str] = field(default=None, metadata={"help": "cuda, cpu, ... (default: cuda when there)"})
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    lora: GeneratorLoraConfig = field(default_factory=GeneratorLoraConfig)
    train: DraftTrainConfig = field(default_factory=DraftTrainConfig)
    eval: DraftEvalConfig = field(default_factory=DraftEvalConfig)

    def __post_init__(self):
        k, steps = self.train.backprop_steps, self.generator.steps
        if k > steps:
            raise ConfigError(f"train.backprop_steps: K={k} is more than generator.steps={steps}")
        if k == 1 and self.generator.timestep_spacing == "leading":
            raise ConfigError("train.backprop_steps: K=1 with generator.timestep_spacing=leading backpropagates "
                              "only the step to t=0, where the image barely depends on the UNet; use "
                              "timestep_spacing=trailing or K >= 2")

    def prompts(self) -> tuple[list[str], list[str]]:
        """(training prompts, the eval.images held-out ones: image i's), both empty when none are given."""
        train = read_prompts(self.train.prompts, self.train.prompts_file, "train")
        heldout = read_prompts(self.eval.prompts, self.eval.prompts_file, "eval") or train
        return train, [heldout[i % len(heldout)] for i in range(self.eval.images)] if heldout else []
