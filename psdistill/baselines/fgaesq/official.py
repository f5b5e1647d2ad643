"""Load an FGAesQ checkpoint in the official release's format: a torch state dict of the CLIP visual
backbone (OpenAI CLIP naming) plus the score head.

The official code (github yzc-ippl/FG-IAA) builds on OpenAI's `clip` package, whose ViT keys are
mapped here to transformers' CLIPVisionModel:

    visual.class_embedding                           -> vision_model.embeddings.class_embedding
    visual.positional_embedding                      -> vision_model.embeddings.position_embedding.weight
    visual.conv1.weight                              -> vision_model.embeddings.patch_embedding.weight
    visual.ln_pre.*                                  -> vision_model.pre_layrnorm.*
    visual.transformer.resblocks.N.attn.in_proj_*    -> vision_model.encoder.layers.N.self_attn.{q,k,v}_proj.* (split in 3)
    visual.transformer.resblocks.N.attn.out_proj.*   -> ...layers.N.self_attn.out_proj.*
    visual.transformer.resblocks.N.ln_1.* / ln_2.*   -> ...layers.N.layer_norm1.* / layer_norm2.*
    visual.transformer.resblocks.N.mlp.c_fc.*        -> ...layers.N.mlp.fc1.*
    visual.transformer.resblocks.N.mlp.c_proj.*      -> ...layers.N.mlp.fc2.*
    visual.ln_post.*                                 -> vision_model.post_layernorm.*
    visual.proj  [D, E]                              -> visual_projection.weight [E, D] (transposed)
    <head>.weight [10, E or D], <head>.bias [10]     -> head.weight, head.bias

The release's exact prefixes and head name are not known here, so common wrappers are stripped
(`module.`, `model.`, `clip.`, `clip_model.`, `backbone.`, `image_encoder.`, `encoder.`) and the head
is any remaining `*.weight`/`*.bias` pair with `num_bins` outputs. Keys already in this package's
naming load as they are. Nothing is loaded silently: missing and unexpected keys are reported, and
by default they are an error.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

import torch

from psdistill.errors import PsdistillError

_WRAPPERS = ("module.", "model.", "clip_model.", "clip.", "backbone.", "image_encoder.", "encoder.")
_LAYER = re.compile(r"^transformer\.resblocks\.(\d+)\.(.+)$")
_LAYER_PARTS = {
    "attn.out_proj.weight": "self_attn.out_proj.weight",
    "attn.out_proj.bias": "self_attn.out_proj.bias",
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
class LoadReport:
    """What a conversion did: `mapped` official key -> our key(s), and what did not fit."""

    mapped: dict[str, list[str]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # our keys nothing was loaded into
    unexpected: list[str] = field(default_factory=list)  # official keys that map to nothing
    mismatched: list[str] = field(default_factory=list)  # "key: official shape vs ours"

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self) -> str:
        parts = [f"{len(self.mapped)} official tensors mapped"]
        for name in ("missing", "unexpected", "mismatched"):
            keys = getattr(self, name)
            if keys:
                parts.append(f"{name} ({len(keys)}): " + ", ".join(keys[:12]) + (" ..." if len(keys) > 12 else ""))
        return "; ".join(parts)


def _strip(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for w in _WRAPPERS:
            if key.startswith(w):
                key, changed = key[len(w):], True
    return key


def convert_openai_state_dict(state: Mapping[str, torch.Tensor], num_bins: int = 10,
                              head_names: Optional[tuple[str, ...]] = None) -> tuple[dict, LoadReport]:
    """Official (OpenAI-CLIP naming) state dict -> this package's FGAesQModel naming.

    Returns (converted state dict, report with `unexpected` official keys filled in; `missing`
    and `mismatched` are filled by `load_official_weights`, which knows the target model).
    """
    out: dict[str, torch.Tensor] = {}
    report = LoadReport()
    leftovers: dict[str, torch.Tensor] = {}
    for raw_key, value in state.items():
        key = _strip(raw_key)
        if key.startswith(("vision_model.", "visual_projection.", "head.")):  # already our naming
            out[key] = value
            report.mapped[raw_key] = [key]
            continue
        if not key.startswith("visual."):
            leftovers[raw_key] = value
            continue
        k = key[len("visual."):]
        if k in _TOP:
            new = [_TOP[k]]
            out[new[0]] = value
        elif k == "proj":  # OpenAI stores x @ proj, [D, E]; nn.Linear wants [E, D]
            new = ["visual_projection.weight"]
            out[new[0]] = value.t().contiguous()
        elif (m := _LAYER.match(k)):
            n, part = m.group(1), m.group(2)
            base = f"vision_model.encoder.layers.{n}."
            if part in ("attn.in_proj_weight", "attn.in_proj_bias"):
                kind = "weight" if part.endswith("weight") else "bias"
                q, kk, v = value.chunk(3, dim=0)  # in_proj stacks [q; k; v] along the output dim
                new = [f"{base}self_attn.{p}_proj.{kind}" for p in ("q", "k", "v")]
                for name, t in zip(new, (q, kk, v)):
                    out[name] = t.contiguous()
            elif part in _LAYER_PARTS:
                new = [base + _LAYER_PARTS[part]]
                out[new[0]] = value
            else:
                report.unexpected.append(raw_key)
                continue
        else:
            report.unexpected.append(raw_key)
            continue
        report.mapped[raw_key] = new

    # The head: a weight/bias pair with num_bins outputs among what is left (or the names given).
    heads: dict[str, dict[str, torch.Tensor]] = {}
    for raw_key, value in leftovers.items():
        key = _strip(raw_key)
        prefix, _, leaf = key.rpartition(".")
        if leaf in ("weight", "bias") and value.shape[:1] == (num_bins,) and value.dim() in (1, 2):
            if head_names is None or prefix in head_names:
                heads.setdefault(prefix, {})[leaf] = (raw_key, value)
                continue
        report.unexpected.append(raw_key)
    complete = {p: d for p, d in heads.items() if set(d) == {"weight", "bias"}}
    if len(complete) == 1:
        (prefix, d), = complete.items()
        for leaf in ("weight", "bias"):
            raw_key, value = d[leaf]
            out[f"head.{leaf}"] = value
            report.mapped[raw_key] = [f"head.{leaf}"]
        heads.pop(prefix)
    for d in heads.values():  # zero or several candidate heads: nothing is guessed
        report.unexpected.extend(raw for raw, _ in d.values())
    return out, report


def head_in_features(state: Mapping[str, torch.Tensor], num_bins: int = 10) -> Optional[int]:
    """Input width of the official head (to build the model with head_input "projection" or "pooled")."""
    converted, _ = convert_openai_state_dict(state, num_bins)
    w = converted.get("head.weight")
    return None if w is None else int(w.shape[1])


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


def load_official_weights(model, state: Mapping[str, torch.Tensor] | str | Path, strict: bool = True,
                          head_names: Optional[tuple[str, ...]] = None) -> LoadReport:
    """Map an official state dict onto `model` (an FGAesQModel built with the matching architecture).

    strict=True (default) raises PsdistillError listing missing, unexpected and mismatched keys and
    loads nothing; strict=False loads what fits and warns with the same lists. Returns the report.
    """
    if isinstance(state, (str, Path)):
        state = read_state_dict(state)
    converted, report = convert_openai_state_dict(state, model.config.num_bins, head_names)
    own = model.state_dict()
    loadable = {}
    for key, value in converted.items():
        if key not in own:
            report.unexpected.extend(r for r, new in report.mapped.items() if key in new)
        elif tuple(own[key].shape) != tuple(value.shape):
            report.mismatched.append(f"{key}: {tuple(value.shape)} vs {tuple(own[key].shape)}")
        else:
            loadable[key] = value.to(own[key].dtype)
    report.unexpected = list(dict.fromkeys(report.unexpected))
    report.missing = sorted(k for k in own if k not in loadable and k not in {m.split(":")[0] for m in report.mismatched})
    if not report.ok:
        if strict:
            raise PsdistillError("official checkpoint does not match the model: " + report.summary()
                                 + " (pass strict=False to load the rest)")
        warnings.warn("official checkpoint loaded partially: " + report.summary(), stacklevel=2)
    model.load_state_dict(loadable, strict=False)
    return report
