"""Fixtures shared by the distill tests and the DDP worker: demo-like degradation ladders built from
scikit-image's bundled photos (no download), and noisy pseudo-scores standing in for the Elo stage."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from psdistill.data.records import ImageRecord

# Photos bundled with scikit-image (offline); greyscale ones are stacked to RGB.
PHOTOS = ("astronaut", "camera", "coffee", "chelsea", "rocket", "brick", "grass", "gravel", "coins", "moon",
          "clock", "immunohistochemistry", "hubble_deep_field", "retina")


def _crops(name: str, size: int, crops: int) -> list[Image.Image]:
    """`crops` square views of a photo (centre, then corners, at 70% of the short side), each at `size` px."""
    import skimage.data

    a = getattr(skimage.data, name)()
    if a.ndim == 2:
        a = np.stack([a] * 3, axis=-1)
    im = Image.fromarray(a[..., :3].astype(np.uint8))
    side = int(0.7 * min(im.size)) if crops > 1 else min(im.size)
    w, h = im.width - side, im.height - side
    corners = [(w // 2, h // 2), (0, 0), (w, 0), (0, h), (w, h)]
    return [im.crop((x, y, x + side, y + side)).resize((size, size), Image.LANCZOS) for x, y in corners[:crops]]


def ladder_records(out_dir, photos=PHOTOS, levels: int = 5, crops: int = 1, size: int = 64,
                   seed: int = 0) -> list[ImageRecord]:
    """Each view of each photo degraded in `levels` steps (rank 0 = original, then more blur and noise);
    a view is one series, a photo one category.

    Ground truth `overall` = levels - rank, i.e. 5..1 for five levels, on the 1-5 scale.
    """
    from scipy.ndimage import gaussian_filter

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    records = []
    for name in photos:
        for c, view in enumerate(_crops(name, size, crops)):
            base = np.asarray(view, dtype=float) / 255
            for rank in range(levels):
                a = gaussian_filter(base, sigma=(0.8 * rank, 0.8 * rank, 0)) if rank else base
                a = np.clip(a + rng.normal(0, 0.05 * rank, a.shape), 0, 1)
                rid = f"{name}{c}_{rank}"
                path = out_dir / f"{rid}.png"
                Image.fromarray((a * 255).round().astype(np.uint8)).save(path)
                records.append(ImageRecord(id=rid, path=str(path), category=name,
                                           scores={"overall": float(levels - rank)}, series=f"{name}{c}", rank=rank))
    return records


def pseudo_scores(records, noise: float = 0.3, var: float = 0.1, seed: int = 0) -> dict[str, dict[str, tuple[float, float]]]:
    """{"overall": {id: ground truth + Gaussian noise, constant variance}}: what the Elo reference pool hands over."""
    rng = np.random.default_rng(seed)
    return {"overall": {r.id: (r.scores["overall"] + rng.normal(0, noise), var) for r in records}}
