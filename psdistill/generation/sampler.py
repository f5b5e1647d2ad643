"""The generator: a diffusers UNet with a LoRA adapter (peft) sampled by DDIM, with the reward's gradient
truncated to the last K denoising steps (DRaFT-K, Clark et al. 2024; AlignProp, Prabhudesai et al. 2023).

    gen = load_generator(cfg, run_dir)                       # cfg: RewardFinetuneConfig
    out = gen.sample(gen.noise([0, 1]), grad=True)           # out.images (2, 3, H, W) in [0, 1]
    out = gen.sample(gen.noise([0, 1]), ["a red barn", "a calm lake"], grad=True)   # a text-to-image one
    (-reward(out.images).mean()).backward()                  # reaches only the adapter's weights

Supported models (models.py loads them): unconditional pixel-space pipelines, unet/ (a `UNet2DModel`) and
scheduler/ (any scheduler config DDIM can read), such as google/ddpm-cifar10-32 or "tiny", a random one built
locally (`Generator`); Stable-Diffusion-style latent text-to-image pipelines, unet/ (`UNet2DConditionModel`),
vae/, text_encoder/, tokenizer/ and scheduler/, such as stable-diffusion-v1-5/stable-diffusion-v1-5 or
"tiny-sd" (`TextToImageGenerator`: classifier-free guidance, the gradient through the VAE decoder too).
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch

from psdistill.core.errors import ConfigError
from psdistill.generation.config import RewardFinetuneConfig
# diffusers_module, tiny_unet: importable from here as before models.py
from psdistill.generation.models import (TEXT_TO_IMAGE, base_folder, diffusers_module, load_base,  # noqa: F401
                                         load_text_to_image, tiny_unet, unet_kind)

TRAIN_SEED_BASE = 2 ** 32  # training noise seeds start here; held-out seeds are small numbers (eval.seed + i)


@dataclass
class Sample:
    images: torch.Tensor                       # (B, 3, H, W) in [0, 1]
    kl: Optional[torch.Tensor] = None          # () mean squared LoRA - base noise prediction over the K steps
    reference: Optional[torch.Tensor] = None   # (B, 3, H, W) the base model's images from the same noise


class Generator:
    """The base UNet with a LoRA adapter, DDIM with `steps` steps; the adapter acts in the last K steps
    (`adapter_in="last_k"`) or in all of them, and the gradient flows through the last K only."""

    def __init__(self, unet, scheduler, cfg: RewardFinetuneConfig, device: str | torch.device = "cpu"):
        from peft import LoraConfig, get_peft_model

        unet.requires_grad_(False)
        lora = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, target_modules=list(cfg.lora.target_modules))
        with torch.random.fork_rng(devices=[]):  # peft draws lora_A from the global RNG: seeded, a run repeats
            torch.manual_seed(cfg.generator.seed)
            self.unet = get_peft_model(unet, lora).to(device)
        if cfg.train.gradient_checkpointing:
            self.unet.get_base_model().enable_gradient_checkpointing()
        self.scheduler = scheduler
        self.scheduler.set_timesteps(cfg.generator.steps)
        self.k, self.adapter_in, self.device = cfg.train.backprop_steps, cfg.train.adapter_in, torch.device(device)

    def trainable(self) -> list[torch.nn.Parameter]:
        return [p for p in self.unet.parameters() if p.requires_grad]

    def noise(self, seeds: Sequence[int]) -> torch.Tensor:
        """(len(seeds), C, H, W): one seed, one image, whatever the batch or the device."""
        config = self.unet.get_base_model().config
        size = config.sample_size if isinstance(config.sample_size, (tuple, list)) else (config.sample_size,) * 2
        shape = (config.in_channels, *size)
        return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
                           ).to(self.device)

    def condition(self, prompts: Optional[Sequence[str]], n: int):
        """What the UNet is conditioned on for `n` images: nothing here (an unconditional model)."""
        if prompts is not None:
            raise ConfigError("prompts: this generator is unconditional (a UNet2DModel); it takes none")

    def _eps(self, x, t, adapter: bool, cond=None):
        with nullcontext() if adapter else self.unet.disable_adapter():
            return self.unet(x, t).sample

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return to_unit(x)

    def sample(self, noise: torch.Tensor, prompts: Optional[Sequence[str]] = None, grad: bool = False,
               kl: bool = False, reference: bool = False) -> Sample:
        """Denoise `noise` (one prompt per image for a text-to-image model); with `grad`, autograd records the
        last K steps (earlier ones run without it, as DRaFT-K's stop-gradient) and the decoding. `kl`: the
        penalty over those K steps; `reference`: the base model's images."""
        cond = self.condition(prompts, len(noise))
        timesteps = self.scheduler.timesteps
        start = len(timesteps) - self.k                          # first step with gradient
        first_lora = start if self.adapter_in == "last_k" else 0
        x, branch, kl_sum = noise, noise, None
        for i, t in enumerate(timesteps):
            if i == first_lora:
                branch = x  # the base model's trajectory leaves the adapted one here
            with torch.set_grad_enabled(grad and i >= start):
                eps = self._eps(x, t, i >= first_lora, cond)
                if kl and i >= start:
                    with torch.no_grad():
                        eps_ref = self._eps(x, t, False, cond)
                    term = (eps - eps_ref).pow(2).mean()
                    kl_sum = term if kl_sum is None else kl_sum + term
                x = self.scheduler.step(eps, t, x).prev_sample
        with torch.set_grad_enabled(grad):
            out = Sample(self.decode(x), kl=None if kl_sum is None else kl_sum / self.k)
        if reference:
            with torch.no_grad():
                y = branch
                for t in timesteps[first_lora:]:
                    y = self.scheduler.step(self._eps(y, t, False, cond), t, y).prev_sample
                out.reference = self.decode(y)
        return out


class TextToImageGenerator(Generator):
    """A Stable-Diffusion-style latent generator: the LoRA UNet denoises latents conditioned on the frozen text
    encoder's embeddings, with classifier-free guidance (the empty prompt as unconditional), and the frozen
    VAE decodes them; the reward's gradient flows through the decoder into the last K steps."""

    def __init__(self, parts: dict, cfg: RewardFinetuneConfig, device: str | torch.device = "cpu"):
        super().__init__(parts["unet"], parts["scheduler"], cfg, device)
        self.vae, self.text_encoder, self.tokenizer = parts["vae"], parts["text_encoder"], parts["tokenizer"]
        for frozen in (self.vae, self.text_encoder):
            frozen.requires_grad_(False).eval().to(self.device)
        if cfg.train.gradient_checkpointing:
            self.vae.enable_gradient_checkpointing()
        self.guidance_scale = cfg.generator.guidance_scale

    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> torch.Tensor:
        """(B, L, D): the text encoder's last hidden states of the prompts padded to the tokenizer's length, as
        StableDiffusionPipeline.encode_prompt (the attention mask only where the encoder's config asks)."""
        tokens = self.tokenizer(list(prompts), padding="max_length", max_length=self.tokenizer.model_max_length,
                                truncation=True, return_tensors="pt")
        mask = tokens.attention_mask.to(self.device) if getattr(self.text_encoder.config, "use_attention_mask",
                                                                False) else None
        return self.text_encoder(tokens.input_ids.to(self.device), attention_mask=mask)[0]

    def condition(self, prompts: Optional[Sequence[str]], n: int) -> torch.Tensor:
        """The prompts' embeddings, after the empty prompt's with guidance (one UNet batch of 2n, as diffusers)."""
        if prompts is None or len(prompts) != n:
            raise ConfigError(f"prompts: a text-to-image generator takes one prompt per image ({n}), got "
                              f"{None if prompts is None else len(prompts)}")
        if self.guidance_scale == 1:
            return self.encode(prompts)
        return self.encode([""] * n + list(prompts))

    def _eps(self, x, t, adapter: bool, cond=None):
        """The guided noise prediction: uncond + scale * (text - uncond)."""
        with nullcontext() if adapter else self.unet.disable_adapter():
            if self.guidance_scale == 1:
                return self.unet(x, t, encoder_hidden_states=cond).sample
            uncond, text = self.unet(torch.cat([x, x]), t, encoder_hidden_states=cond).sample.chunk(2)
            return uncond + self.guidance_scale * (text - uncond)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """The VAE's images in [0, 1] (the pipeline's decode and VaeImageProcessor's denormalisation)."""
        return to_unit(self.vae.decode(latents / self.vae.config.scaling_factor).sample)


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """A pixel-space pipeline's output in [-1, 1] as the images (B, 3, H, W) in [0, 1] a reward takes (the
    DDPMPipeline's own post-processing; out-of-range pixels are clipped and pass no gradient)."""
    return (x / 2 + 0.5).clamp(0, 1)


def diversity(images: torch.Tensor) -> float:
    """The mean pairwise RMS pixel distance ([0, 1] scale) among `images`: 0 when they are all the same."""
    flat = images.detach().flatten(1).double()
    return float(torch.pdist(flat).mean() / flat.shape[1] ** 0.5)


def load_generator(cfg: RewardFinetuneConfig, run_dir: str | Path, device: str | torch.device = "cpu") -> Generator:
    """A `Generator` or a `TextToImageGenerator`, by the base pipeline's unet class; the prompts config
    checked against it (a text-to-image model needs training prompts, an unconditional one takes none)."""
    text = unet_kind(cfg.generator, base_folder(cfg.generator, run_dir)) == TEXT_TO_IMAGE
    train_prompts, heldout_prompts = cfg.prompts()
    if text and not train_prompts:
        raise ConfigError(f"train.prompts: generator.model {cfg.generator.model!r} is text-to-image and needs "
                          "training prompts: train.prompts_file=<one prompt a line> or train.prompts=[...]")
    if not text and (train_prompts or heldout_prompts or cfg.generator.guidance_scale != 1):
        raise ConfigError(f"train.prompts: generator.model {cfg.generator.model!r} is unconditional: prompts "
                          "and generator.guidance_scale apply only to a text-to-image model")
    if text:
        return TextToImageGenerator(load_text_to_image(cfg.generator, run_dir), cfg, device)
    unet, scheduler = load_base(cfg.generator, run_dir)
    return Generator(unet, scheduler, cfg, device)
