"""The scorer as a differentiable reward for image generators (DRaFT, AlignProp, ReFL; or the reward of
flow_grpo / DDPO-style trainers).

    >>> reward = psdistill.load_reward("runs/demo", device="cuda")              # doctest: +SKIP
    >>> images = pipe(prompts, output_type="pt").images                          # doctest: +SKIP
    >>> scores = reward(images)              # (B,) on the rating scale; scores.mean().backward() reaches the pixels

`ScorerReward` is a `torch.nn.Module` around the scorer's VLM: images (B, 3, H, W) in [0, 1] go through
the processor's steps in torch (torch_preprocess.py) and the scorer's own readout (readout.py: `Readout`),
with autograd on (`StudentScorer.score` runs under inference_mode). Its weights are frozen and it stays in
eval mode (no dropout, the same output for the same input) whatever `.train()` its owner calls.
`reward_fn` wraps it in the `fn(images, prompts, metadata) -> (rewards, metadata)` convention of
ddpo-pytorch's and flow_grpo's reward functions.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

from psdistill.core.errors import ConfigError
from psdistill.models.prefix_kv import unwrap
from psdistill.scoring.readout import Readout
from psdistill.scoring.registry import load_scorer
from psdistill.scoring.spec import ScorerSpec
from psdistill.scoring.torch_preprocess import QwenVLPixels


class FrozenReward(torch.nn.Module):
    """What every reward shares: `model`'s weights frozen, eval mode whatever `.train()` its owner calls (no
    dropout: the same output for the same input), and `gradient_checkpointing`: the transformers model
    `pretrained` (default: `model` unwrapped) recomputes each layer in backward instead of keeping its
    activations (less memory for large images or batches, one more forward's time)."""

    def __init__(self, model, gradient_checkpointing: bool = False, pretrained=None):
        super().__init__()
        self.model = model
        self.model.requires_grad_(False)
        self.gradient_checkpointing = gradient_checkpointing
        if gradient_checkpointing:
            pretrained = pretrained if pretrained is not None else unwrap(model)
            pretrained.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        self.train(False)

    def train(self, mode: bool = True) -> "FrozenReward":
        """Always eval mode; under `gradient_checkpointing` only the checkpointed layers' own flag is set, since
        transformers checkpoints a layer only in training mode, while their submodules stay in eval mode."""
        super().train(False)
        if self.gradient_checkpointing:
            from transformers.modeling_layers import GradientCheckpointingLayer

            for m in self.model.modules():
                if isinstance(m, GradientCheckpointingLayer):
                    m.training = True
        return self

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


class ScorerReward(FrozenReward):
    """Scores of images (B, 3, H, W) in [0, 1] on `score_range`, differentiable to the pixels: (B,) for one
    dimension, (B, D) for several (`dimensions` names the columns). The scores are `load_scorer(path)`'s
    on the same pixels: equal where `smart_resize` keeps the image's size (generate at such a size: sides
    multiples of 32 for Qwen3-VL, area within the scorer's pixel bounds), close where torch resizes."""

    def __init__(self, model, processor, spec: ScorerSpec, gradient_checkpointing: bool = False):
        super().__init__(model, gradient_checkpointing)
        self.readout = Readout(spec, processor)
        self.pixels = QwenVLPixels(processor, self.readout.text)
        self.name, self.dimensions, self.score_range = spec.name, spec.dimensions, tuple(spec.rating_scale)
        if gradient_checkpointing:
            unwrap(model).config.get_text_config().use_cache = False  # a checkpointed layer keeps no KV cache

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        scores = self.readout(self.model, self.pixels(images, self.device))
        return scores[:, 0] if len(self.dimensions) == 1 else scores


def load_reward(path, device: Optional[str] = None, gradient_checkpointing: bool = False, **kwargs) -> torch.nn.Module:
    """The reward of the scorer `load_scorer(path, device=device, **kwargs)` loads: a psdistill student or
    the zero-shot teacher ("teacher-pointwise"), or any scorer with a `reward(gradient_checkpointing=...)`
    method of its own."""
    from psdistill.scoring.student import StudentScorer

    scorer = load_scorer(path, device=device, **kwargs)
    if isinstance(scorer, StudentScorer):
        return ScorerReward(scorer.model, scorer.processor, scorer.spec, gradient_checkpointing)
    if callable(getattr(scorer, "reward", None)):
        return scorer.reward(gradient_checkpointing=gradient_checkpointing)
    raise ConfigError(f"{path}: the scorer {scorer.name!r} has no differentiable reward")


def reward_fn(reward: torch.nn.Module, weights: Optional[Sequence[float]] = None) -> Callable:
    """`fn(images, prompts, metadata) -> (rewards, metadata)`, the reward-function convention of ddpo-pytorch
    and flow_grpo: `images` (B, 3, H, W) in [0, 1]; prompts and metadata are not read (an aesthetic score
    ignores the prompt). Several dimensions give their weighted mean (`weights`, default equal) as the (B,)
    reward and each dimension's scores in the metadata. Gradients flow unless the caller turns them off."""
    dims = tuple(getattr(reward, "dimensions", ("overall",)))
    w = torch.full((len(dims),), 1 / len(dims)) if weights is None else torch.as_tensor(weights, dtype=torch.float32)
    if w.shape != (len(dims),):
        raise ConfigError(f"reward_fn: {len(w.reshape(-1))} weights for the dimensions {list(dims)}")

    def fn(images, prompts=None, metadata=None, **kwargs):
        scores = reward(images)
        if scores.ndim == 1:
            return scores, {}
        return scores @ w.to(scores), {d: scores[:, k] for k, d in enumerate(dims)}

    return fn
