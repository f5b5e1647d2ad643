import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from psdistill.data.images import load_image, to_rgb
from psdistill.data.records import ImageRecord
from psdistill.core.errors import DataError
from psdistill.judge.cached import CachedJudge
from psdistill.judge.store import JudgmentStore
from psdistill.judge.vlm import VLMJudge, VLMJudgeConfig
from psdistill.models.loading import ModelConfig
from psdistill.models.tiny import tiny_qwen3_vl


def _png_rgb16(path: Path, pixels: np.ndarray):
    """A 16-bit-per-channel RGB PNG (PIL cannot write one): signature, IHDR, IDAT, IEND."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    h, w, _ = pixels.shape
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in pixels)  # filter type 0 per row
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def make_bad_corpus(folder: Path) -> tuple[list[Path], list[Path]]:
    """(files that must load, files that must fail), as users have them."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))
    good = {
        "plain.png": lambda p: photo.save(p),
        "cmyk.jpg": lambda p: photo.convert("CMYK").save(p),
        "gray16.png": lambda p: Image.fromarray((rng.random((60, 80)) * 65535).astype(np.uint16)).save(p),
        "rgb16.png": lambda p: _png_rgb16(p, (rng.random((60, 80, 3)) * 65535).astype(np.uint16)),
        "palette_transparent.png": lambda p: photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(p, transparency=0),
        "huge.jpg": lambda p: Image.linear_gradient("L").resize((8000, 8000)).convert("RGB").save(p, quality=50),
    }
    truncated = folder / "truncated.jpg"
    photo.save(truncated)
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("this is a text file with an image's name\n")
    for name, make in good.items():
        make(folder / name)
    bad = [truncated, folder / "empty.jpg", folder / "notes.jpg", folder / "missing.jpg"]
    return [folder / name for name in good], bad


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_bad_corpus(tmp_path_factory.mktemp("corpus"))


def test_images_as_users_have_them_load_as_bounded_rgb(corpus):
    good, bad = corpus
    for path in good:
        im = load_image(path)
        assert im.mode == "RGB" and im.width * im.height <= 4096 * 4096, path.name
    gray16 = np.asarray(load_image(good[2]))
    assert gray16.min() < 30 and gray16.max() > 225  # scaled to 8 bits, not clipped to white
    assert np.asarray(load_image(good[3])).std() > 30  # 16-bit RGB keeps its content
    huge = load_image(good[5])
    assert huge.size == (4000, 4000)  # decoded at 1/2 scale, under the 4096^2 bound: no resize
    assert load_image(good[5], max_pixels=16384).size == (128, 128)  # 1/8 scale, then resized
    for path in bad:
        with pytest.raises(DataError, match=path.name):
            load_image(path)


def test_transparency_goes_over_white_and_exif_turns_the_image_upright(tmp_path):
    im = Image.new("P", (4, 2), 0)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    im.putpixel((1, 0), 1)
    im.save(tmp_path / "p.png", transparency=0)
    rgb = np.asarray(load_image(tmp_path / "p.png"))
    assert tuple(rgb[0, 0]) == (255, 255, 255) and tuple(rgb[0, 1]) == (255, 0, 0)
    rgba = Image.new("RGBA", (2, 2), (0, 0, 255, 0))
    rgba.save(tmp_path / "a.png")
    assert tuple(np.asarray(load_image(tmp_path / "a.png"))[0, 0]) == (255, 255, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to view
    Image.new("RGB", (40, 20), (0, 128, 0)).save(tmp_path / "rot.jpg", exif=exif)
    assert load_image(tmp_path / "rot.jpg").size == (20, 40)


def test_16_bit_greyscale_of_either_byte_order_scales_to_8_bit():
    ramp = (np.arange(1024).reshape(4, 256) * 64).astype(np.uint16)
    for mode, dtype in [("I;16", "<u2"), ("I;16B", ">u2"), ("I;16L", "<u2")]:
        rgb = np.asarray(to_rgb(Image.frombytes(mode, (256, 4), ramp.astype(dtype).tobytes())))
        np.testing.assert_array_equal(rgb[..., 0], ramp // 256, err_msg=mode)


def test_max_pixels_bounds_every_format_and_keeps_the_aspect_ratio(tmp_path):
    Image.new("RGB", (2000, 1000), (10, 20, 30)).save(tmp_path / "big.jpg")
    Image.new("RGB", (2000, 1000), (10, 20, 30)).save(tmp_path / "big.png")
    for name in ("big.jpg", "big.png"):
        im = load_image(tmp_path / name, max_pixels=20_000)
        assert im.width * im.height <= 20_000 and im.width == 2 * im.height, name
    assert load_image(tmp_path / "big.png", max_pixels=None).size == (2000, 1000)


def test_bad_images_are_judged_without_a_crash_and_reported_by_name(corpus, tmp_path):
    good, bad = corpus
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, processor = tiny_qwen3_vl(seed=0)
        vlm = VLMJudge(model, processor, VLMJudgeConfig(batch_size=4), model_id=ModelConfig().model_id)
        store = JudgmentStore(tmp_path / "j.sqlite")
        judge = CachedJudge(vlm, store, chunk_size=4, progress=False)
        records = [ImageRecord(id=p.stem, path=str(p)) for p in good + bad]
        pairs = [(a, b) for a in records for b in records if a is not b]
        p = judge.prefer(pairs, "overall")
    finally:
        torch.set_num_threads(threads)
    broken = {str(path) for path in bad}
    failed_pair = np.array([a.path in broken or b.path in broken for a, b in pairs])
    assert np.isnan(p[failed_pair]).all() and np.isfinite(p[~failed_pair]).all()
    assert judge.failed == failed_pair.sum() and judge.computed == (~failed_pair).sum()
    failures = {f.path: f for f in store.failures()}
    assert set(failures) == broken
    assert failures[str(bad[-1])].hash is None  # missing: nothing to hash
    assert all(failures[str(path)].hash for path in bad[:-1])  # unreadable, but its bytes have a hash
    assert all(Path(f.path).name in f.reason for f in failures.values())
    summary = store.failure_summary()
    assert summary.startswith("4 image(s)") and all(path.name in summary for path in bad)
