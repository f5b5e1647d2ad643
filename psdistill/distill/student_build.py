"""The student both objectives train: the VLM loaded (4-bit for QLoRA), the scalar head attached if asked
for, then LoRA-wrapped or its parameters (un)frozen (`build_student`)."""
from __future__ import annotations

from typing import Sequence

import torch

from psdistill.core.errors import ConfigError
from psdistill.data.records import DEFAULT_RATING_SCALE
from psdistill.distill.config import DistillConfig
from psdistill.models.loading import ModelConfig, load_vlm
from psdistill.models.quant import load_4bit
from psdistill.scoring.readout import attach_score_head, level_token_ids

# Qwen-VL layer names. Language model: attention and MLP projections. Vision tower: its blocks'
# attention and MLP, and the patch mergers (not the conv patch embedding).
_LANGUAGE_TARGETS = r"(.*\.)?language_model\..*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
_VISION_TARGETS = (r"(.*\.)?visual\.(blocks\.\d+\.(attn\.(qkv|proj)|mlp\.linear_fc[12])"
                   r"|(merger|deepstack_merger_list\.\d+)\.linear_fc[12])")


def lora_target_modules(cfg: DistillConfig):
    if cfg.lora_target_modules is not None:
        return list(cfg.lora_target_modules)
    return f"({_LANGUAGE_TARGETS}|{_VISION_TARGETS})" if cfg.tune_vision else _LANGUAGE_TARGETS


def build_student(model_cfg: ModelConfig, cfg: DistillConfig, rating_scale: Sequence[float] = DEFAULT_RATING_SCALE):
    """(model, processor) ready to train: head attached, LoRA wrapped or parameters (un)frozen."""
    model, processor = load_4bit(model_cfg) if cfg.tuning == "qlora" else load_vlm(model_cfg)
    if cfg.head == "levels":
        level_token_ids(processor, cfg.level_words, cfg.prompt)  # fail before training, not after
    else:
        attach_score_head(model, rating_scale)
    if cfg.tuning == "full":
        model.requires_grad_(True)
        if not cfg.tune_vision:
            _vision_tower(model).requires_grad_(False)
        if cfg.head == "scalar":
            model.get_output_embeddings().requires_grad_(False)  # lm_head plays no part in a scalar score
        return model, processor
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if cfg.tuning == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=lora_target_modules(cfg),
                      modules_to_save=["score_head"] if cfg.head == "scalar" else None)
    return get_peft_model(model, lora), processor


def _vision_tower(model) -> torch.nn.Module:
    inner = getattr(model, "model", model)
    for name in ("visual", "vision_tower", "vision_model"):
        if hasattr(inner, name):
            return getattr(inner, name)
    raise ConfigError(f"distill.tune_vision: cannot find the vision tower of {type(model).__name__} to freeze; "
                      "set tune_vision: true")
