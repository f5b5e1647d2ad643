"""A prompt prefix run once and its KV cache reused by several continuations; the judge's pairs on it.

The generic part, used by the judge (below) and by the scorer's readout of several dimensions
(psdistill/scoring/readout.py): `run_prefix` runs a prefix into a transformers `DynamicCache`;
`continue_prefix` runs a continuation on a copy of that cache (the prefix stays reusable), its rows
repeated when one prefix serves a batch; `mrope_positions` gives Qwen-VL's 3-D positions of a full
sequence, whose slice a continuation passes explicitly, so no state of the model is relied upon.

The judge: a pair's prompt is [text before the first image][first image][text][second image][question].
Pairs that show the same image first (in a reference pool: every (reference, x) pair of one reference,
or every (x, reference) pair of one x in a fixed pool) share everything before the second image; all
pairs share the text before the first image. `PrefixReuse` runs that shared prefix once (batch 1),
keeps its KV cache, and runs only each pair's suffix, batched, on a copy of the cache repeated
across the batch. Exactly the full forward's computation, reordered:

- positions: the M-RoPE position ids of every row are computed by the model's own `get_rope_index`
  on the full (prefix + suffix) sequence, as on the stock path, and the suffix's slice is passed
  explicitly, so the second image's 3-D positions continue from the prefix (the model's
  `rope_deltas` state is never used);
- padding: rows differ in suffix length (the second image's size), so each suffix is left-padded
  *after* the cached prefix ([prefix][pad][suffix]); the attention mask hides the pad, and every
  row's last position is its answer position;
- the second image's embeddings and DeepStack features are scattered at the suffix's image tokens,
  as the full forward does at all of them.

The last prefix is memoised (one entry): groups arrive one after another (`prefix_groups`), so a
group split over several batches or several calls computes its prefix once.
"""
from __future__ import annotations

import inspect
from typing import Optional, Sequence

import torch


def unwrap(model):
    """The transformers model under DDP / DeepSpeed and peft wrappers."""
    while hasattr(model, "module"):
        model = model.module
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def cache_kwarg(model) -> str:
    """The forward's KV cache argument: transformers 5.2x renamed `past_key_values` to `cache`."""
    return "cache" if "cache" in inspect.signature(unwrap(model).forward).parameters else "past_key_values"


def run_prefix(model, **inputs):
    """The KV cache of `inputs` (a prompt prefix) after one forward pass; only its cache is kept."""
    from transformers import DynamicCache

    cache = DynamicCache()
    model(**inputs, logits_to_keep=1, **{cache_kwarg(model): cache})
    return cache


def continue_prefix(model, prefix, repeat: int = 1, **inputs):
    """The forward of `inputs` after `prefix`'s tokens, on a new cache holding the prefix's keys and values
    (copied: the forward appends to its own, so `prefix` serves the next continuation as it is), each row
    repeated `repeat` times (one prefix for a batch of continuations)."""
    from transformers import DynamicCache

    cache = DynamicCache(ddp_cache_data=prefix)  # a DynamicCache iterates its layers' (keys, values, sliding window)
    if repeat > 1:
        cache.batch_repeat_interleave(repeat)
    return model(**inputs, **{cache_kwarg(model): cache})


def mrope_positions(model, input_ids, mm_token_type_ids, image_grid_thw, attention_mask) -> torch.Tensor:
    """(3, rows, length) M-RoPE position ids of full, left-padded sequences as the Qwen-VL forward computes
    them (its `get_rope_index`): a continuation of a cached prefix passes its slice."""
    positions, _ = unwrap(model).base_model.get_rope_index(input_ids, mm_token_type_ids, image_grid_thw,
                                                           attention_mask=attention_mask)
    return positions


def encoded_inputs(processor, text: str, encoded: Sequence) -> dict:
    """Left-padded model inputs for len(encoded) / 2 pairs, images given encoded (`_Encoded`, two per pair,
    in the order they appear): input_ids, attention_mask, mm_token_type_ids, image_grid_thw."""
    grid = torch.cat([e.grid for e in encoded])
    # The processor's own placeholder expansion: one <|image_pad|> per merged vision token.
    replacements = [processor.replace_image_token({"image_grid_thw": grid}, n) for n in range(len(encoded))]
    texts, _ = processor.get_text_with_replacements([text] * (len(encoded) // 2), replacements)
    inputs = processor.tokenizer(texts, padding=True, padding_side="left", return_tensors="pt")
    mm_types = torch.tensor(processor.create_mm_token_type_ids(inputs["input_ids"]))
    return {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"],
            "mm_token_type_ids": mm_types, "image_grid_thw": grid}


def vision_outputs(encoded: Sequence) -> dict:
    """The model's `mm_encoder_outputs` for these encoded images, in order."""
    from transformers.models.qwen3_vl.modeling_qwen3_vl import BaseModelOutputWithDeepstackFeatures

    layers = range(len(encoded[0].deepstack))
    return {"image": BaseModelOutputWithDeepstackFeatures(
        pooler_output=tuple(e.embeds for e in encoded),
        deepstack_features=[tuple(e.deepstack[layer] for e in encoded) for layer in layers])}


def prefix_groups(rows: Sequence[int], first: Sequence[str]) -> list[tuple[bool, list[int]]]:
    """[(shares_first_image, rows)]: the rows whose first image (first[row]) is first in at least two
    rows, grouped by it; then all other rows in one group, which share only the text before it."""
    by_first: dict[str, list[int]] = {}
    for row in rows:
        by_first.setdefault(first[row], []).append(row)
    groups = [(True, g) for g in by_first.values() if len(g) > 1]
    rest = [g[0] for g in by_first.values() if len(g) == 1]
    return groups + ([(False, rest)] if rest else [])


class PrefixReuse:
    """Answer-position logits of Qwen3-VL pairs whose shared prefix is run once; see the module docstring."""

    def __init__(self, model, processor):
        self.model, self.processor = model, processor
        self._memo: Optional[tuple] = None  # (text, shared first image or None, prefix cache)
        self.tokens_saved = 0  # prefix tokens not run again: its length for every row but the one that ran it

    def logits(self, text: str, batch: Sequence[tuple], shares_first: bool) -> torch.Tensor:
        """(pairs, vocab) logits at the answer position. `batch`: (first, second) encoded images per pair;
        `shares_first`: every pair shows the same first image (the prefix then ends before the second)."""
        device = self.model.device
        encoded = [e for pair in batch for e in pair]
        inputs = {k: v.to(device) for k, v in encoded_inputs(self.processor, text, encoded).items()}
        ids, mask, types = inputs["input_ids"], inputs["attention_mask"], inputs["mm_token_type_ids"]
        positions = mrope_positions(self.model, ids, types, inputs["image_grid_thw"], mask)
        pad = (mask == 0).sum(1)  # left padding of each row
        pad0 = int(pad[0])
        cut = _image_starts(types[0, pad0:])[1 if shares_first else 0]  # the prefix's length
        self.tokens_saved += cut * (len(batch) - (not self._memoised(text, batch[0][0] if shares_first else None)))
        cache = self._prefix(text, batch[0][0] if shares_first else None,
                             ids[0, pad0:pad0 + cut], positions[:, :1, pad0:pad0 + cut])
        # Row r's suffix keeps its left padding and drops its prefix: column j reads j, or j + cut past the pad.
        cols = torch.arange(ids.shape[1] - cut, device=device)
        src = cols[None, :] + cut * (cols[None, :] >= pad[:, None])
        suffix_mask = torch.cat([mask.new_ones(len(batch), cut), mask.gather(1, src)], dim=1)
        suffix_images = encoded[1::2] if shares_first else encoded
        out = continue_prefix(self.model, cache, len(batch), input_ids=ids.gather(1, src), attention_mask=suffix_mask,
                              position_ids=positions.gather(2, src.expand(3, -1, -1)),
                              mm_encoder_outputs=vision_outputs(suffix_images), logits_to_keep=1)
        return out.logits[:, -1]

    def _memoised(self, text: str, first) -> bool:
        return self._memo is not None and self._memo[0] == text and self._memo[1] is first

    def _prefix(self, text: str, first, ids: torch.Tensor, positions: torch.Tensor):
        """The prefix's KV cache (batch 1), from the memo when it is the last one computed."""
        if self._memoised(text, first):
            return self._memo[2]
        cache = run_prefix(self.model, input_ids=ids[None], attention_mask=torch.ones_like(ids)[None],
                           position_ids=positions,
                           mm_encoder_outputs=vision_outputs([first]) if first is not None else None)
        self._memo = (text, first, cache)
        return cache


def _image_starts(types: torch.Tensor) -> list[int]:
    """Indices where a run of image tokens (type 1) starts in one unpadded row of token types."""
    image = (types == 1).long()
    return torch.nonzero(torch.diff(image, prepend=image.new_zeros(1)) == 1).flatten().tolist()
