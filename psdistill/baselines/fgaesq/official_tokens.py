"""The official FGAesQ tokenization (FGAesQ_Inference/utils/DiffToken.py of github yzc-ippl/FG-IAA at
4bfd40f), re-implemented so that scores agree with the release's inference to float precision.

Every image becomes `max_seq_len` - 1 tokens (511) after a CLS token:

- single image (`single_tokens`, the release's `process_image` with patch_selection='random'): at
  native resolution, normalised, zero-padded to a multiple of the patch. Up to 511 patches: one token
  per patch, then padding tokens (the model puts its `mask_token` there and, as the release, lets
  every token attend to them). More: the multiscale path (`_multiscale`): the image is padded or
  cropped to a multiple of 2 patches, 14 random 2x2-patch regions keep their 4 patches ("fine",
  scale id 1), every other region is downsampled (bicubic) to one patch ("coarse", scale id 0);
  tokens beyond 511 are dropped at random.
- a pair of series images (`pair_tokens`, `process_similarity_pair`, patch_selection='similarity'):
  both are aligned (a random choice between equal widths or equal heights, LANCZOS), upscaled
  (LANCZOS) to at least 1.2 x 512 patches with the short side >= 384 px, and compared region by
  region with 1 - SSIM (skimage, per RGB channel) on their top-aligned overlap; the fine regions
  are 14 drawn from the most different 50%, the unmatched regions get random importances.

Position embeddings: the pretrained grid is interpolated (bicubic, scale factor (n + 0.1) / 14) to
each token grid, see `FGAesQModel.position_grid`; a token carries its grid (rows, cols) and cell.

The release's quirks are kept because its scores depend on them: fine patches are ordered region
by region while their positions are ordered row by row over the fine grid; drops in the pair path
skip tokens whose index equals a fine region's index; random draws happen in the release's order
(Python's `random`, seeded per image for single images, by the pair id for pairs), so a given seed
gives the release's tokens. One path is not reproduced: in a pair, an image of exactly 512 patches
(unreachable after the upscaling to >= 614) would drop with the previous image's fine regions there.
"""
from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from psdistill.baselines.fgaesq.difftoken import normalize, to_tensor
from psdistill.core.errors import DataError
from psdistill.scoring.api import as_image

MAX_SEQ_LEN = 512  # CLS + 511 tokens (DiffToken.hidden_size)
N_FINE = 14  # int(initial_hidden_size 112 * importance_threshold 0.5 / 4)
TOP_FRACTION = 0.5  # importance_threshold: fine regions are drawn from the most different half
TARGET_FACTOR = 1.2  # ensure_large_image_size: at least 1.2 x 512 patches ...
MIN_SHORT_SIDE = 384  # ... and the short side at least 384 px
COARSE, FINE = 0, 1  # scale ids (rows of the model's scale_embedding)


@dataclass
class OfficialTokens:
    """One image's tokens (CLS excluded), before the patch embedding."""

    patches: torch.Tensor  # [N, 3, P, P] normalised pixels
    scale: torch.Tensor  # [N] long: COARSE (also the single-scale path) or FINE
    grid: torch.Tensor  # [N, 2] long: (rows, cols) of the position grid the token's position is read from
    cell: torch.Tensor  # [N] long: row-major cell in that grid


def pair_seed(pair_id: str) -> int:
    """The release's seed of a pair (`_derive_patch_alignment_seed`): md5 of the id, mod 10000."""
    return int(hashlib.md5(pair_id.encode()).hexdigest(), 16) % 10000


# ---- geometry (data_utils.py) -------------------------------------------------------------------

def _pad_to(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero padding on the right and bottom to a multiple (add_padding)."""
    h, w = x.shape[-2:]
    return F.pad(x, (0, (-w) % multiple, 0, (-h) % multiple))


def _pad_or_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """pad_or_crop: crop to a multiple of `size` when that removes fewer pixels than padding adds."""
    h, w = x.shape[-2:]
    crop = (h % size or 1) * (w % size or 1)
    pad = ((size - h % size) % size if h % size else 1) * ((size - w % size) % size if w % size else 1)
    if pad > crop:
        return x[:, :h - h % size, :w - w % size]
    return _pad_to(x, size)


def _cells(x: torch.Tensor, p: int) -> list[torch.Tensor]:
    """Row-major p x p cells of a [C, H, W] tensor whose sides are multiples of p."""
    c, h, w = x.shape
    return list(x.reshape(c, h // p, p, w // p, p).permute(1, 3, 0, 2, 4).reshape(-1, c, p, p))


def _upscale(im: Image.Image, patch: int, max_tokens: int) -> Image.Image:
    """ensure_large_image_size: images of <= max_tokens patches get >= 1.2 x that many (LANCZOS)."""
    w, h = im.size
    n = math.ceil(w / patch) * math.ceil(h / patch)
    if n > max_tokens:
        return im
    scale = math.sqrt(max_tokens * TARGET_FACTOR / n)
    if min(w, h) < MIN_SHORT_SIDE:
        scale = max(scale, MIN_SHORT_SIDE / min(w, h))
    return im.resize((int(w * scale), int(h * scale)), Image.Resampling.LANCZOS)


def align_pair(a: Image.Image, b: Image.Image, rng: random.Random, patch: int,
               max_tokens: int) -> tuple[Image.Image, Image.Image]:
    """align_image_pair: equal widths or heights (drawn), both upscaled, to a common scale if theirs differ."""
    (w1, h1), (w2, h2) = a.size, b.size
    if rng.choice(["width", "height"]) == "width":
        t = max(w1, w2)
        a = a if w1 == t else a.resize((t, int(h1 * t / w1)), Image.Resampling.LANCZOS)
        b = b if w2 == t else b.resize((t, int(h2 * t / w2)), Image.Resampling.LANCZOS)
    else:
        t = max(h1, h2)
        a = a if h1 == t else a.resize((int(w1 * t / h1), t), Image.Resampling.LANCZOS)
        b = b if h2 == t else b.resize((int(w2 * t / h2), t), Image.Resampling.LANCZOS)
    la, lb = _upscale(a, patch, max_tokens), _upscale(b, patch, max_tokens)
    sa = max(la.size[0] / a.size[0], la.size[1] / a.size[1])
    sb = max(lb.size[0] / b.size[0], lb.size[1] / b.size[1])
    if abs(sa - sb) > 0.01:
        s = max(sa, sb)
        la = a.resize((int(a.size[0] * s), int(a.size[1] * s)), Image.Resampling.LANCZOS)
        lb = b.resize((int(b.size[0] * s), int(b.size[1] * s)), Image.Resampling.LANCZOS)
    return la, lb


# ---- importance (calculate_pair_importance) -----------------------------------------------------

def pair_importance(x1: torch.Tensor, x2: torch.Tensor, region: int) -> tuple[list, list]:
    """1 - SSIM of the regions of the top-aligned overlap ([3, H, W] in [0, 1]); each image's list
    ends with None for its regions below the overlap (the release draws those at random)."""
    from skimage.metrics import structural_similarity

    a, b = _pad_or_crop(x1, region), _pad_or_crop(x2, region)
    h = min(a.shape[1], b.shape[1])
    scores = []
    # zip pairs regions by position in each image's row-major list, as the release does
    for p, q in zip(_cells(a[:, :h], region), _cells(b[:, :h], region)):
        p, q = p.permute(1, 2, 0).numpy(), q.permute(1, 2, 0).numpy()
        s = np.mean([structural_similarity(p[..., c], q[..., c], data_range=1.0) for c in range(3)])
        scores.append(max(0.0, min(1.0, 1.0 - s)))
    extra = [(t.shape[1] - h) // region * (t.shape[2] // region) for t in (a, b)]
    return scores + [None] * extra[0], scores + [None] * extra[1]


# ---- tokens (prepare_patches) --------------------------------------------------------------------

def _tokens(patches, scale, grids, cells) -> OfficialTokens:
    return OfficialTokens(patches=torch.stack(patches), scale=torch.tensor(scale, dtype=torch.long),
                          grid=torch.tensor(grids, dtype=torch.long).reshape(-1, 2),
                          cell=torch.tensor(cells, dtype=torch.long))


def _drop(tok: OfficialTokens, n_drop: int, rng: random.Random, importance: Optional[list],
          fine_regions: Sequence[int]) -> OfficialTokens:
    """drop_tokens / drop_tokens_with_priority, on token indices 1..N (0 is the CLS)."""
    n = tok.patches.shape[0]
    if importance is None:  # patch_selection='random'
        remove = rng.sample(range(1, n + 1), n_drop)
    else:
        imp = list(importance[:n])
        if len(imp) < n:
            known = [s for s in imp if s is not None]
            imp.extend([np.mean(known) if known else 0.5] * (n - len(imp)))
        important = set(fine_regions)  # region indices, compared with token indices as in the release
        candidates = []
        for i in range(n):
            score = imp[i] if imp[i] is not None else rng.random()  # drawn even though unused
            if i not in important:
                candidates.append((i + 1, score))
        picked = rng.sample(candidates, n_drop) if len(candidates) >= n_drop else candidates
        remove = [i for i, _ in picked]
        left = n_drop - len(remove)
        if left > 0:
            idx = [i + 1 for i in important if i < n]
            remove += rng.sample(idx, left) if len(idx) >= left else idx
    keep = torch.ones(n + 1, dtype=torch.bool)
    keep[remove] = False
    keep = keep[1:]
    return OfficialTokens(tok.patches[keep], tok.scale[keep], tok.grid[keep], tok.cell[keep])


def _single_scale(x: torch.Tensor, patch: int) -> OfficialTokens:
    x = _pad_to(x, patch)
    gh, gw = x.shape[1] // patch, x.shape[2] // patch
    n = gh * gw
    return _tokens(_cells(x, patch), [COARSE] * n, [(gh, gw)] * n, list(range(n)))


def _multiscale(x: torch.Tensor, patch: int, rng: random.Random, importance: Optional[list]):
    """process_large_image_multiscale: (tokens, fine region indices)."""
    region = 2 * patch
    x = _pad_or_crop(x, region)
    rh, rw = x.shape[1] // region, x.shape[2] // region
    regions = _cells(x, region)
    if importance is None:  # 'random'
        fine = rng.sample(range(len(regions)), N_FINE)
    else:  # 'similarity': compute_patch_importance, then select_patches(scale=1)
        imp = list(importance[:len(regions)])
        imp.extend(rng.random() for _ in range(len(regions) - len(imp)))
        scored = [(i, s if s is not None else rng.random()) for i, s in enumerate(imp)]
        scored.sort(key=lambda t: t[1], reverse=True)
        top = scored[:max(1, int(len(scored) * TOP_FRACTION))]
        fine = [i for i, _ in (rng.sample(top, N_FINE) if N_FINE <= len(top) else top)]
    fine_set = set(fine)
    coarse = [i for i in range(len(regions)) if i not in fine_set]
    # one batched call (each region is resized on its own, as the release's per-region calls)
    patches = list(F.interpolate(torch.stack([regions[i] for i in coarse]), size=(patch, patch), mode="bicubic"))
    for i in sorted(fine):
        patches.extend(_cells(regions[i], patch))
    # positions: coarse cells in region order; fine cells row-major over the 2x finer grid
    fine_cells = sorted((2 * (i // rw) + a) * (2 * rw) + 2 * (i % rw) + b for i in fine for a in (0, 1) for b in (0, 1))
    n_c, n_f = len(coarse), len(fine_cells)
    tok = _tokens(patches, [COARSE] * n_c + [FINE] * n_f, [(rh, rw)] * n_c + [(2 * rh, 2 * rw)] * n_f,
                  coarse + fine_cells)
    return tok, fine


def image_tokens(x: torch.Tensor, patch: int, rng: random.Random, max_seq_len: int = MAX_SEQ_LEN,
                 importance: Optional[list] = None) -> OfficialTokens:
    """prepare_patches on a normalised [3, H, W] image: at most max_seq_len - 1 tokens.

    `importance` None: patch_selection='random' (single images); a list: the pair path's region
    importances (None entries are drawn from `rng`)."""
    limit = max_seq_len - 1
    fine: Sequence[int] = ()
    if math.ceil(x.shape[1] / patch) * math.ceil(x.shape[2] / patch) <= max_seq_len:
        tok = _single_scale(x, patch)
    else:
        tok, fine = _multiscale(x, patch, rng, importance)
    if tok.patches.shape[0] > limit:
        tok = _drop(tok, tok.patches.shape[0] - limit, rng, importance, fine)
    return tok


def single_tokens(image: Image.Image, patch: int, mean, std, seed: int = 0,
                  max_seq_len: int = MAX_SEQ_LEN) -> OfficialTokens:
    """The release's single-image preprocessing, its random draws seeded by `seed`."""
    return image_tokens(normalize(to_tensor(image), mean, std), patch, random.Random(seed), max_seq_len)


def pair_tokens(a: Image.Image, b: Image.Image, pair_id: str, patch: int, mean, std,
                max_seq_len: int = MAX_SEQ_LEN) -> tuple[OfficialTokens, OfficialTokens]:
    """process_similarity_pair: both images' tokens, seeded by the pair id."""
    rng = random.Random(pair_seed(pair_id))
    a, b = align_pair(a, b, rng, patch, max_seq_len)
    xa, xb = to_tensor(a), to_tensor(b)
    ia, ib = pair_importance(xa, xb, 2 * patch)
    ta = image_tokens(normalize(xa, mean, std), patch, rng, max_seq_len, ia)
    tb = image_tokens(normalize(xb, mean, std), patch, rng, max_seq_len, ib)
    return ta, tb


def collate(items: Sequence[OfficialTokens], max_seq_len: int = MAX_SEQ_LEN) -> dict[str, torch.Tensor]:
    """Pad every image to max_seq_len - 1 tokens (the release's fixed length: its CLS attends to the
    padding): patches [B, L, 3, P, P], scale_ids/pos_cell [B, L], pos_grid [B, L, 2], padding [B, L]."""
    n, b = max_seq_len - 1, len(items)
    p = items[0].patches.shape[-1]
    out = {"patches": torch.zeros(b, n, 3, p, p), "scale_ids": torch.zeros(b, n, dtype=torch.long),
           "pos_grid": torch.zeros(b, n, 2, dtype=torch.long), "pos_cell": torch.zeros(b, n, dtype=torch.long),
           "padding": torch.ones(b, n, dtype=torch.bool)}
    for k, t in enumerate(items):
        m = t.patches.shape[0]
        out["patches"][k, :m] = t.patches
        out["scale_ids"][k, :m] = t.scale
        out["pos_grid"][k, :m] = t.grid
        out["pos_cell"][k, :m] = t.cell
        out["padding"][k, :m] = False
    return out


def series_pairs(n: int, series_id: str = "0", indices: Optional[Sequence[int]] = None) -> list[tuple[int, int, str]]:
    """inference_series' pairs: every combination (i < j by image index) with its id "series_i_j"."""
    idx = list(range(n)) if indices is None else [int(i) for i in indices]
    order = sorted(range(n), key=lambda k: idx[k])
    return [(a, b, f"{series_id}_{idx[a]}_{idx[b]}") for ai, a in enumerate(order) for b in order[ai + 1:]]


def series_names(images: Sequence) -> tuple[str, list[int]]:
    """The series id and image indices the release gives a series folder (collect_series_info), which
    name its pairs and so seed their draws: the folder's name (an integer name without leading
    zeros) and the <i> of each file name x-<i>.<ext>. Images that are not paths in one folder get
    "0"; names that do not give distinct indices get their positions 0..n-1."""
    paths = [Path(x) for x in images if isinstance(x, (str, Path))]
    if len(paths) != len(images):
        return "0", list(range(len(images)))
    folders = {p.resolve().parent for p in paths}
    name = folders.pop().name if len(folders) == 1 else "0"
    try:
        series_id = str(int(name))
    except ValueError:
        series_id = name
    try:
        indices = [int(p.name.split("-")[1].split(".")[0]) for p in paths]
    except (IndexError, ValueError):
        indices = []
    if len(set(indices)) != len(paths):
        indices = list(range(len(paths)))
    return series_id, indices


def open_release_image(x) -> Image.Image:
    """An image as the release reads it (`Image.open(path).convert('RGB')`): EXIF orientation ignored,
    alpha dropped (the colour under transparent pixels kept), full size; PIL images are converted the
    same way, arrays as psdistill reads them."""
    if isinstance(x, Image.Image):
        return x.convert("RGB")
    if not isinstance(x, (str, Path)):
        return as_image(x)
    try:
        with Image.open(x) as im:
            return im.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"{x}: image file not found") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{x}: cannot read image ({e})") from None


def confidence_adjust(per_image: Sequence[Sequence[float]]) -> np.ndarray:
    """apply_confidence_adjustment: series of >= 4 images shrink each image's mean pair score towards
    the series mean (weight 0.3 / 0.7 / 0.9 on the image's own mean for 1 / 2 / more pair scores)."""
    means = np.array([np.mean(s) for s in per_image])
    if len(per_image) < 4:
        return means
    series_mean = np.mean([v for s in per_image for v in s])
    w = np.array([0.3 if len(s) == 1 else 0.7 if len(s) == 2 else 0.9 for s in per_image])
    return w * means + (1 - w) * series_mean
