"""FGAesQScorer: a trained FGAesQ behind the common scorer interface.

    >>> from psdistill.scoring.registry import create_scorer                  # doctest: +SKIP
    >>> s = create_scorer("fgaesq", path="runs/fgaesq/checkpoint")     # doctest: +SKIP
    >>> s.score(["a.jpg", "b.jpg"])                                    # doctest: +SKIP
    array([6.1, 4.8])

`score` is the single-image path; `score_series` scores a series with DiffToken. How images are
tokenized follows the model's config (`single`, `series`; see model.py), or the arguments:

- "official" (official checkpoints): the release's inference_single / inference_series
  (official_tokens.py): single images at native resolution, seeded by `seed`; a series scores every
  pair (i < j) with pair id "<series_id>_<i>_<j>" (the release reads i, j from file names x-<i>.jpg
  and the series id from the folder name), averages each image's pair scores and, for series of >= 4
  images, shrinks them towards the series mean;
- "resize" / "project" (checkpoints of recipes/fgaesq.py, as trained): images resized to a
  224 px long edge; DiffToken of difftoken.py, each image's mean score against every other member
  as the reference (`score_pairs` gives single pairs) [our choice; the paper does not say how
  references are picked at test time].

`score_series`'s defaults name a series as the release does: paths x-<i>.jpg in a folder give the
series id of the folder and the indices i (`official_tokens.series_names`), so a release series
folder scores as the release scores it.

How a file becomes pixels (`preprocess`):

- "psdistill" (the default): psdistill.data.images.load_image, as every psdistill scorer: upright
  per EXIF, transparency composited over white, at most 4096^2 pixels. It scores what a person
  sees: the release scores a portrait phone photo lying on its side, and an RGBA image by the
  colour hidden under its transparent pixels (often black or leftovers); and a 100-megapixel image
  is decoded bounded (the release would hold ~1.2 GB of float pixels to keep 511 tokens of it);
- "release": the release's `Image.open(path).convert('RGB')` (`official_tokens.open_release_image`):
  its scores, to float precision, on such files too.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

import psdistill.baselines.fgaesq.official_tokens as official_tokens
from psdistill.baselines.fgaesq.difftoken import collate_tokens, difftoken
from psdistill.baselines.fgaesq.model import FGAesQModel, FGAesQModelConfig
from psdistill.baselines.fgaesq.official import (KeyMappingReport, load_official_weights, official_vision_config,
                                                 read_state_dict)
from psdistill.core.errors import ConfigError, PsdistillError
from psdistill.models.device import DTYPES
from psdistill.scoring.api import CallableScorer, as_batch, as_image, weight_files


class FGAesQScorer(CallableScorer):
    name = "fgaesq"
    score_range = (1.0, 10.0)
    lower_better = False
    source = "FGAesQ (Yang et al.), reimplemented in psdistill.baselines.fgaesq"

    def __init__(self, model: FGAesQModel, device: Optional[str] = None, batch_size: int = 32,
                 single: Optional[str] = None, series: Optional[str] = None, seed: int = 0,
                 preprocess: str = "psdistill"):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.batch_size = batch_size
        self.single = single or model.config.single
        self.series = series or model.config.series
        if self.single not in ("official", "resize"):
            raise ConfigError(f"FGAesQScorer: single must be 'official' or 'resize', got {self.single!r}")
        if self.series not in ("official", "project"):
            raise ConfigError(f"FGAesQScorer: series must be 'official' or 'project', got {self.series!r}")
        if preprocess not in ("psdistill", "release"):
            raise ConfigError(f"FGAesQScorer: preprocess must be 'psdistill' or 'release', got {preprocess!r}")
        self.preprocess = preprocess
        self.seed = seed
        self.load_report: Optional[KeyMappingReport] = None

    @classmethod
    def from_pretrained(cls, path: str | Path, device: Optional[str] = None, dtype: Optional[str] = None,
                        batch_size: int = 32, attn_implementation: Optional[str] = None, **modes) -> "FGAesQScorer":
        """A checkpoint written by recipes/fgaesq.py (`<run_dir>/checkpoint`) or `FGAesQModel.save_pretrained`;
        `modes`: single / series / seed / preprocess, as in the constructor."""
        model = FGAesQModel.from_pretrained(path, attn_implementation=attn_implementation)
        if dtype:
            model = model.to(DTYPES[dtype])
        return cls(model, device=device, batch_size=batch_size, **modes)

    @classmethod
    def from_official(cls, weights: str | Path, num_heads: Optional[int] = None, num_layers: Optional[int] = None,
                      device: Optional[str] = None, batch_size: int = 32, **modes) -> "FGAesQScorer":
        """An official FGAesQ state dict (the release's `FGAesQ.state_dict()`, see official.py), loaded
        strictly into a model of the size the weights have (`num_heads`: default width // 64, CLIP's rule;
        12 for ViT-B/16; `num_layers`: see `official_vision_config`). `modes` as in the constructor
        (single and series default to "official"). The key report is `load_report`."""
        state = read_state_dict(weights)
        size = official_vision_config(state, num_heads, num_layers)
        from transformers import CLIPVisionConfig

        config = FGAesQModelConfig(vision_config=CLIPVisionConfig(**size["vision"]).to_dict(),
                                   projection_dim=size["projection_dim"], base=f"official:{weights}",
                                   single="official", series="official")
        model = FGAesQModel(config)
        report = load_official_weights(model, state)
        scorer = cls(model, device=device, batch_size=batch_size, **modes)
        scorer.load_report = report
        return scorer

    def save_pretrained(self, path: str | Path) -> Path:
        return self.model.save_pretrained(path)

    def reward(self, gradient_checkpointing: bool = False):
        """This scorer's single-image score as a differentiable reward (`psdistill.load_reward`)."""
        from psdistill.baselines.fgaesq.reward import FGAesQReward

        return FGAesQReward(self, gradient_checkpointing)

    # -- scoring -------------------------------------------------------------------------------
    @torch.no_grad()
    def score(self, images, batch_size: Optional[int] = None) -> np.ndarray:
        """Scores on 1..10 (higher is better), single-image path; `images`: one or a list (psdistill.scoring.api)."""
        images, _ = as_batch(images)
        batch_size = batch_size or self.batch_size
        out = np.empty(len(images), dtype=np.float64)
        for start in range(0, len(images), batch_size):
            chunk = [self._image(x, start + k) for k, x in enumerate(images[start:start + batch_size])]
            if self.single == "official":
                batch = {k: v.to(self.device) for k, v in self.model.official_batch(chunk, self.seed).items()}
                out[start:start + len(chunk)] = self.model(**batch).scores.float().cpu().numpy()
                continue
            groups, idx = self.model.preprocess(chunk)
            res = self.model(pixel_values=[g.to(self.device) for g in groups]).scores.float().cpu().numpy()
            flat = [start + k for ks in idx for k in ks]
            out[flat] = res
        return out

    @torch.no_grad()
    def score_pairs(self, images: Sequence, references: Sequence, seed: int = 0) -> np.ndarray:
        """The project's DiffToken: each image tokenized against its reference (same length sequences)."""
        if len(images) != len(references):
            raise ValueError(f"score_pairs: {len(images)} images but {len(references)} references")
        m = self.model
        cfg = m.config
        gen = torch.Generator().manual_seed(seed)  # dropping, when the budget binds, is reproducible
        out = np.empty(len(images), dtype=np.float64)
        for start in range(0, len(images), self.batch_size):
            toks = [difftoken(self._image(x), self._image(y), cfg.difftoken, m.image_size, m.patch_size,
                              cfg.image_mean, cfg.image_std, gen)[0]
                    for x, y in zip(images[start:start + self.batch_size], references[start:start + self.batch_size])]
            batch = {k: v.to(self.device) for k, v in collate_tokens(toks).items()}
            out[start:start + len(toks)] = m(**batch).scores.float().cpu().numpy()
        return out

    def score_series(self, images: Sequence, series_id: Optional[str] = None,
                     indices: Optional[Sequence[int]] = None) -> np.ndarray:
        """Scores of the images of one series with DiffToken (a single image: `score`). `series_id` and
        `indices` name the pairs in the official mode, whose draws they seed; by default the release's
        names of the images' folder and files (`official_tokens.series_names`)."""
        names = official_tokens.series_names(images)
        series_id = names[0] if series_id is None else series_id
        indices = names[1] if indices is None else indices
        ims = [self._image(x, k) for k, x in enumerate(images)]
        n = len(ims)
        if n < 2:
            return self.score(ims)
        if self.series == "official":
            return self._series_official(ims, series_id, indices)
        pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
        s = self.score_pairs([ims[i] for i, _ in pairs], [ims[j] for _, j in pairs])
        total = np.zeros(n)
        for (i, _), v in zip(pairs, s):
            total[i] += v
        return total / (n - 1)

    def _image(self, x, index: int = 0):
        return official_tokens.open_release_image(x) if self.preprocess == "release" else as_image(x, index)

    @torch.no_grad()
    def _series_official(self, ims, series_id, indices) -> np.ndarray:
        m = self.model
        c = m.config
        per_image: list[list[float]] = [[] for _ in ims]
        pairs = official_tokens.series_pairs(len(ims), series_id, indices)
        step = max(1, self.batch_size // 2)
        for start in range(0, len(pairs), step):
            chunk = pairs[start:start + step]
            toks = [t for a, b, pid in chunk for t in official_tokens.pair_tokens(
                ims[a], ims[b], pid, m.patch_size, c.image_mean, c.image_std, c.max_seq_len)]
            batch = {k: v.to(self.device) for k, v in official_tokens.collate(toks, c.max_seq_len).items()}
            s = m(**batch).scores.float().cpu().numpy()
            for k, (a, b, _) in enumerate(chunk):
                per_image[a].append(float(s[2 * k]))
                per_image[b].append(float(s[2 * k + 1]))
        return official_tokens.confidence_adjust(per_image)


def create_fgaesq_scorer(path: str, device: Optional[str] = None, batch_size: int = 32, dtype: Optional[str] = None,
                         single: Optional[str] = None, series: Optional[str] = None, seed: int = 0,
                         preprocess: str = "psdistill", num_heads: Optional[int] = None,
                         num_layers: Optional[int] = None) -> FGAesQScorer:
    """Registry factory: `path` is a checkpoint folder (recipes/fgaesq.py) or an official state dict file
    (`num_heads` / `num_layers`: see `FGAesQScorer.from_official`); the modes as in `FGAesQScorer`
    (`preprocess="release"`: files read as the release reads them)."""
    if path is None:
        raise PsdistillError("fgaesq: pass path=<run_dir>/checkpoint (train one with recipes/fgaesq.py) "
                             "or path=<official FGAesQ .pth>")
    p = Path(path)
    # what differs from the defaults (the identity of a default scorer stays what earlier versions recorded)
    modes = {k: v for k, v, default in (("single", single, None), ("series", series, None), ("seed", seed, 0),
                                         ("preprocess", preprocess, "psdistill")) if v != default}
    if p.is_dir():
        scorer = FGAesQScorer.from_pretrained(p, device=device, dtype=dtype, batch_size=batch_size, **modes)
    elif p.is_file():
        scorer = FGAesQScorer.from_official(p, num_heads=num_heads, num_layers=num_layers, device=device,
                                            batch_size=batch_size, **modes)
        if dtype:
            scorer.model.to(DTYPES[dtype])
    else:
        raise PsdistillError(f"fgaesq: {path} is neither a checkpoint folder nor a weights file")
    scorer.identity = {"fgaesq": str(p.resolve()), "files": weight_files(p), "dtype": dtype, "modes": modes}
    return scorer
