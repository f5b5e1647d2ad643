"""The official FGAesQ checkpoint format <-> this package's FGAesQModel, strictly.

The release (github yzc-ippl/FG-IAA, FGAesQ_Inference/utils/FGAesQ.py at 4bfd40f, on openai/CLIP
at dcba3cb) saves `FGAesQ.state_dict()`:

    clip_model.visual.class_embedding                   -> vision_model.embeddings.class_embedding
    clip_model.visual.positional_embedding              -> vision_model.embeddings.position_embedding.weight
    clip_model.visual.conv1.weight                      -> vision_model.embeddings.patch_embedding.weight
    clip_model.visual.ln_pre.* / ln_post.*              -> vision_model.pre_layrnorm.* / post_layernorm.*
    clip_model.visual.transformer.resblocks.N.attn.in_proj_*   -> ...layers.N.self_attn.{q,k,v}_proj.* (split in 3)
    clip_model.visual.transformer.resblocks.N.attn.out_proj.*  -> ...layers.N.self_attn.out_proj.*
    clip_model.visual.transformer.resblocks.N.ln_1.* / ln_2.*  -> ...layers.N.layer_norm1.* / layer_norm2.*
    clip_model.visual.transformer.resblocks.N.mlp.c_fc.* / c_proj.* -> ...layers.N.mlp.fc1.* / fc2.*
    clip_model.visual.proj [D, E]                       -> visual_projection.weight [E, D] (transposed)
    scale_embedding [1, 2, D], mask_token [1, 1, D], iqa_head.{0,3,6}.*   -> the same names
    ln_pre.*, transformer.*, ln_post.*, proj            aliases of clip_model.visual.* (FGAesQ keeps
                                                        references to them): must equal their original
    clip_model.{token_embedding, positional_embedding, transformer, ln_final, text_projection, logit_scale}
                                                        the text tower: not used by inference, ignored

Every other key, a missing used key, a shape that does not fit or an alias that differs from its
original is an error naming the key. A uniform `module.` prefix (DataParallel) is removed first.
`to_official_state_dict` writes the release's keys (text tower excluded: the release loads with
strict=False, so its own CLIP text tower stays).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

import torch

from psdistill.core.errors import PsdistillError

VISUAL = "clip_model.visual."
ALIASES = ("ln_pre.", "transformer.", "ln_post.")  # + "proj": FGAesQ attributes that alias clip_model.visual.*
TEXT = ("clip_model.token_embedding.", "clip_model.positional_embedding", "clip_model.transformer.",
        "clip_model.ln_final.", "clip_model.text_projection", "clip_model.logit_scale")
OWN = ("scale_embedding", "mask_token", "iqa_head.")  # same names in both formats
_LAYER = re.compile(r"^transformer\.resblocks\.(\d+)\.(.+)$")
_LAYER_PARTS = {
    "attn.out_proj.weight": "self_attn.out_proj.weight", "attn.out_proj.bias": "self_attn.out_proj.bias",
    "ln_1.weight": "layer_norm1.weight", "ln_1.bias": "layer_norm1.bias",
    "ln_2.weight": "layer_norm2.weight", "ln_2.bias": "layer_norm2.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight", "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight", "mlp.c_proj.bias": "mlp.fc2.bias",
}
_TOP = {
    "class_embedding": "vision_model.embeddings.class_embedding",
    "positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "ln_pre.weight": "vision_model.pre_layrnorm.weight", "ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "ln_post.weight": "vision_model.post_layernorm.weight", "ln_post.bias": "vision_model.post_layernorm.bias",
}


@dataclass
class KeyMappingReport:
    """How an official state dict's keys mapped onto the model (not a data-loading report)."""

    used: dict[str, list[str]] = field(default_factory=dict)  # official key -> our key(s)
    aliases: dict[str, str] = field(default_factory=dict)  # alias key -> the key it duplicates
    ignored: list[str] = field(default_factory=list)  # the CLIP text tower

    def summary(self) -> str:
        return (f"{len(self.used)} official tensors used, {len(self.aliases)} aliases checked equal, "
                f"{len(self.ignored)} text-tower tensors ignored")


def _visual_target(k: str) -> Optional[list[str]]:
    """Our key(s) for a clip_model.visual.* suffix (None: not part of the vision tower)."""
    if k in _TOP:
        return [_TOP[k]]
    if k == "proj":
        return ["visual_projection.weight"]
    m = _LAYER.match(k)
    if not m:
        return None
    base = f"vision_model.encoder.layers.{m.group(1)}."
    part = m.group(2)
    if part in ("attn.in_proj_weight", "attn.in_proj_bias"):
        kind = "weight" if part.endswith("weight") else "bias"
        return [f"{base}self_attn.{p}_proj.{kind}" for p in ("q", "k", "v")]
    return [base + _LAYER_PARTS[part]] if part in _LAYER_PARTS else None


def _strip_module(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def convert_official_state_dict(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], KeyMappingReport]:
    """Official keys -> this package's FGAesQModel keys; raises PsdistillError naming every key that
    is unknown or an alias that differs from its original (missing and mismatched keys are checked
    against a model by `load_official_weights`)."""
    state = _strip_module(state)
    out: dict[str, torch.Tensor] = {}
    report = KeyMappingReport()
    unknown, differ = [], []
    for key, value in state.items():
        if key.startswith(VISUAL):
            k = key[len(VISUAL):]
            new = _visual_target(k)
            if new is None:
                unknown.append(key)
                continue
            if k == "proj":  # OpenAI stores x @ proj, [D, E]; nn.Linear wants [E, D]
                parts = [value.t()]
            elif len(new) == 3:  # in_proj stacks [q; k; v] along the output dim
                parts = list(value.chunk(3, dim=0))
            else:
                parts = [value]
            for name, t in zip(new, parts):
                out[name] = t.contiguous()
            report.used[key] = new
        elif key.startswith(OWN):
            out[key] = value
            report.used[key] = [key]
        elif _is_alias(key):
            original = VISUAL + key
            if original not in state:  # reported as missing by load_official_weights
                continue
            if state[original].shape != value.shape or not torch.equal(state[original], value):
                differ.append(f"{key} differs from {original}")
            else:
                report.aliases[key] = original
        elif key.startswith(TEXT):
            report.ignored.append(key)
        else:
            unknown.append(key)
    if unknown or differ:
        raise PsdistillError("official FGAesQ checkpoint: " + "; ".join(
            part for part in (f"unknown keys ({len(unknown)}): {', '.join(unknown[:12])}" if unknown else "",
                              f"aliases that differ ({len(differ)}): {', '.join(differ[:12])}" if differ else "")
            if part))
    return out, report


def official_vision_config(state: Mapping[str, torch.Tensor], num_heads: Optional[int] = None) -> dict:
    """The vision tower's size read from an official state dict: a CLIPVisionConfig dict plus
    `projection_dim` and `head_input` (heads: `num_heads`, else CLIP's own rule width // 64)."""
    state = _strip_module(state)
    need = [VISUAL + k for k in ("conv1.weight", "positional_embedding", "proj")] + ["iqa_head.0.weight"]
    missing = [k for k in need if k not in state]
    if missing:
        raise PsdistillError(f"official FGAesQ checkpoint: missing {', '.join(missing)}")
    conv, pos, proj = (state[VISUAL + k] for k in ("conv1.weight", "positional_embedding", "proj"))
    width, patch = int(conv.shape[0]), int(conv.shape[-1])
    grid = int(round((pos.shape[0] - 1) ** 0.5))
    layers = {int(m.group(1)) for k in state if (m := _LAYER.match(k[len(VISUAL):]) if k.startswith(VISUAL) else None)}
    fc = state.get(f"{VISUAL}transformer.resblocks.0.mlp.c_fc.weight")
    if not layers or fc is None:
        raise PsdistillError(f"official FGAesQ checkpoint: no {VISUAL}transformer.resblocks.0.* layers")
    heads = num_heads or max(1, width // 64)
    if width % heads:
        raise PsdistillError(f"official FGAesQ checkpoint: width {width} is not divisible by {heads} heads")
    head_in = int(state["iqa_head.0.weight"].shape[1])
    embed = int(proj.shape[1])
    if head_in not in (embed, width):
        raise PsdistillError(f"official FGAesQ checkpoint: iqa_head.0.weight reads {head_in} features, "
                             f"neither the projection ({embed}) nor the CLS ({width})")
    return {"vision": dict(hidden_size=width, intermediate_size=int(fc.shape[0]), num_hidden_layers=max(layers) + 1,
                           num_attention_heads=heads, patch_size=patch, image_size=grid * patch, num_channels=3,
                           hidden_act="quick_gelu", layer_norm_eps=1e-5),
            "projection_dim": embed, "head_input": "projection" if head_in == embed else "pooled"}


def load_official_weights(model, state: Mapping[str, torch.Tensor] | str | Path) -> KeyMappingReport:
    """Load an official state dict into `model` (an FGAesQModel of the matching size), strictly:
    PsdistillError naming the keys if any of ours gets nothing, any shape differs, or a key is unknown."""
    if isinstance(state, (str, Path)):
        state = read_state_dict(state)
    converted, report = convert_official_state_dict(state)
    present = set(_strip_module(state))
    own = model.state_dict()
    extra = [k for k in converted if k not in own]
    shapes = [f"{k}: {tuple(v.shape)} in the checkpoint vs {tuple(own[k].shape)} in the model"
              for k, v in converted.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    # named as the release names them; our names for what the release has no key for
    missing = [k for k in to_official_state_dict(model) if k not in present and not _is_alias(k)] \
        or [k for k in own if k not in converted]
    if extra or shapes or missing:
        parts = [f"{name} ({len(keys)}): {', '.join(keys[:12])}" for name, keys in
                 (("missing", missing), ("shape mismatch", shapes), ("not in the model", extra)) if keys]
        raise PsdistillError("official FGAesQ checkpoint does not fit the model: " + "; ".join(parts))
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in converted.items()}, strict=True)
    return report


def _is_alias(key: str) -> bool:
    return key == "proj" or key.startswith(ALIASES)


def to_official_state_dict(model) -> dict[str, torch.Tensor]:
    """This package's FGAesQModel -> the release's `FGAesQ.state_dict()` keys (with its aliases, without
    the text tower), loadable by the release's `load_model` (load_state_dict(strict=False))."""
    if model.config.head_input != "projection":
        raise PsdistillError("to_official_state_dict: the release's head reads the projection; "
                             "this model's head_input is 'pooled'")
    own = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    out: dict[str, torch.Tensor] = {}
    layers = sorted({int(k.split(".")[3]) for k in own if k.startswith("vision_model.encoder.layers.")})
    suffixes = list(_TOP) + ["proj"] + [f"transformer.resblocks.{n}.{p}" for n in layers
                                         for p in ("attn.in_proj_weight", "attn.in_proj_bias", *_LAYER_PARTS)]
    for k in suffixes:
        ours = _visual_target(k)
        if k == "proj":
            value = own[ours[0]].t()
        else:
            value = torch.cat([own[o] for o in ours], dim=0) if len(ours) == 3 else own[ours[0]]
        out[VISUAL + k] = value.contiguous()
    for k in own:
        if k.startswith(OWN):
            out[k] = own[k]
    for k in list(out):
        if k.startswith(VISUAL) and _is_alias(k[len(VISUAL):]):
            out[k[len(VISUAL):]] = out[k]
    return out


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A .safetensors file or a torch pickle (.pt/.pth/.bin), unwrapping {"state_dict": ...} style nests."""
    path = Path(path)
    if not path.is_file():
        raise PsdistillError(f"{path}: official checkpoint not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickles with custom classes are refused by weights_only
        raise PsdistillError(f"{path}: cannot read as a plain torch state dict ({e}); re-save it as "
                             "torch.save(model.state_dict(), path)") from None
    for key in ("state_dict", "model", "model_state_dict", "net"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise PsdistillError(f"{path}: not a state dict of tensors")
    return obj
