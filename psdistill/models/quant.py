"""The base model in 4-bit NF4 for QLoRA (Dettmers et al. 2023, https://arxiv.org/abs/2305.14314), on a
CUDA GPU or on the CPU (bitsandbytes >= 0.49 runs NF4 forward and backward there).

On the CPU, bitsandbytes 0.50.2 has two traps, each worked around here and pinned by a test
(tests/test_quant.py) that fails when bitsandbytes changes the behaviour:
- on CPUs with AVX512-BF16, an eval-mode forward of a `Linear4bit` (validation, the first scoring pass)
  repacks its weight into an inference-only layout; training afterwards passes no gradient through that
  layer (most LoRA gradients silently zero) or crashes on narrow layers. Every `Linear4bit` gets
  `support_avx512bf16_for_cpu = False`, the attribute that gates the repacking.
- a layer whose input width is not a multiple of 64, quantised as transformers loads it, dequantises
  wrongly (relative error 0.14-0.25 on the tiny model's 32-wide vision layers, NF4's own is 0.09): such
  layers stay unquantised (`llm_int8_skip_modules`). Qwen3-VL-8B's vision MLP output
  layers (4304 wide) are among them; on a GPU every layer is quantised.
And `device_map={"": local_process_index}` names a CUDA device; the process's device is used instead.
"""
from __future__ import annotations

import importlib.util

import torch

from psdistill.core.errors import ConfigError
from psdistill.models.loading import TINY, ModelConfig, load_processor

CPU_BLOCK = 64  # the input width the CPU kernels dequantise correctly in multiples of


def load_4bit(model_cfg: ModelConfig):
    """(model, processor): `model_cfg`'s checkpoint with its Linear layers in NF4 (double quantised,
    bf16 compute), on this process's device."""
    if model_cfg.name_or_path == TINY:
        raise ConfigError("distill.tuning: 'qlora' loads a checkpoint; save the tiny model first "
                          "(psdistill.models.tiny.save_tiny) and point model.name_or_path at it")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError("distill.tuning: 'qlora' needs bitsandbytes: pip install 'psdistill[quant]'")
    from accelerate import PartialState
    from transformers import AutoConfig, AutoModelForImageTextToText, BitsAndBytesConfig

    device = PartialState().device
    kwargs = dict(revision=model_cfg.revision, trust_remote_code=model_cfg.trust_remote_code)
    skip = ["lm_head"]  # transformers' default: the output layer stays in bf16
    if device.type == "cpu":
        skip += cpu_unsafe_linears(AutoConfig.from_pretrained(model_cfg.name_or_path, **kwargs))
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16, llm_int8_skip_modules=skip)
    model = AutoModelForImageTextToText.from_pretrained(
        model_cfg.name_or_path, quantization_config=quant, dtype=torch.bfloat16, device_map={"": device}, **kwargs)
    if device.type == "cpu":
        keep_training_layout(model)
    processor = load_processor(model_cfg.name_or_path, model_cfg.min_pixels, model_cfg.max_pixels,
                               model_cfg.revision, model_cfg.trust_remote_code)
    return model, processor


def cpu_unsafe_linears(config) -> list[str]:
    """Names of the Linear layers of `config`'s model whose input width the CPU kernels mis-dequantise
    (built on the meta device: no memory, no weights)."""
    from transformers import AutoModelForImageTextToText

    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    return [name for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and m.in_features % CPU_BLOCK]


def keep_training_layout(model) -> int:
    """Stop every Linear4bit of `model` from repacking its weight for CPU inference; returns how many."""
    import bitsandbytes as bnb

    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    for m in layers:
        m.support_avx512bf16_for_cpu = False
    return len(layers)
