"""CLIP's text tower for CTAlign: built by `model.load_base`, used by the training loop, never saved."""
from __future__ import annotations

from typing import Sequence

import torch


class TextEncoder:
    """CLIP's frozen text tower: texts -> projected embeddings E_t [T, E] (CTAlign, training only).

    [our choice] The paper does not say whether E_t is trained; it is frozen here, so descriptions
    are embedded once and the image tower learns to move towards fixed text directions.
    """

    def __init__(self, text_model, text_projection, tokenizer, max_length: int):
        self.text_model = text_model.eval().requires_grad_(False)
        self.text_projection = text_projection.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.max_length = max_length

    def to(self, device):
        self.text_model.to(device)
        self.text_projection.to(device)
        return self

    @torch.no_grad()
    def encode(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        device = self.text_projection.weight.device
        eos = self.tokenizer.eos_token_id
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos
        out = []
        for start in range(0, len(texts), batch_size):
            ids = []
            for t in texts[start:start + batch_size]:
                row = self.tokenizer(t, truncation=True, max_length=self.max_length)["input_ids"]
                if eos is not None and (not row or row[-1] != eos):  # the pooled token is the EOS
                    row = row[: self.max_length - 1] + [eos]
                ids.append(row)
            n = max(len(r) for r in ids)
            input_ids = torch.tensor([r + [pad] * (n - len(r)) for r in ids], device=device)
            mask = torch.tensor([[1] * len(r) + [0] * (n - len(r)) for r in ids], device=device)
            hidden = self.text_model(input_ids=input_ids, attention_mask=mask).last_hidden_state
            # Pool at the last real token (the EOS): what CLIP does, without relying on the
            # config's eos_token_id (legacy value 2 in OpenAI's configs, "argmax id" pooling).
            last = mask.sum(dim=1) - 1
            pooled = hidden[torch.arange(len(ids), device=device), last]
            out.append(self.text_projection(pooled).float())
        return torch.cat(out)
