"""The one place psdistill reads a hidden state out of a transformers forward pass.

The scalar head (psdistill.scoring.readout) scores an image from the state the VLM ends its prompt
in. Which tensor that is rests on two conventions, written here once and checked against the tiny
Qwen3-VL by tests/test_distill_hidden_state.py, so a transformers upgrade that changes either fails there:
- `outputs.hidden_states` (with `output_hidden_states=True`) holds the embeddings, then one entry per
  decoder layer; its last entry is the decoder's output after the final norm, the same tensor as the
  inner model's `last_hidden_state` (what `lm_head` reads).
- Batches are padded on the left (psdistill.models.processor sets `padding_side="left"`), so every row's
  last position is its last real token, where the answer would start.
"""
from __future__ import annotations

import torch


def last_token_state(outputs) -> torch.Tensor:
    """(batch, hidden): the final (normed) hidden state at each row's last, non-pad position of a forward
    pass run with `output_hidden_states=True` on left-padded inputs."""
    return outputs.hidden_states[-1][:, -1]
