"""How a score is read from one forward pass of the (adapted) VLM per image.

Two heads read a score from that pass:
- `levels` (default; Q-Align, Wu et al. 2023, https://arxiv.org/abs/2312.17090): after a pointwise
  prompt, softmax the next-token logits over the level words ("Excellent" ... "Bad", each one token
  right after the prompt) and take the expected level value, mapped linearly onto the rating scale.
  No parameter is added, so the student is the same VLM (plus LoRA), and the untrained model is the
  zero-shot teacher (teacher.py).
- `scalar`: a linear head on the final hidden state of the last token (as reward models do).

Batches are left-padded (the processor's tokenizer pads left), so the last position of every row is
the answer position.

Several dimensions: one prompt per dimension, all reading the same head, and still one pass per image
(`Readout`). The prompts share everything up to where their texts differ (the chat template's start,
the image, any common words): that prefix runs once per image and its KV cache is reused by each
dimension's text suffix, as the judge reuses a pair's shared prefix (psdistill/models/prefix_kv.py).
Chosen over several outputs read from one prompt because each dimension keeps a prompt of its own
that the untrained VLM can answer zero-shot (the teacher-pointwise scorer and the starting point of
training), and a one-dimension student stays exactly what it is today; the added cost per dimension
is its suffix's few text tokens, not another pass over the image tokens.
In training with gradient checkpointing (which keeps no KV cache) each dimension's full prompt runs
instead: the same scores, D passes over the image per training step; scoring keeps the one pass.
"""
from __future__ import annotations

import os.path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from psdistill.core.errors import ConfigError
from psdistill.models.hidden_state import last_token_state
from psdistill.models.prefix_kv import continue_prefix, mrope_positions, run_prefix, unwrap
from psdistill.models.readout_tokens import next_token_ids
from psdistill.scoring.spec import ScorerSpec


def render_prompt(processor, text: str) -> str:
    """One user turn with one image and `text`, ending where the assistant's answer starts."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def level_token_ids(processor, words: Sequence[str], text: str) -> list[int]:
    """The token id of each level word where it is read: right after the rendered prompt for user `text`.

    Raises ConfigError naming the words that are not one token there.
    """
    return next_token_ids(processor.tokenizer, render_prompt(processor, text), words, "distill.level_words", "level word")


def processor_inputs(processor, prompt: str, images: Sequence[Image.Image]) -> dict:
    """Batched, left-padded model inputs for one rendered prompt per image."""
    return dict(processor(text=[prompt] * len(images), images=list(images), return_tensors="pt", padding=True))


def attach_score_head(model, rating_scale: Sequence[float]) -> torch.nn.Linear:
    """Adds `model.score_head` (hidden -> 1) for the scalar head, starting at the scale's midpoint.

    Zero weights make the first outputs equal (no random initial ranking); the bias starts the
    outputs in the middle of the scale, where the calibration term wants them on average.
    """
    hidden = model.config.get_text_config().hidden_size
    head = torch.nn.Linear(hidden, 1, dtype=torch.float32, device=model.device)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.constant_(head.bias, (rating_scale[0] + rating_scale[1]) / 2)
    model.score_head = head
    return head


def score_head(model) -> torch.nn.Module:
    """The scalar head in use: under peft, the modules_to_save wrapper in the base model."""
    return unwrap(model).score_head


class Readout:
    """Scores (B, D) on the rating scale, one column per dimension of `spec`, from processor inputs of
    `text` for each image: one forward pass per image (the shared prefix, for several dimensions)."""

    def __init__(self, spec: ScorerSpec, processor):
        self.head = spec.head
        prompts = [render_prompt(processor, spec.prompts[d]) for d in spec.dimensions]
        if len(prompts) == 1:
            self.text, self.suffixes = prompts[0], None
        else:
            self.text, self.suffixes = shared_prefix(processor.tokenizer, prompts)
        if spec.head == "levels":
            ids = {tuple(level_token_ids(processor, spec.level_words, spec.prompts[d])) for d in spec.dimensions}
            if len(ids) > 1:
                raise ConfigError(f"distill.level_words: {spec.level_words} are other tokens after some "
                                  "dimensions' prompts; end the prompts alike")
            self.token_ids = torch.tensor(ids.pop())
            # The affine map value -> rating scale commutes with the expectation, so map the values once.
            v = np.asarray(spec.level_values, dtype=float)
            lo, hi = spec.rating_scale
            self.values = torch.tensor(lo + (v - v.min()) * (hi - lo) / (v.max() - v.min()), dtype=torch.float32)

    def __call__(self, model, inputs: dict, spread: bool = False):
        """Scores (B, D); with `spread`, (scores, spreads): the levels head's standard deviation over its
        levels on the rating scale, ones for the scalar head (psdistill/scoring/conformal.py)."""
        columns = self._columns(model, inputs, spread)
        if not spread:
            return torch.stack(columns, 1)
        return torch.stack([c[0] for c in columns], 1), torch.stack([c[1] for c in columns], 1)

    def _columns(self, model, inputs: dict, spread: bool) -> list:
        hidden = self.head == "scalar"
        if self.suffixes is None:
            # logits_to_keep=1: only the answer position goes through lm_head (a 150k-vocab matmul per token otherwise).
            return [self._score(model, model(**inputs, logits_to_keep=1, output_hidden_states=hidden), spread)]
        inner = unwrap(model)
        if any(m.training and getattr(m, "gradient_checkpointing", False) for m in inner.modules()):
            # Checkpointed layers run twice in backward and keep no KV cache: each dimension's full prompt
            # instead (the same scores; D passes over the image in training, inference keeps one).
            return [self._score(model, model(**_with_suffix(inputs, ids), logits_to_keep=1,
                                             output_hidden_states=hidden), spread)
                    for ids in self.suffixes]
        if not hasattr(inner.base_model, "get_rope_index"):
            raise ConfigError(f"data.dimensions: several dimensions in one pass need a Qwen-VL model (M-RoPE "
                              f"positions continue from the prefix's); {type(inner).__name__} is none")
        prefix = run_prefix(model, **inputs)  # image and shared text, once
        columns = []
        for ids in self.suffixes:
            # The suffix's positions are those its dimension's full prompt gives it.
            full = _with_suffix(inputs, ids)
            positions = mrope_positions(model, full["input_ids"], full["mm_token_type_ids"], full["image_grid_thw"],
                                        full["attention_mask"])[..., -len(ids):]
            out = continue_prefix(model, prefix, input_ids=full["input_ids"][:, -len(ids):],
                                  attention_mask=full["attention_mask"], position_ids=positions, logits_to_keep=1,
                                  output_hidden_states=hidden)
            columns.append(self._score(model, out, spread))
        return columns

    def _score(self, model, out, spread: bool = False):
        """(B,) scores, or with `spread` (scores, spreads)."""
        if self.head == "levels":
            logits = out.logits[:, -1, self.token_ids.to(out.logits.device)].float()
            probs, values = torch.softmax(logits, dim=-1), self.values.to(logits.device)
            mean = probs @ values
            if not spread:
                return mean
            # The levels' standard deviation: E[(v - mean)^2] per row.
            return mean, ((values[None, :] - mean[:, None]).square() * probs).sum(-1).sqrt()
        head = score_head(model)
        h = last_token_state(out)
        score = head(h.to(next(head.parameters()).dtype)).squeeze(-1).float()
        return (score, torch.ones_like(score)) if spread else score


def _with_suffix(inputs: dict, ids: torch.Tensor) -> dict:
    """Processor inputs of the shared prefix with a dimension's suffix tokens appended: its full prompt
    (left padding, so every row ends where the suffix goes)."""
    rows, ids = len(inputs["input_ids"]), ids.to(inputs["input_ids"].device)
    out = dict(inputs, input_ids=torch.cat([inputs["input_ids"], ids[None].expand(rows, -1)], 1),
               attention_mask=torch.cat([inputs["attention_mask"], torch.ones(rows, len(ids), dtype=inputs["attention_mask"].dtype,
                                                                              device=ids.device)], 1))
    if "mm_token_type_ids" in inputs:  # 0: text
        out["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], torch.zeros_like(out["input_ids"][:, -len(ids):])], 1)
    return out


def shared_prefix(tokenizer, prompts: Sequence[str]) -> tuple[str, list[torch.Tensor]]:
    """(the longest common prefix text of `prompts`, each prompt's remaining token ids), cut where the
    prefix's tokens followed by a suffix's are exactly that prompt's tokens (no merge across the cut)."""
    common = os.path.commonprefix(list(prompts))
    full = [tokenizer.encode(p, add_special_tokens=False) for p in prompts]
    for cut in range(len(common), 0, -1):
        head = tokenizer.encode(common[:cut], add_special_tokens=False)
        if all(ids[:len(head)] == head and len(ids) > len(head) for ids in full):
            return common[:cut], [torch.tensor(ids[len(head):]) for ids in full]
    raise ConfigError("distill.prompt: the dimensions' prompts share no prefix to run once")
