"""Open images as users have them: any mode, any orientation, possibly broken."""
from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageOps

from psdistill.errors import DataError


def load_image(path: str | Path) -> Image.Image:
    """An RGB PIL image, upright per EXIF, transparency composited over white.

    Raises DataError naming the file when it is missing, empty, truncated or not an image.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()  # decode now, so truncation is caught here and not in a worker later
            im = ImageOps.exif_transpose(im)
            return to_rgb(im)
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except (OSError, SyntaxError, ValueError) as e:  # PIL's errors for unreadable or truncated files
        raise DataError(f"{path}: cannot read image ({e})") from None


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB; alpha is composited over white, 16-bit is scaled to 8-bit."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        im = im.point(lambda v: v / 256).convert("L")  # 16-bit greyscale -> 8-bit
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, im.convert("RGBA")).convert("RGB")
    return im.convert("RGB")
