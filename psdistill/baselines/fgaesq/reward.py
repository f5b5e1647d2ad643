"""FGAesQ as a differentiable reward (psdistill.scoring.reward): its single-image score of images
(B, 3, H, W) in [0, 1], with the scorer's preprocessing in torch.

- "resize" (checkpoints of recipes/fgaesq.py): the image resized to the ViT's long edge, sides multiples of
  the patch (`FGAesQModel.single_size`), normalised. PIL's bicubic is replaced by torch's antialiased
  bicubic (PIL's kernel, on floats), so scores equal the scorer's where the size is kept and differ a
  little where it is not.
- "official" (official checkpoints): the release's tokens at native resolution (official_tokens.py),
  built from the normalised tensor as the scorer builds them, so the scores are the scorer's on the
  same pixels, its random draws (multiscale regions, token drops) seeded alike.
"""
from __future__ import annotations

import random

import torch

from psdistill.baselines.fgaesq.official_tokens import collate, image_tokens
from psdistill.scoring.reward import FrozenReward
from psdistill.scoring.torch_preprocess import check_images


class FGAesQReward(FrozenReward):
    """FGAesQ's scores on 1..10 (B,), differentiable to the pixels; built by `FGAesQScorer.reward()`."""

    dimensions = ("overall",)

    def __init__(self, scorer, gradient_checkpointing: bool = False):
        super().__init__(scorer.model, gradient_checkpointing, pretrained=scorer.model.vision_model)
        self.name, self.score_range = scorer.name, tuple(scorer.score_range)
        self.single, self.seed = scorer.single, scorer.seed

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        model, c = self.model, self.model.config
        x = check_images(images).to(self.device)
        mean, std = (torch.tensor(v).to(x).view(1, 3, 1, 1) for v in (c.image_mean, c.image_std))
        if self.single == "official":
            tokens = [image_tokens(xi, model.patch_size, random.Random(self.seed), c.max_seq_len)
                      for xi in (x - mean) / std]
            return model(**{k: v.to(self.device) for k, v in collate(tokens, c.max_seq_len).items()}).scores
        width, height = model.single_size((x.shape[-1], x.shape[-2]))
        if (height, width) != tuple(x.shape[-2:]):
            x = torch.nn.functional.interpolate(x, size=(height, width), mode="bicubic", antialias=True,
                                                align_corners=False).clamp(0, 1)
        return model(pixel_values=(x - mean) / std).scores
