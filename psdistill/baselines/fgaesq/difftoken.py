"""Difference-preserved Tokenization (DiffToken), FGAesQ Sec. 4.1 and App. 9.3, as the project reads the
paper (series="project": what recipes/fgaesq.py trains with). The official release's algorithm, which
differs (LANCZOS upscaling, SSIM on top-aligned overlaps, 14 random fine regions, 512 tokens), is
official_tokens.py (series="official", the default for official checkpoints).

For a target image x and a reference y from the same series:

1. x is resized so its longer edge is the DiffToken canvas (`canvas_scale` x the ViT input size,
   each side a multiple of the region size); y is scaled to x's longer edge keeping its own aspect
   ratio and centred on x's canvas ("using the longer edge of x as the baseline, y1 is aligned
   through scaling while maintaining its original aspect ratio").
2. Both are cut into regions of `region_factor` x the ViT patch (32x32 for ViT-B/16) and compared
   with RGB-channel SSIM (eq. 1): s[i, j] = SSIM(P_x[i, j], P_y[i, j]).
3. The aesthetics-decisive regions are D = {s < percentile(s, p)} (eq. 2, p = 0.5).
4. Regions in D become (region_factor)^2 tokens at full resolution (16 px ViT patches); every other
   region is downsampled to one 16 px patch. Downsampled tokens are dropped at random until the
   sequence fits the token budget. Each token's position embedding is the pretrained grid sampled
   bilinearly at the token's centre (`FGAesQModel.embed_tokens`), so any aspect ratio works.

Choices where the paper is silent (each also noted where it is made):
- the canvas: longer edge = 2 x the ViT input size (448 for ViT-B/16), so a downsampled region sees
  exactly what the standard 224 px input sees and a full-resolution region sees 2x the detail;
- the token budget: `max_tokens_factor` x the standard sequence (image_size / patch)^2; the default
  2.5 = 1 + 3p at p = 0.5 fits a square canvas without dropping, so dropping binds for larger p or
  smaller budgets, as App. 9.3 describes ("too large p ... forces aggressive downsampling of
  non-decisive regions to meet the token constraints");
- when even the full-resolution tokens exceed the budget, the least different regions of D are
  demoted to one downsampled token each (the most different ones keep their detail);
- reference pixels that do not cover the target (different aspect ratios, e.g. cropping series)
  count as SSIM -1: content the reference lacks is a difference;
- SSIM uses Wang et al.'s 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, on [0, 1] RGB,
  computed over the whole image (reflect-padded) and averaged inside each region.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from psdistill.core.errors import ConfigError


@dataclass
class DiffTokenConfig:
    """DiffToken settings; saved with the model so scoring tokenizes exactly as training did."""

    enabled: bool = True  # False: the ablation "w/o DiffToken" (fine batches use the single-image path)
    region_factor: int = 2  # regions of 2 x the ViT patch (32x32 for ViT-B/16); paper Sec. 5.1, App. 9.3
    p: float = 0.5  # percentile of regions kept at full resolution (eq. 2); paper's best in Fig. 10
    canvas_scale: float = 2.0  # canvas longer edge = canvas_scale x image_size (448 for ViT-B/16) [our choice]
    max_tokens_factor: float = 2.5  # budget = factor x (image_size/patch)^2 tokens, CLS excluded [our choice]

    def __post_init__(self):
        if self.region_factor < 1:
            raise ConfigError(f"difftoken.region_factor: must be >= 1, got {self.region_factor}")
        if not 0.0 < self.p < 1.0:
            raise ConfigError(f"difftoken.p: must be in (0, 1), got {self.p}")
        if self.canvas_scale <= 0:
            raise ConfigError(f"difftoken.canvas_scale: must be > 0, got {self.canvas_scale}")
        if self.max_tokens_factor <= 0:
            raise ConfigError(f"difftoken.max_tokens_factor: must be > 0, got {self.max_tokens_factor}")

    def max_tokens(self, image_size: int, patch: int) -> int:
        return max(1, int(round(self.max_tokens_factor * (image_size // patch) ** 2)))

    def canvas_side(self, image_size: int, patch: int) -> int:
        region = patch * self.region_factor
        return max(region, int(round(self.canvas_scale * image_size / region)) * region)


# ---- geometry ---------------------------------------------------------------------------------

def fit_long_edge(size: tuple[int, int], long_edge: int, multiple: int) -> tuple[int, int]:
    """(width, height) with the longer edge `long_edge`, aspect kept, both sides multiples of `multiple`."""
    w, h = size
    scale = long_edge / max(w, h)
    return (max(multiple, int(round(w * scale / multiple)) * multiple),
            max(multiple, int(round(h * scale / multiple)) * multiple))


def to_tensor(im: Image.Image) -> torch.Tensor:
    """[3, H, W] float in [0, 1]."""
    arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def resize(im: Image.Image, size: tuple[int, int]) -> Image.Image:
    # Bicubic, as CLIP's own preprocessing; PIL antialiases when shrinking.
    return im if im.size == size else im.resize(size, Image.BICUBIC)


def align_reference(reference: Image.Image, target_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale `reference` to the target canvas's longer edge (its own aspect kept) and centre it.

    Returns ([3, H, W] pixels in [0, 1], zero where uncovered; [H, W] coverage mask).
    """
    tw, th = target_size
    rw, rh = reference.size
    scale = max(tw, th) / max(rw, rh)
    nw, nh = max(1, int(round(rw * scale))), max(1, int(round(rh * scale)))
    pix = to_tensor(resize(reference, (nw, nh)))
    out = torch.zeros(3, th, tw)
    cover = torch.zeros(th, tw, dtype=torch.bool)
    # Centre; where the reference is larger than the canvas along a side, its centre part is used.
    ox, oy = (tw - nw) // 2, (th - nh) // 2
    x0, y0 = max(ox, 0), max(oy, 0)
    x1, y1 = min(ox + nw, tw), min(oy + nh, th)
    out[:, y0:y1, x0:x1] = pix[:, y0 - oy:y1 - oy, x0 - ox:x1 - ox]
    cover[y0:y1, x0:x1] = True
    return out, cover


# ---- SSIM per region (eq. 1) ------------------------------------------------------------------

def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    return g / g.sum()


def ssim_map(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-pixel, per-channel SSIM of [C, H, W] images (Wang et al. 2004), shape [C, H, W]."""
    c = a.shape[0]
    g = _gaussian_window().to(a)
    pad = g.numel() // 2
    kx = g.view(1, 1, 1, -1).repeat(c, 1, 1, 1)
    ky = g.view(1, 1, -1, 1).repeat(c, 1, 1, 1)

    def blur(t):  # separable Gaussian filter, reflect padding keeps the map the image's size
        mode = "reflect" if min(t.shape[-2:]) > pad else "replicate"
        t = F.pad(t[None], (pad, pad, pad, pad), mode=mode)
        return F.conv2d(F.conv2d(t, kx, groups=c), ky, groups=c)[0]

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = blur(a), blur(b)
    s_aa = blur(a * a) - mu_a * mu_a
    s_bb = blur(b * b) - mu_b * mu_b
    s_ab = blur(a * b) - mu_a * mu_b
    return ((2 * mu_a * mu_b + c1) * (2 * s_ab + c2)) / ((mu_a * mu_a + mu_b * mu_b + c1) * (s_aa + s_bb + c2))


def region_similarity(x: torch.Tensor, y: torch.Tensor, region: int,
                      cover: Optional[torch.Tensor] = None) -> np.ndarray:
    """RGB-channel SSIM between corresponding `region` x `region` regions, shape [H/region, W/region].

    `x`, `y`: [3, H, W] in [0, 1] with H, W multiples of `region`. Pixels outside `cover` count as -1.
    """
    if x.shape != y.shape:
        raise ValueError(f"region_similarity: shapes differ {tuple(x.shape)} vs {tuple(y.shape)}")
    h, w = x.shape[-2:]
    if h % region or w % region:
        raise ValueError(f"region_similarity: {h}x{w} is not a multiple of the region size {region}")
    with torch.autocast(x.device.type, enabled=False):  # SSIM in float32 even inside a bf16 autocast
        m = ssim_map(x.float(), y.float()).mean(0)  # RGB-channel SSIM: per channel, then averaged
    if cover is not None:
        m = torch.where(cover, m, torch.full_like(m, -1.0))
    return F.avg_pool2d(m[None, None].float(), region)[0, 0].numpy().astype(np.float64)


# ---- region selection (eq. 2) -----------------------------------------------------------------

@dataclass
class RegionSelection:
    similarity: np.ndarray  # [gh, gw] SSIM per region
    decisive: np.ndarray  # [gh, gw] bool: s < percentile(s, p)
    order: np.ndarray  # flat region indices of D, most different first

    @property
    def grid(self) -> tuple[int, int]:
        return self.similarity.shape


def select_regions(similarity: np.ndarray, p: float) -> RegionSelection:
    """D = {(i, j) | s_ij < tau}, tau = percentile(s, p) (eq. 2); identical images give D empty."""
    s = np.asarray(similarity, dtype=np.float64)
    tau = np.percentile(s, 100.0 * p)
    decisive = s < tau
    flat = s.ravel()
    order = np.array([i for i in np.argsort(flat, kind="stable") if decisive.flat[i]], dtype=np.int64)
    return RegionSelection(similarity=s, decisive=decisive, order=order)


# ---- tokens -----------------------------------------------------------------------------------

@dataclass
class Tokens:
    """One image as a set of ViT patch tokens, before the patch embedding."""

    patches: torch.Tensor  # [N, 3, P, P] normalized pixels
    centres: torch.Tensor  # [N, 2] (y, x) of each token's centre, as a fraction of the canvas
    full_res: torch.Tensor  # [N] bool: a full-resolution patch (True) or a downsampled region (False)
    grid: tuple[int, int]  # region grid (gh, gw) of the canvas


def make_tokens(pixels: torch.Tensor, selection: RegionSelection, patch: int, region_factor: int,
                max_tokens: int, generator: Optional[torch.Generator] = None) -> Tokens:
    """Mixed-resolution tokens of a normalized [3, H, W] canvas.

    Regions in D give region_factor^2 patches of `patch` px; the others are area-downsampled to one
    patch. If the budget is exceeded, the least different regions of D are demoted first, then the
    downsampled tokens are dropped uniformly at random (`generator`; None: torch's global RNG).
    """
    region = patch * region_factor
    _, h, w = pixels.shape
    gh, gw = h // region, w // region
    if (gh, gw) != selection.grid:
        raise ValueError(f"make_tokens: canvas grid {(gh, gw)} != selection grid {selection.grid}")
    per_full = region_factor ** 2
    n_regions = gh * gw
    # Keep the most different regions at full resolution as long as their tokens fit.
    k = min(len(selection.order), max_tokens // per_full)
    full = np.zeros(n_regions, dtype=bool)
    full[selection.order[:k]] = True
    low = np.flatnonzero(~full)
    n_low_keep = min(len(low), max_tokens - per_full * k)
    if n_low_keep < len(low):  # random dropping to satisfy the token budget
        perm = torch.randperm(len(low), generator=generator)[:n_low_keep].numpy()
        low = np.sort(low[perm])
    keep = np.sort(np.concatenate([np.flatnonzero(full), low]))

    # [gh, gw, 3, region, region] view of the canvas, one entry per region.
    regions = pixels.reshape(3, gh, region, gw, region).permute(1, 3, 0, 2, 4)
    patches, centres, is_full = [], [], []
    for idx in keep:
        i, j = divmod(int(idx), gw)
        reg = regions[i, j]
        if full[idx]:
            sub = reg.reshape(3, region_factor, patch, region_factor, patch).permute(1, 3, 0, 2, 4)
            for a in range(region_factor):
                for b in range(region_factor):
                    patches.append(sub[a, b])
                    centres.append(((i * region + (a + 0.5) * patch) / h, (j * region + (b + 0.5) * patch) / w))
                    is_full.append(True)
        else:
            # "each 32x32 region -> one 16px patch": area (average) downsampling
            patches.append(F.avg_pool2d(reg[None], region_factor)[0] if region_factor > 1 else reg)
            centres.append(((i + 0.5) * region / h, (j + 0.5) * region / w))
            is_full.append(False)
    return Tokens(patches=torch.stack(patches), centres=torch.tensor(centres, dtype=torch.float32),
                  full_res=torch.tensor(is_full), grid=(gh, gw))


def difftoken(target: Image.Image, reference: Image.Image, cfg: DiffTokenConfig, image_size: int, patch: int,
              mean: Sequence[float], std: Sequence[float],
              generator: Optional[torch.Generator] = None) -> tuple[Tokens, RegionSelection]:
    """Tokens of `target` with its aesthetics-decisive regions (w.r.t. `reference`) at full resolution."""
    region = patch * cfg.region_factor
    size = fit_long_edge(target.size, cfg.canvas_side(image_size, patch), region)
    x = to_tensor(resize(target, size))
    y, cover = align_reference(reference, size)
    selection = select_regions(region_similarity(x, y, region, cover), cfg.p)
    pixels = normalize(x, mean, std)
    tokens = make_tokens(pixels, selection, patch, cfg.region_factor, cfg.max_tokens(image_size, patch), generator)
    return tokens, selection


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    m = torch.tensor(mean, dtype=x.dtype).view(3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(3, 1, 1)
    return (x - m) / s


def collate_tokens(items: Sequence[Tokens]) -> dict[str, torch.Tensor]:
    """Pad to the longest sequence: patches [B, N, 3, P, P], centres [B, N, 2], token_mask [B, N] bool."""
    n = max(t.patches.shape[0] for t in items)
    b = len(items)
    p = items[0].patches.shape[-1]
    patches = torch.zeros(b, n, 3, p, p)
    centres = torch.full((b, n, 2), 0.5)
    mask = torch.zeros(b, n, dtype=torch.bool)
    for k, t in enumerate(items):
        m = t.patches.shape[0]
        patches[k, :m] = t.patches
        centres[k, :m] = t.centres
        mask[k, :m] = True
    return {"patches": patches, "centres": centres, "token_mask": mask}
