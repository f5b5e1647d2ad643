"""Fixture helpers shared by the data-set tests (loaders, evaluation protocols)."""
import io

from PIL import Image

_buffer = io.BytesIO()
Image.new("RGB", (4, 4), (120, 30, 200)).save(_buffer, format="PNG")
PNG_BYTES = _buffer.getvalue()  # a 4x4 PNG


def write_images(root, *names):
    """The tiny PNG at each `root / name` (folders created)."""
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(PNG_BYTES)
