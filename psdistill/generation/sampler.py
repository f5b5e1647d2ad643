"""The generator: a diffusers UNet with a LoRA adapter (peft) sampled by DDIM, with the reward's gradient
truncated to the last K denoising steps (DRaFT-K, Clark et al. 2024; AlignProp, Prabhudesai et al. 2023).

    gen = load_generator(cfg, run_dir)                       # cfg: RewardFinetuneConfig
    out = gen.sample(gen.noise([0, 1]), grad=True)           # out.images (2, 3, H, W) in [0, 1]
    (-reward(out.images).mean()).backward()                  # reaches only the adapter's weights

Supported models: unconditional pixel-space pipelines whose folder has unet/ (a `UNet2DModel`) and
scheduler/ (any scheduler config DDIM can read): DDPMPipeline / DDIMPipeline checkpoints such as
google/ddpm-cifar10-32 or google/ddpm-celebahq-256, and "tiny", a random one built locally. A text-to-image
pipeline (UNet2DConditionModel, a VAE, a text encoder) is not supported yet.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch

from psdistill.core.errors import ConfigError
from psdistill.generation.config import GeneratorConfig, RewardFinetuneConfig

TRAIN_SEED_BASE = 2 ** 32  # training noise seeds start here; held-out seeds are small numbers (eval.seed + i)


def diffusers_module():
    """diffusers is an extra (the core install runs without it): imported here, on first use."""
    try:
        import diffusers
    except ImportError:
        raise ConfigError("reward fine-tuning needs diffusers: pip install 'psdistill[generate]'") from None
    return diffusers


def tiny_unet(resolution: int, seed: int):
    """A small random UNet2DModel (1.1 M parameters): attention only at the lowest resolution, since CPU
    attention over a 32x32 map cost 65% of a forward at 64 px."""
    diffusers = diffusers_module()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return diffusers.UNet2DModel(
            sample_size=resolution, in_channels=3, out_channels=3, layers_per_block=1, norm_num_groups=8,
            block_out_channels=(32, 64, 64), attention_head_dim=32,
            down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"))


def base_folder(cfg: GeneratorConfig, run_dir: str | Path) -> str:
    """Where the base pipeline's unet/ and scheduler/ are: "tiny" is built once into <run_dir>/base (so a
    resumed run and a later `load_finetuned` read the same weights), anything else is the model id itself."""
    if cfg.model != "tiny":
        return cfg.model
    base = Path(run_dir) / "base"
    if not (base / "unet" / "config.json").is_file():
        diffusers = diffusers_module()
        tiny_unet(cfg.resolution, cfg.seed).save_pretrained(base / "unet")
        diffusers.DDIMScheduler(num_train_timesteps=1000).save_pretrained(base / "scheduler")
    return str(base)


def load_base(cfg: GeneratorConfig, run_dir: str | Path):
    """(UNet2DModel, DDIMScheduler) of the base pipeline, the scheduler with `cfg.timestep_spacing`."""
    diffusers = diffusers_module()
    source = base_folder(cfg, run_dir)
    try:
        kind = diffusers.UNet2DModel.load_config(source, subfolder="unet").get("_class_name")
        if kind != "UNet2DModel":
            raise ConfigError(f"generator.model {cfg.model!r}: its unet is a {kind}; only unconditional "
                              "UNet2DModel pipelines are supported")
        unet = diffusers.UNet2DModel.from_pretrained(source, subfolder="unet")
        scheduler = diffusers.DDIMScheduler.from_pretrained(source, subfolder="scheduler",
                                                            timestep_spacing=cfg.timestep_spacing)
    except OSError as e:
        raise ConfigError(f"generator.model {cfg.model!r}: no pipeline with unet/ and scheduler/ there "
                          f"({str(e).splitlines()[0]})") from None
    return unet, scheduler


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

    def _eps(self, x, t, adapter: bool):
        with nullcontext() if adapter else self.unet.disable_adapter():
            return self.unet(x, t).sample

    def sample(self, noise: torch.Tensor, grad: bool = False, kl: bool = False, reference: bool = False) -> Sample:
        """Denoise `noise`; with `grad`, autograd records the last K steps (earlier ones run without it, as
        DRaFT-K's stop-gradient). `kl`: the penalty over those K steps; `reference`: the base model's images."""
        timesteps = self.scheduler.timesteps
        start = len(timesteps) - self.k                          # first step with gradient
        first_lora = start if self.adapter_in == "last_k" else 0
        x, branch, kl_sum = noise, noise, None
        for i, t in enumerate(timesteps):
            if i == first_lora:
                branch = x  # the base model's trajectory leaves the adapted one here
            with torch.set_grad_enabled(grad and i >= start):
                eps = self._eps(x, t, adapter=i >= first_lora)
                if kl and i >= start:
                    with torch.no_grad():
                        eps_ref = self._eps(x, t, adapter=False)
                    term = (eps - eps_ref).pow(2).mean()
                    kl_sum = term if kl_sum is None else kl_sum + term
                x = self.scheduler.step(eps, t, x).prev_sample
        out = Sample(to_unit(x), kl=None if kl_sum is None else kl_sum / self.k)
        if reference:
            with torch.no_grad():
                y = branch
                for t in timesteps[first_lora:]:
                    y = self.scheduler.step(self._eps(y, t, adapter=False), t, y).prev_sample
            out.reference = to_unit(y)
        return out


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """A pixel-space pipeline's output in [-1, 1] as the images (B, 3, H, W) in [0, 1] a reward takes (the
    DDPMPipeline's own post-processing; out-of-range pixels are clipped and pass no gradient)."""
    return (x / 2 + 0.5).clamp(0, 1)


def diversity(images: torch.Tensor) -> float:
    """The mean pairwise RMS pixel distance ([0, 1] scale) among `images`: 0 when they are all the same."""
    flat = images.detach().flatten(1).double()
    return float(torch.pdist(flat).mean() / flat.shape[1] ** 0.5)


def load_generator(cfg: RewardFinetuneConfig, run_dir: str | Path, device: str | torch.device = "cpu") -> Generator:
    unet, scheduler = load_base(cfg.generator, run_dir)
    return Generator(unet, scheduler, cfg, device)
