"""The base generator's parts, read by their components through diffusers' and transformers' public
`from_pretrained(source, subfolder=...)`, so that a folder and a hub id load the same way:

- an unconditional pixel-space pipeline: unet/ (`UNet2DModel`) and scheduler/ (e.g. google/ddpm-cifar10-32);
- a Stable-Diffusion-style latent text-to-image pipeline: unet/ (`UNet2DConditionModel`), vae/
  (`AutoencoderKL`), text_encoder/ (`CLIPTextModel`, or the transformers class its config names), tokenizer/
  and scheduler/ (e.g. stable-diffusion-v1-5/stable-diffusion-v1-5);
- "tiny" and "tiny-sd": random ones of each layout, built once into <run_dir>/base.

The kind is read from unet/config.json's _class_name (as diffusers' own loaders do).
"""
from __future__ import annotations

from pathlib import Path

import torch

from psdistill.core.errors import ConfigError
from psdistill.generation.config import GeneratorConfig

UNCONDITIONAL, TEXT_TO_IMAGE = "UNet2DModel", "UNet2DConditionModel"
TINY = {"tiny": UNCONDITIONAL, "tiny-sd": TEXT_TO_IMAGE}
SD_PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
TINY_TEXT_LENGTH = 48  # tokens: the tiny tokenizer is character-level, so a prompt of ~45 characters


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


def tiny_tokenizer():
    """A CLIPTokenizer on the byte-level alphabet alone (no merges: one token per character), built from a
    vocabulary in memory: the class SD pipelines ship in tokenizer/, so "tiny-sd" is read back by the same
    AutoTokenizer call and normalised (lower case, BOS/EOS, padded to model_max_length) as a real one, with
    no hub download; tokenizers' ByteLevel.alphabet() is the 256 symbols CLIP's BPE starts from."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    alphabet = sorted(ByteLevel.alphabet())
    words = alphabet + [c + "</w>" for c in alphabet] + ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={w: i for i, w in enumerate(words)}, merges=[], model_max_length=TINY_TEXT_LENGTH)


def save_tiny_sd(folder: Path, resolution: int, seed: int) -> None:
    """A random SD layout (1.0 M parameters in all): a UNet2DConditionModel with cross-attention at its
    lower resolution, an AutoencoderKL with a 4x smaller latent, a 2-layer CLIPTextModel, the tokenizer above
    and SD's DDIM scheduler settings (scaled_linear betas, no clipping of x0, as latents are unbounded)."""
    diffusers = diffusers_module()
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = tiny_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        diffusers.UNet2DConditionModel(
            sample_size=resolution // 4, in_channels=4, out_channels=4, layers_per_block=1, norm_num_groups=8,
            block_out_channels=(32, 64), cross_attention_dim=32, attention_head_dim=8,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D")).save_pretrained(folder / "unet")
        # a random VAE's latents have no learnt scale to normalise: scaling_factor 1
        diffusers.AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8,
            block_out_channels=(16, 32, 32), sample_size=resolution, scaling_factor=1.0,
            down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        ).save_pretrained(folder / "vae")
        CLIPTextModel(CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=TINY_TEXT_LENGTH, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        )).save_pretrained(folder / "text_encoder")
    tokenizer.save_pretrained(folder / "tokenizer")
    diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                            beta_end=0.012, clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                            ).save_pretrained(folder / "scheduler")


def base_folder(cfg: GeneratorConfig, run_dir: str | Path) -> str:
    """Where the base pipeline's parts are: "tiny" / "tiny-sd" are built once into <run_dir>/base (so a
    resumed run and a later `load_finetuned` read the same weights), anything else is the model id itself."""
    if cfg.model not in TINY:
        return cfg.model
    base = Path(run_dir) / "base"
    if not (base / "scheduler" / "scheduler_config.json").is_file():  # the last part written
        if cfg.model == "tiny":
            tiny_unet(cfg.resolution, cfg.seed).save_pretrained(base / "unet")
            diffusers_module().DDIMScheduler(num_train_timesteps=1000).save_pretrained(base / "scheduler")
        else:
            save_tiny_sd(base, cfg.resolution, cfg.seed)
    return str(base)


def unet_kind(cfg: GeneratorConfig, source: str) -> str:
    """unet/config.json's _class_name: UNCONDITIONAL or TEXT_TO_IMAGE, else one line of error."""
    diffusers = diffusers_module()
    try:
        unet_config = diffusers.UNet2DModel.load_config(source, subfolder="unet")
    except OSError as e:
        raise ConfigError(f"generator.model {cfg.model!r}: no pipeline with unet/ and scheduler/ there "
                          f"({str(e).splitlines()[0]})") from None
    kind = unet_config.get("_class_name")
    if kind not in (UNCONDITIONAL, TEXT_TO_IMAGE):
        raise ConfigError(f"generator.model {cfg.model!r}: its unet is a {kind}; supported: {UNCONDITIONAL} "
                          f"(unconditional) and {TEXT_TO_IMAGE} (Stable-Diffusion-style text-to-image)")
    if unet_config.get("addition_embed_type"):
        raise ConfigError(f"generator.model {cfg.model!r}: its unet takes added embeddings "
                          f"(addition_embed_type={unet_config['addition_embed_type']}, SDXL-style); only "
                          "Stable Diffusion 1.x/2.x-style UNets (text embeddings alone) are supported")
    return kind


def load_scheduler(cfg: GeneratorConfig, source: str):
    """DDIM with `cfg.timestep_spacing`, from the pipeline's scheduler config (DDIM reads PNDM's and DDPM's)."""
    return diffusers_module().DDIMScheduler.from_pretrained(source, subfolder="scheduler",
                                                            timestep_spacing=cfg.timestep_spacing)


def load_base(cfg: GeneratorConfig, run_dir: str | Path):
    """(UNet2DModel, DDIMScheduler) of an unconditional base pipeline, the scheduler with `cfg.timestep_spacing`."""
    source = base_folder(cfg, run_dir)
    if unet_kind(cfg, source) != UNCONDITIONAL:
        raise ConfigError(f"generator.model {cfg.model!r}: its unet is a {TEXT_TO_IMAGE}; load it with "
                          "load_text_to_image")
    try:
        return diffusers_module().UNet2DModel.from_pretrained(source, subfolder="unet"), load_scheduler(cfg, source)
    except OSError as e:
        raise ConfigError(f"generator.model {cfg.model!r}: no pipeline with unet/ and scheduler/ there "
                          f"({str(e).splitlines()[0]})") from None


def load_text_to_image(cfg: GeneratorConfig, run_dir: str | Path) -> dict:
    """{"unet", "scheduler", "vae", "text_encoder", "tokenizer"} of a Stable-Diffusion-style pipeline."""
    diffusers = diffusers_module()
    import transformers

    source = base_folder(cfg, run_dir)
    try:
        parts = {"unet": diffusers.UNet2DConditionModel.from_pretrained(source, subfolder="unet"),
                 "vae": diffusers.AutoencoderKL.from_pretrained(source, subfolder="vae"),
                 "tokenizer": transformers.AutoTokenizer.from_pretrained(source, subfolder="tokenizer"),
                 "scheduler": load_scheduler(cfg, source)}
        # the class text_encoder/config.json names (CLIPTextModel, T5EncoderModel, ...), as model_index.json
        # would: AutoModel would give T5's encoder-decoder T5Model
        config = transformers.AutoConfig.from_pretrained(source, subfolder="text_encoder")
        encoder = getattr(transformers, (config.architectures or ["AutoModel"])[0], transformers.AutoModel)
        parts["text_encoder"] = encoder.from_pretrained(source, subfolder="text_encoder")
    except (OSError, ValueError) as e:
        raise ConfigError(f"generator.model {cfg.model!r}: a text-to-image pipeline needs {', '.join(SD_PARTS)} "
                          f"({str(e).splitlines()[0]})") from None
    width, cross = parts["text_encoder"].config.hidden_size, parts["unet"].config.cross_attention_dim
    if width != cross:
        raise ConfigError(f"generator.model {cfg.model!r}: the text encoder's hidden_size {width} is not the "
                          f"unet's cross_attention_dim {cross}")
    return parts
