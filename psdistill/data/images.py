"""Open images as users have them: any mode, any orientation, any size, possibly broken."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from psdistill.core.errors import DataError

# Decoding bound: what Qwen3-VL's processor accepts at most (its default max_pixels is 16384 * 32 * 32,
# i.e. 4096^2), so bounding here never changes what a default-configured model sees, while a
# 100-megapixel scan is decoded at a fraction of its size instead of taking ~300 MB of RAM.
DEFAULT_MAX_PIXELS = 4096 * 4096
# Qwen2/3-VL's smart_resize raises for a longer side over 200 times the shorter (its one shape limit;
# tiny images are scaled up to min_pixels). Checked with the data, not as a traceback mid-judging.
MAX_ASPECT_RATIO = 200


def load_image(path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """An RGB PIL image, upright per EXIF, transparency composited over white, at most `max_pixels`.

    Larger images are shrunk keeping their aspect ratio; JPEGs are decoded directly at a reduced
    scale (`Image.draft`, the DCT's 1/2, 1/4, 1/8 scaling), so a huge JPEG is never decoded in full
    (and may come out up to 2x smaller per side than the bound allows).
    `max_pixels=None` keeps the full size. Raises DataError naming the file when it is missing,
    empty, truncated, not an image, or beyond PIL's decompression-bomb limit.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            if max_pixels and im.width * im.height > max_pixels:
                # JPEG only (a no-op elsewhere): decode at 1/2, 1/4 or 1/8 scale. Asking for half the
                # bounded side lets a scale land just under the bound (8000 px -> 4000, not a full
                # decode and a resize to 4096), and never below half of it.
                w, h = _bounded_size(im.size, max_pixels)
                im.draft(None, (w // 2, h // 2))
            im.load()  # decode now, so truncation is caught here and not in a worker later
            im = ImageOps.exif_transpose(im)
            im = to_rgb(im)
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        # PIL's errors for unreadable, truncated or absurdly large files
        raise DataError(f"{path}: cannot read image ({e})") from None
    if max_pixels and im.width * im.height > max_pixels:
        im.thumbnail(_bounded_size(im.size, max_pixels), Image.Resampling.LANCZOS)
    return im


def check_processable(im: Image.Image, path: str | Path) -> Image.Image:
    """`im` unchanged, or DataError naming `path` when the VLM's image processor would reject its shape."""
    ratio = max(im.size) / min(im.size)
    if ratio > MAX_ASPECT_RATIO:
        raise DataError(f"{path}: aspect ratio {ratio:.0f}:1 ({im.width}x{im.height} px); the VLM's image "
                        f"processor takes at most {MAX_ASPECT_RATIO}:1")
    return im


def _bounded_size(size: tuple[int, int], max_pixels: int) -> tuple[int, int]:
    scale = math.sqrt(max_pixels / (size[0] * size[1]))
    return max(1, int(size[0] * scale)), max(1, int(size[1] * scale))


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB; alpha is composited over white, 16-bit is scaled to 8-bit."""
    if im.mode.startswith("I"):  # 16-bit greyscale ("I;16", "I;16B", ..., or "I" from older PNG readers)
        im = Image.fromarray(np.clip(np.asarray(im, dtype=np.int64) // 256, 0, 255).astype(np.uint8))
    if im.mode == "P":
        im = im.convert("RGBA")  # applies the palette's transparency, if any
    if im.mode in ("RGBA", "LA", "PA", "RGBa"):
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, im.convert("RGBA")).convert("RGB")
    return im.convert("RGB")
