"""Qwen3-VL processor parts that need no checkpoint: the image-only processor, the published image
preprocessing values and the published chat template.

Shared by `loading` (a real checkpoint on a CPU install without torchvision), `tiny` (the embedded
random-weight model) and `qwen3_reference` (the real tokenizer, for checks); none of them imports
another for these, so the imports between the three stay one-way.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

# Qwen/Qwen3-VL-8B-Instruct's chat template, rebuilt byte for byte: 5,292 bytes with the SHA-256 below,
# the size and hash github.com/zhongkaifu/TensorSharp pins for the template shipped in
# Qwen/Qwen3-VL-8B-Instruct-GGUF (test QwenImageIntentScorerTests.ShippedTemplate_IsTheGgufsTemplate,
# InferenceWeb.Tests). Stored in the layout of the hub's chat_template.json.
CHAT_TEMPLATE_FILE = Path(__file__).parent / "configs" / "qwen3_vl_chat_template.json"
CHAT_TEMPLATE_SHA256 = "3636d0f0bd6bef02654cdffdc447b79cb2cef8ab02cc75267345946291a489e4"


@lru_cache(maxsize=1)
def qwen3_vl_chat_template() -> str:
    return json.loads(CHAT_TEMPLATE_FILE.read_text())["chat_template"]


def qwen3_vl_image_processor(min_pixels: int, max_pixels: int):
    """The PIL (no torchvision) image processor with Qwen3-VL's published preprocessor values:
    16 px patches merged 2x2, temporal patch 2, mean/std 0.5; pixels bounded to [min_pixels, max_pixels]."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(
        patch_size=16, temporal_patch_size=2, merge_size=2, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
        size={"shortest_edge": min_pixels, "longest_edge": max_pixels},
    )


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
