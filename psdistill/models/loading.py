"""Load a real Qwen-VL checkpoint (hub id or local path), or the embedded tiny model.

GPU users get the stock path: `AutoModelForImageTextToText` + `AutoProcessor` (which, for Qwen-VL,
needs torchvision for its video processor). On a CPU-only install without torchvision (the torch
CPU wheel has no matching torchvision build), `AutoProcessor` cannot be built, so we assemble the
same processor from its tokenizer and its PIL image processor; images are processed identically,
only video input is unavailable.
"""
from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from psdistill.core.errors import ConfigError, PsdistillError
from psdistill.models.device import DTYPE_NAMES, pretrained_dtype
from psdistill.models.processor import image_only_processor

TINY = "tiny"  # name_or_path of the embedded random-weight model (psdistill.models.tiny)


@dataclass
class ModelConfig:
    """Which VLM to load and how.

    `name_or_path` is a hub id (e.g. "Qwen/Qwen3-VL-8B-Instruct"), a local folder, or "tiny" for
    the embedded random-weight Qwen3-VL. Pixels bound each image before patching; Qwen3-VL uses
    16 px patches merged 2x2, so a side is rounded to a multiple of 32. Unset bounds are the
    checkpoint's own (its preprocessor_config.json; Qwen3-VL: 65,536 to 16,777,216 px, so a 768x512
    painting is seen whole, as 384 merged tokens), and 32x32 to 64x64 for the tiny model, whose
    random weights see nothing in the detail anyway and which must train in minutes on a CPU.
    """

    name_or_path: str = field(default=TINY, metadata={
        "help": "a hub id (Qwen/Qwen3-VL-8B-Instruct), a local checkpoint folder, or 'tiny': the embedded "
                "random-weight Qwen3-VL (demo and tests)"})
    revision: Optional[str] = field(default=None, metadata={
        "help": "a hub branch, tag or commit of name_or_path (part of the judge's identity)"})
    dtype: str = field(default="auto", metadata={
        "help": "weights' dtype: 'auto' (the checkpoint's), bfloat16, float16 or float32"})
    device_map: Optional[str] = field(default=None, metadata={
        "help": "transformers' device_map (e.g. 'auto' to spread a model over GPUs); empty: this process's device"})
    attn_implementation: Optional[str] = field(default=None, metadata={
        "help": "sdpa, flash_attention_2 or eager; empty: transformers' choice"})
    min_pixels: Optional[int] = field(default=None, metadata={
        "help": "smallest image area in pixels before patching; empty: the checkpoint's (tiny: 1024)"})
    max_pixels: Optional[int] = field(default=None, metadata={
        "help": "largest image area in pixels (bounds image tokens and memory); empty: the checkpoint's (tiny: 4096)"})
    trust_remote_code: bool = field(default=False, metadata={
        "help": "run a checkpoint's own modelling code (only for checkpoints you trust)"})
    seed: int = field(default=0, metadata={"help": "the tiny model's random weights (no other model uses it)"})

    def __post_init__(self):
        if self.dtype not in DTYPE_NAMES:
            raise ConfigError(f"model.dtype: {self.dtype!r} is not one of {sorted(DTYPE_NAMES)}")
        if self.name_or_path == TINY:
            self.min_pixels = 32 * 32 if self.min_pixels is None else self.min_pixels
            self.max_pixels = 64 * 64 if self.max_pixels is None else self.max_pixels
        if any(p is not None and p <= 0 for p in (self.min_pixels, self.max_pixels)) or (
                None not in (self.min_pixels, self.max_pixels) and self.min_pixels > self.max_pixels):
            raise ConfigError(
                f"model.min_pixels/max_pixels: need 0 < min_pixels <= max_pixels, got {self.min_pixels}, {self.max_pixels}")
        if self.attn_implementation not in (None, "eager", "sdpa", "flash_attention_2", "flash_attention_3"):
            raise ConfigError(f"model.attn_implementation: unknown value {self.attn_implementation!r}")

    @property
    def model_id(self) -> str:
        """What identifies the weights in caches (the judgment store keys on it)."""
        if self.name_or_path == TINY:
            return f"tiny-qwen3-vl(seed={self.seed},max_pixels={self.max_pixels})"
        return self.name_or_path + (f"@{self.revision}" if self.revision else "")


def has_torchvision() -> bool:
    return importlib.util.find_spec("torchvision") is not None


def load_vlm(cfg: ModelConfig):
    """(model, processor) for `cfg`, in eval mode."""
    if cfg.name_or_path == TINY:
        from psdistill.models.tiny import tiny_qwen3_vl

        return tiny_qwen3_vl(seed=cfg.seed, image_size=_tiny_image_size(cfg))
    from transformers import AutoModelForImageTextToText

    kwargs = dict(revision=cfg.revision, trust_remote_code=cfg.trust_remote_code, dtype=pretrained_dtype(cfg.dtype))
    if cfg.device_map:
        kwargs["device_map"] = cfg.device_map
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    try:
        model = AutoModelForImageTextToText.from_pretrained(cfg.name_or_path, **kwargs)
    except OSError as e:
        raise PsdistillError(f"model.name_or_path: cannot load {cfg.name_or_path!r}: {e}") from None
    processor = load_processor(cfg.name_or_path, cfg.min_pixels, cfg.max_pixels, cfg.revision, cfg.trust_remote_code)
    return model.eval(), processor


def load_vlm_processor(cfg: ModelConfig):
    """The processor `load_vlm(cfg)` returns, without the weights (for checks before a stage runs)."""
    if cfg.name_or_path == TINY:
        from psdistill.models.tiny import tiny_qwen3_vl_processor

        return tiny_qwen3_vl_processor(_tiny_image_size(cfg))
    return load_processor(cfg.name_or_path, cfg.min_pixels, cfg.max_pixels, cfg.revision, cfg.trust_remote_code)


def _tiny_image_size(cfg: ModelConfig) -> int:
    return max(int(cfg.max_pixels ** 0.5) // 32 * 32, 32)


def load_processor(path: str, min_pixels: Optional[int] = None, max_pixels: Optional[int] = None, revision=None,
                   trust_remote_code=False):
    """The checkpoint's processor with image pixels bounded to [min_pixels, max_pixels] (None: the checkpoint's own)."""
    # The image processor merges these into the `size` of its config (the way Qwen2.5-VL's README passes them).
    bounds = {k: v for k, v in (("min_pixels", min_pixels), ("max_pixels", max_pixels)) if v is not None}
    if has_torchvision():
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code, **bounds)
    from transformers import AutoTokenizer
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tokenizer = AutoTokenizer.from_pretrained(path, revision=revision, padding_side="left")
    image_processor = Qwen2VLImageProcessorPil.from_pretrained(path, revision=revision, **bounds)
    return image_only_processor(image_processor, tokenizer, _chat_template(path, tokenizer))


def _chat_template(path, tokenizer):
    file = Path(path) / "chat_template.jinja"
    if file.is_file():
        return file.read_text()
    file = Path(path) / "chat_template.json"
    if file.is_file():
        return json.loads(file.read_text())["chat_template"]
    return tokenizer.chat_template
