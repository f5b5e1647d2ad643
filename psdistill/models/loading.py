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

import torch

from psdistill.errors import ConfigError, PsdistillError

TINY = "tiny"  # name_or_path of the embedded random-weight model (psdistill.models.tiny)

_DTYPES = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class ModelConfig:
    """Which VLM to load and how.

    `name_or_path` is a hub id (e.g. "Qwen/Qwen3-VL-8B-Instruct"), a local folder, or "tiny" for
    the embedded random-weight Qwen3-VL. Pixels bound each image before patching; Qwen3-VL uses
    16 px patches merged 2x2, so a side is rounded to a multiple of 32.
    """

    name_or_path: str = TINY
    revision: Optional[str] = None
    dtype: str = "auto"
    device_map: Optional[str] = None
    attn_implementation: Optional[str] = None
    min_pixels: int = 32 * 32
    max_pixels: int = 64 * 64
    trust_remote_code: bool = False
    seed: int = 0  # only for the tiny model's random weights

    def __post_init__(self):
        if self.dtype not in _DTYPES:
            raise ConfigError(f"model.dtype: {self.dtype!r} is not one of {sorted(_DTYPES)}")
        if not 0 < self.min_pixels <= self.max_pixels:
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

        side = int(cfg.max_pixels ** 0.5) // 32 * 32
        return tiny_qwen3_vl(seed=cfg.seed, image_size=max(side, 32))
    from transformers import AutoModelForImageTextToText

    kwargs = dict(revision=cfg.revision, trust_remote_code=cfg.trust_remote_code, dtype=_DTYPES[cfg.dtype])
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


def load_processor(path: str, min_pixels: int, max_pixels: int, revision=None, trust_remote_code=False):
    """The checkpoint's processor with image pixels bounded to [min_pixels, max_pixels]."""
    size = {"shortest_edge": min_pixels, "longest_edge": max_pixels}
    if has_torchvision():
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code,
                                             size=size)
    from transformers import AutoTokenizer
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tokenizer = AutoTokenizer.from_pretrained(path, revision=revision, padding_side="left")
    image_processor = Qwen2VLImageProcessorPil.from_pretrained(path, revision=revision)
    image_processor.size = size
    return image_only_processor(image_processor, tokenizer, _chat_template(path, tokenizer))


def _chat_template(path, tokenizer):
    file = Path(path) / "chat_template.jinja"
    if file.is_file():
        return file.read_text()
    file = Path(path) / "chat_template.json"
    if file.is_file():
        return json.loads(file.read_text())["chat_template"]
    return tokenizer.chat_template


def image_only_processor(image_processor, tokenizer, chat_template):
    """A Qwen3-VL processor without a video processor (which needs torchvision).

    `ProcessorMixin` type-checks every part, and the video part's base class only exists with
    torchvision installed, so the check is skipped for that one absent part.
    """
    from transformers import Qwen3VLProcessor

    class ImageOnlyQwen3VLProcessor(Qwen3VLProcessor):
        def check_argument_for_proper_class(self, argument_name, argument):
            if argument_name == "video_processor" and argument is None:
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

        def save_pretrained(self, save_directory, **kwargs):
            # Save the parts under the stock names so AutoProcessor loads them where torchvision exists.
            Path(save_directory).mkdir(parents=True, exist_ok=True)
            self.tokenizer.save_pretrained(save_directory)
            self.image_processor.save_pretrained(save_directory)
            (Path(save_directory) / "chat_template.jinja").write_text(self.chat_template)
            return [str(save_directory)]

    tokenizer.padding_side = "left"  # batched readout takes the last position's logits
    return ImageOnlyQwen3VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                     video_processor=None, chat_template=chat_template)
