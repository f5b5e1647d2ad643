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
original is an error naming the key, and so is a checkpoint the release's ViT-B/16 cannot be
(another patch, input size or depth, a head on the CLS; `official_vision_config`). A uniform
`module.` prefix (DataParallel) is removed first.
`to_official_state_dict` writes the release's keys (text tower excluded: the release loads with
strict=False, so its own CLIP text tower stays).
"""
from __future__ import annotations

import math
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
RELEASE_PATCH, RELEASE_GRID = 16, 14  # CLIP ViT-B/16 at 224 px: what the release's DiffToken assumes
RELEASE_DEPTH = {768: 12}  # ViT-B/16's layers at its width (reduced-width test models: the checkpoint's count)
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


def official_vision_config(state: Mapping[str, torch.Tensor], num_heads: Optional[int] = None,
                           num_layers: Optional[int] = None) -> dict:
    """The vision tower's size read from an official state dict: a CLIPVisionConfig dict plus
    `projection_dim` (heads: `num_heads`, else CLIP's own rule width // 64).

    The release's FGAesQ is CLIP ViT-B/16 (`clip.load("ViT-B/16")`: width 768, 12 layers, 16 px
    patches, 224 px input, i.e. 197 positions) with a head on the 512-d projection, and DiffToken cuts
    16 px patches; a checkpoint of another patch, input size or head, or whose layers are not
    0..`num_layers`-1 (default: 12 at width 768; at reduced test widths the checkpoint's own count),
    is one PsdistillError naming the checkpoint's keys. (The release would load a checkpoint without
    its last layer with strict=False and keep CLIP's pretrained layer there, which is not here.)"""
    state = _strip_module(state)
    need = [VISUAL + k for k in ("conv1.weight", "positional_embedding", "proj")] + ["iqa_head.0.weight"]
    missing = [k for k in need if k not in state]
    if missing:
        raise PsdistillError(f"official FGAesQ checkpoint: missing {', '.join(missing)}")
    conv, pos, proj = (state[VISUAL + k] for k in ("conv1.weight", "positional_embedding", "proj"))
    width, patch, embed = int(conv.shape[0]), int(conv.shape[-1]), int(proj.shape[1])
    layers = sorted({int(m.group(1)) for k in state
                     if (m := _LAYER.match(k[len(VISUAL):]) if k.startswith(VISUAL) else None)})
    fc = state.get(f"{VISUAL}transformer.resblocks.0.mlp.c_fc.weight")
    if not layers or fc is None:
        raise PsdistillError(f"official FGAesQ checkpoint: no {VISUAL}transformer.resblocks.0.* layers")
    problems = _release_geometry(conv, pos, layers, width, num_layers)
    head_in = int(state["iqa_head.0.weight"].shape[1])
    if head_in != embed:
        what = f"the {head_in}-d CLS (a head the release does not have)" if head_in == width else f"{head_in} features"
        problems.append(f"iqa_head.0.weight {tuple(state['iqa_head.0.weight'].shape)} reads {what}; the release's "
                        f"head reads the {embed}-d projection {VISUAL}proj")
    heads = num_heads or max(1, width // 64)
    if width % heads:
        problems.append(f"width {width} ({VISUAL}conv1.weight) is not divisible by {heads} heads")
    if problems:
        raise PsdistillError("official FGAesQ checkpoint: " + "; ".join(problems))
    return {"vision": dict(hidden_size=width, intermediate_size=int(fc.shape[0]), num_hidden_layers=len(layers),
                           num_attention_heads=heads, patch_size=patch, image_size=RELEASE_GRID * patch, num_channels=3,
                           hidden_act="quick_gelu", layer_norm_eps=1e-5),
            "projection_dim": embed}


def _release_geometry(conv, pos, layers: list[int], width: int, num_layers: Optional[int]) -> list[str]:
    """What of the patch, the positions and the layers differs from the release's ViT-B/16, by key."""
    problems = []
    patch = int(conv.shape[-1])
    if patch != RELEASE_PATCH:
        problems.append(f"{VISUAL}conv1.weight {tuple(conv.shape)} embeds {patch} px patches; the release's "
                        f"(CLIP ViT-B/16, DiffToken) are {RELEASE_PATCH} px")
    n = int(pos.shape[0])
    if n != RELEASE_GRID ** 2 + 1:
        side = math.isqrt(n - 1) if n > 1 else 0
        grid = (f"a {side}x{side} grid: {side * patch} px input" if side * side == n - 1 and n > 1
                else "not a square grid")
        problems.append(f"{VISUAL}positional_embedding {tuple(pos.shape)} has {n} positions ({grid}); the release's "
                        f"has {RELEASE_GRID ** 2 + 1} ({RELEASE_GRID}x{RELEASE_GRID}: "
                        f"{RELEASE_GRID * RELEASE_PATCH} px)")
    if num_layers:
        depth, whose = num_layers, f"num_layers={num_layers}"
    elif width in RELEASE_DEPTH:
        depth, whose = RELEASE_DEPTH[width], f"the release's ViT-B/16 has {RELEASE_DEPTH[width]} at width {width}"
    else:  # a reduced-width model, not the release's size: its own highest layer
        depth, whose = layers[-1] + 1, f"up to resblocks.{layers[-1]}"
    absent = [i for i in range(depth) if i not in layers]
    beyond = [i for i in layers if i >= depth]
    if absent or beyond:
        parts = [f"missing {', '.join(f'{VISUAL}transformer.resblocks.{i}.*' for i in absent)}" if absent else "",
                 f"beyond the model {', '.join(f'{VISUAL}transformer.resblocks.{i}.*' for i in beyond)}"
                 if beyond else ""]
        problems.append(f"{len(layers)} transformer layers ({whose}): " + ", ".join(p for p in parts if p))
    return problems


def load_official_weights(model, state: Mapping[str, torch.Tensor] | str | Path) -> KeyMappingReport:
    """Load an official state dict into `model` (an FGAesQModel of the matching size), strictly:
    PsdistillError naming the checkpoint's keys (the release's names) if any the model needs is
    missing, any shape differs, or a key is unknown."""
    if isinstance(state, (str, Path)):
        state = read_state_dict(state)
    state = _strip_module(state)
    converted, report = convert_official_state_dict(state)
    expected = to_official_state_dict(model)  # the release's keys and shapes for this model
    missing = [k for k in expected if k not in state and not _is_alias(k)]
    shapes = [f"{k}: {tuple(state[k].shape)} in the checkpoint vs {tuple(v.shape)} in the model"
              for k, v in expected.items() if k in state and not _is_alias(k) and state[k].shape != v.shape]
    extra = [k for k in report.used if k not in expected]
    if extra or shapes or missing:
        parts = [f"{name} ({len(keys)}): {', '.join(keys[:12])}" for name, keys in
                 (("missing", missing), ("shape mismatch", shapes), ("not in the model", extra)) if keys]
        raise PsdistillError("official FGAesQ checkpoint does not fit the model: " + "; ".join(parts))
    own = model.state_dict()
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
