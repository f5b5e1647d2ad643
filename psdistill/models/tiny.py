"""Tiny random-weight models for tests and the embedded demo (no hub, no download).

One factory shared by the tests and `psdistill demo`, so both exercise the real architectures
(Qwen3-VL, CLIP) at a size that trains in minutes on two CPU cores. Weights are random, so what
these models "prefer" is meaningless until they are trained; the demo therefore teaches them with
the simulated judge.

The tokenizer is Qwen3's own byte-level BPE cut down to the merges that psdistill's bundled prompts
and read words use (psdistill/models/configs/tiny_qwen3_tokenizer.json, made from the real
tokenizer by eval/tokenization.py with `--write-tiny-vocabulary`): those texts tokenize exactly as
with the real Qwen3 vocabulary (same pieces, other ids), so a word that is two tokens for Qwen3 is
two tokens here too; any other text falls back to shorter pieces than Qwen3 would use. The chat
template is Qwen3-VL's published one.
"""
from __future__ import annotations

from pathlib import Path

import torch

from psdistill.models.processor import image_only_processor, qwen3_vl_chat_template, qwen3_vl_image_processor

TOKENIZER_FILE = Path(__file__).parent / "configs" / "tiny_qwen3_tokenizer.json"

# Qwen's special tokens that the processor and the model config look up by name.
SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|image_pad|>", "<|video_pad|>",
]


def tiny_tokenizer():
    """A Qwen2 fast tokenizer with the tiny vocabulary (left padding, for batched judging)."""
    from tokenizers import Tokenizer
    from transformers import Qwen2TokenizerFast

    tok = Qwen2TokenizerFast(
        tokenizer_object=Tokenizer.from_file(str(TOKENIZER_FILE)),
        unk_token=None, bos_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        padding_side="left",
    )
    tok.chat_template = qwen3_vl_chat_template()
    return tok


def tiny_qwen3_vl_processor(image_size: int = 64):
    """Qwen3-VL processor built from parts: PIL image processor (no torchvision), local tokenizer.

    `image_size` bounds the pixels so a demo image becomes (image_size/32)^2 merged tokens.
    """
    pixels = image_size * image_size
    return image_only_processor(qwen3_vl_image_processor(min(pixels, 32 * 32), pixels), tiny_tokenizer(),
                                qwen3_vl_chat_template())


def tiny_qwen3_vl_config(vocab_size: int):
    """A Qwen3-VL config a few MB large that keeps every architectural feature (deepstack, M-RoPE)."""
    from transformers import Qwen3VLConfig

    tok = tiny_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    head_dim = 16
    return Qwen3VLConfig(
        text_config=dict(
            vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=head_dim,
            max_position_embeddings=2048, tie_word_embeddings=False,
            # M-RoPE sections (temporal, height, width) must sum to head_dim / 2.
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                             "mrope_section": [4, 2, 2], "mrope_interleaved": True},
            # the tokenizer's, as in the real checkpoints: else the Trainer re-aligns them with a warning
            pad_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
        ),
        vision_config=dict(
            depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=16,
            spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=64,
            # A perfect square: the learned position grid is interpolated to the image's grid.
            num_position_embeddings=16, deepstack_visual_indexes=[0],
        ),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )


def tiny_qwen3_vl(seed: int = 0, image_size: int = 64):
    """(model, processor): a random-weight Qwen3-VL (~0.1M parameters) and its processor."""
    from transformers import Qwen3VLForConditionalGeneration

    processor = tiny_qwen3_vl_processor(image_size)
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(tiny_qwen3_vl_config(len(processor.tokenizer)))
    model.eval()
    return model, processor


def tiny_clip(seed: int = 0, image_size: int = 64):
    """(model, processor): a random-weight CLIP with the ViT-B/16 layout shrunk (patch 16)."""
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor

    tok = tiny_tokenizer()
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=64,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                         bos_token_id=tok.eos_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, image_size=image_size, patch_size=16),
        projection_dim=32,
    )
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    # The PIL image processor: the default one wants torchvision (see psdistill.models.loading).
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
    )
    return model, CLIPProcessor(image_processor=image_processor, tokenizer=tok)


def save_tiny(model, processor, path) -> str:
    """Save a tiny model and its processor so `from_pretrained(path)` loads them back."""
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return str(path)
