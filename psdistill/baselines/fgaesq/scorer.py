"""FGAesQScorer: a trained FGAesQ behind the common scorer interface.

    >>> from psdistill.registry import create_scorer                  # doctest: +SKIP
    >>> s = create_scorer("fgaesq", path="runs/fgaesq/checkpoint")     # doctest: +SKIP
    >>> s.score(["a.jpg", "b.jpg"])                                    # doctest: +SKIP
    array([6.1, 4.8])

`score` is the single-image path (one forward per image, no reference; the paper's "FGAesQ w/o
DiffToken" inference row). `score_pairs` / `score_series` add DiffToken at inference: an image is
tokenized against a reference from its series, and `score_series` averages its score over every
other member as the reference [our choice; the paper does not say how references are picked at test time].
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image

from psdistill.baselines.fgaesq.difftoken import collate_tokens, difftoken
from psdistill.baselines.fgaesq.model import CLIP_VIT_B16_CONFIG, FGAesQModel, load_base
from psdistill.baselines.fgaesq.official import LoadReport, head_in_features, load_official_weights, read_state_dict
from psdistill.data.images import load_image, to_rgb
from psdistill.errors import DataError, PsdistillError

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _as_image(x) -> Image.Image:
    if isinstance(x, Image.Image):
        return to_rgb(x)
    if isinstance(x, (str, Path)):
        return load_image(x)
    raise DataError(f"FGAesQScorer: expected an image path or a PIL image, got {type(x).__name__}")


class FGAesQScorer:
    name = "fgaesq"
    score_range = (1.0, 10.0)
    lower_better = False
    source = "FGAesQ (Yang et al.), reimplemented in psdistill.baselines.fgaesq"

    def __init__(self, model: FGAesQModel, device: Optional[str] = None, batch_size: int = 32):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.batch_size = batch_size
        self.load_report: Optional[LoadReport] = None

    @classmethod
    def from_pretrained(cls, path: str | Path, device: Optional[str] = None, dtype: Optional[str] = None,
                        batch_size: int = 32, attn_implementation: Optional[str] = None) -> "FGAesQScorer":
        """A checkpoint written by recipes/fgaesq.py (`<run_dir>/checkpoint`) or `FGAesQModel.save_pretrained`."""
        model = FGAesQModel.from_pretrained(path, attn_implementation=attn_implementation)
        if dtype:
            model = model.to(_DTYPES[dtype])
        return cls(model, device=device, batch_size=batch_size)

    @classmethod
    def from_official(cls, weights: str | Path, base: str | Path = CLIP_VIT_B16_CONFIG, strict: bool = True,
                      device: Optional[str] = None, batch_size: int = 32,
                      head_input: Optional[str] = None) -> "FGAesQScorer":
        """An official FGAesQ state dict (OpenAI-CLIP naming, see `official.py`).

        `base` gives the architecture: a CLIPConfig .json (default: the bundled ViT-B/16 config, no
        download), a CLIP folder or hub id. `head_input` None: read from the head's width (768:
        "pooled", 512: "projection" for ViT-B/16; equal widths cannot be told apart and mean
        "projection"). Missing or unexpected keys raise unless strict=False.
        """
        state = read_state_dict(weights)
        probe, _ = load_base(str(base), with_text=False)
        if head_input is None:
            width = head_in_features(state, probe.config.num_bins)
            hidden, proj = probe.vision_model.config.hidden_size, probe.config.projection_dim
            head_input = "pooled" if width == hidden != proj else "projection"
        model = probe
        if head_input != probe.config.head_input:
            model, _ = load_base(str(base), with_text=False, head_input=head_input)
        report = load_official_weights(model, state, strict=strict)
        model.config.base = f"official:{weights}"
        scorer = cls(model, device=device, batch_size=batch_size)
        scorer.load_report = report
        return scorer

    def save_pretrained(self, path: str | Path) -> Path:
        return self.model.save_pretrained(path)

    # -- scoring -------------------------------------------------------------------------------
    @torch.no_grad()
    def score(self, images: Sequence) -> np.ndarray:
        """Scores on 1..10 (higher is better), single-image path."""
        out = np.empty(len(images), dtype=np.float64)
        for start in range(0, len(images), self.batch_size):
            chunk = [_as_image(x) for x in images[start:start + self.batch_size]]
            groups, idx = self.model.preprocess(chunk)
            res = self.model(pixel_values=[g.to(self.device) for g in groups]).scores.float().cpu().numpy()
            flat = [start + k for ks in idx for k in ks]
            out[flat] = res
        return out

    @torch.no_grad()
    def score_pairs(self, images: Sequence, references: Sequence, seed: int = 0) -> np.ndarray:
        """Score each image tokenized by DiffToken against its reference (same length sequences)."""
        if len(images) != len(references):
            raise ValueError(f"score_pairs: {len(images)} images but {len(references)} references")
        m = self.model
        cfg = m.config
        gen = torch.Generator().manual_seed(seed)  # dropping, when the budget binds, is reproducible
        out = np.empty(len(images), dtype=np.float64)
        for start in range(0, len(images), self.batch_size):
            toks = [difftoken(_as_image(x), _as_image(y), cfg.difftoken, m.image_size, m.patch_size,
                              cfg.image_mean, cfg.image_std, gen)[0]
                    for x, y in zip(images[start:start + self.batch_size], references[start:start + self.batch_size])]
            batch = {k: v.to(self.device) for k, v in collate_tokens(toks).items()}
            out[start:start + len(toks)] = m(**batch).scores.float().cpu().numpy()
        return out

    def score_series(self, images: Sequence) -> np.ndarray:
        """Each image's mean DiffToken score against every other image of the series."""
        ims = [_as_image(x) for x in images]
        n = len(ims)
        if n < 2:
            return self.score(ims)
        pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
        s = self.score_pairs([ims[i] for i, _ in pairs], [ims[j] for _, j in pairs])
        total = np.zeros(n)
        for (i, _), v in zip(pairs, s):
            total[i] += v
        return total / (n - 1)


def create_fgaesq_scorer(path: str, device: Optional[str] = None, batch_size: int = 32,
                         base: Optional[str] = None, strict: bool = True, dtype: Optional[str] = None) -> FGAesQScorer:
    """Registry factory: `path` is a checkpoint folder (recipes/fgaesq.py) or an official state dict file."""
    if path is None:
        raise PsdistillError("fgaesq: pass path=<run_dir>/checkpoint (train one with recipes/fgaesq.py) "
                             "or path=<official FGAesQ .pth>")
    p = Path(path)
    if p.is_dir():
        return FGAesQScorer.from_pretrained(p, device=device, dtype=dtype, batch_size=batch_size)
    if p.is_file():
        return FGAesQScorer.from_official(p, base=base or CLIP_VIT_B16_CONFIG, strict=strict, device=device,
                                          batch_size=batch_size)
    raise PsdistillError(f"fgaesq: {path} is neither a checkpoint folder nor a weights file")
