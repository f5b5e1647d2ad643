"""The embedded demo data set: degradation ladders of the photos bundled in the scikit-image wheel.

    manifest = build_demo("runs/demo/demo")            # <out>/manifest.csv, <out>/images/<category>/...

One series is one square window (random position, size and mirror) of one source photo, resized to
`size` x `size`. Level 0 is the clean window; levels 1..L apply the same `kinds_per_series`
degradation kinds, drawn per series from `degradations`, at growing severity

    severity = strength * level / L        strength ~ U[min_strength, 1], drawn per series

so that the order within a series is about how much, not about which, artifact. Ground truth, on a
1-10 rating scale, is `overall = 10 - 9 * severity`: every clean image scores 10, the last level of
the strongest series 1, and the per-series strength spreads the scores of different series apart.

The photo prompt set's other dimensions (psdistill/judge/prompts/photo.yaml) get ground truth too, so
that a run can judge and score several (`data.dimensions`): `<dim> = 10 - 9 * severity * w`, with
w = 1 when one of the series' degradations is of that dimension (`DIMENSION_KINDS`: a bad crop is
composition, a colour cast colour, exposure and contrast lighting, blur, noise and JPEG technique)
and `OTHER_KIND_WEIGHT` when none is: the order within a series is the same in every dimension, the
order across series differs.
Records carry `category`, `series`, `rank` = level and a `comment` naming the degradations.

Default categories: objects, portraits, science, textures (`graphics` is available too). Suggested
split, as in PPaint: train on one category, test on the others. Of the defaults `objects` (the most
varied sources) sorts first, which makes it the category `psdistill.pipeline` trains on when none
is named.

Everything is drawn from `seed`: the same config gives byte-identical PNGs and manifest. The config
is saved as JSON beside the manifest; `build_demo` reuses a finished build with the same config.
Only images that ship inside the wheel are used (no pooch download), so this works offline.
"""
from __future__ import annotations

import io
import json
import shutil
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image
from scipy.ndimage import gaussian_filter

from psdistill.core.config import to_dict
from psdistill.data.images import to_rgb
from psdistill.data.manifest import read_manifest, write_manifest
from psdistill.data.records import ImageRecord
from psdistill.core.errors import ConfigError, DataError

# Bump when the images or ground truth a config produces change, so older builds are not reused.
GENERATOR_VERSION = 2  # 2: ground truth per photo dimension

# category -> skimage.data loaders. Left out: cat (the same photo as chelsea), clock (already
# motion-blurred), lfw_subset (25 px faces) and the loaders that download through pooch.
CATALOGUE = {
    "objects": ("coffee", "rocket", "stereo_motorcycle", "coins"),
    "portraits": ("astronaut", "camera", "chelsea"),
    "science": ("moon", "hubble_deep_field", "immunohistochemistry", "retina", "cell"),
    "textures": ("brick", "grass", "gravel"),
    "graphics": ("colorwheel", "logo", "text", "page", "horse"),
}
# Where windows may fall, (top, left, bottom, right) as fractions; the whole photo if not listed.
REGIONS = {"retina": (0.15, 0.15, 0.85, 0.85)}  # keep windows off the black border
UNMIRRORED = {"logo", "text", "page"}  # mirrored writing is an artifact of its own
DEGRADATIONS = ("crop", "blur", "exposure", "contrast", "color_cast", "noise", "jpeg")  # applied in this order
# The degradations that each photo dimension other than overall is about (see the module docstring).
DIMENSION_KINDS = {"composition": ("crop",), "color": ("color_cast",), "lighting": ("exposure", "contrast"),
                   "technique": ("blur", "noise", "jpeg")}
OTHER_KIND_WEIGHT = 0.25  # [our choice] how much a degradation of another dimension lowers this one


@dataclass
class DemoConfig:
    seed: int = field(default=0, metadata={"help": "draws the windows, degradation kinds, strengths and noise"})
    size: int = field(default=64, metadata={
        "help": "image side in pixels; a multiple of 32 (Qwen3-VL: 16 px patches merged 2x2)"})
    levels: int = field(default=4, metadata={"help": "degraded levels per series (plus the clean level 0)"})
    series_per_category: int = field(default=6, metadata={
        "help": "series per category; sources are reused through different windows when there are fewer"})
    categories: tuple[str, ...] = field(default=("objects", "portraits", "science", "textures"), metadata={
        "help": f"from {sorted(CATALOGUE)}"})
    degradations: tuple[str, ...] = field(default=DEGRADATIONS, metadata={"help": f"kinds to draw from {DEGRADATIONS}"})
    kinds_per_series: int = field(default=2, metadata={"help": "degradation kinds combined in each series"})
    min_strength: float = field(default=0.6, metadata={
        "help": "per-series strength ~ U[min_strength, 1] scales the severity; 1: every series the same ladder"})

    def __post_init__(self):
        for name in ("seed", "size", "levels", "series_per_category", "kinds_per_series"):
            if type(getattr(self, name)) is not int:  # bool is an int subclass; a float size is a typo
                raise ConfigError(f"{name}: expected an integer, got {getattr(self, name)!r}")
        if self.seed < 0:
            raise ConfigError(f"seed: must be >= 0, got {self.seed}")
        if self.size < 32 or self.size % 32:
            raise ConfigError(f"size: must be a positive multiple of 32 (16 px patches merged 2x2), got {self.size}")
        if self.levels < 1:
            raise ConfigError(f"levels: must be >= 1, got {self.levels}")
        if self.series_per_category < 1:
            raise ConfigError(f"series_per_category: must be >= 1, got {self.series_per_category}")
        self.categories, self.degradations = tuple(self.categories), tuple(self.degradations)
        _check_names("categories", self.categories, sorted(CATALOGUE))
        _check_names("degradations", self.degradations, DEGRADATIONS)
        if not 1 <= self.kinds_per_series <= len(self.degradations):
            raise ConfigError(f"kinds_per_series: must be in 1..{len(self.degradations)} (the number of "
                              f"degradations), got {self.kinds_per_series}")
        if not 0 < self.min_strength <= 1:
            raise ConfigError(f"min_strength: must be in (0, 1], got {self.min_strength}")


def _check_names(name: str, values: tuple, known) -> None:
    if not values:
        raise ConfigError(f"{name}: must not be empty (choose from {list(known)})")
    unknown = [v for v in values if v not in known]
    if unknown:
        raise ConfigError(f"{name}: unknown {unknown} (choose from {list(known)})")
    if len(set(values)) != len(values):
        raise ConfigError(f"{name}: duplicates in {list(values)}")


def build_demo(out_dir: str | Path, config: DemoConfig = DemoConfig()) -> Path:
    """Write `<out_dir>/images/<category>/<series>_<level>.png` and `<out_dir>/manifest.csv`.

    Returns the manifest path. A finished build with the same config is reused as is; anything else
    under `<out_dir>/images` is replaced.
    """
    out_dir = Path(out_dir)
    manifest, saved = out_dir / "manifest.csv", out_dir / "demo_config.json"
    wanted = {"generator_version": GENERATOR_VERSION, **to_dict(config)}
    if _finished(manifest, saved, wanted):
        return manifest
    # The config file is written last, so an interrupted build is never mistaken for a finished one.
    saved.unlink(missing_ok=True)
    shutil.rmtree(out_dir / "images", ignore_errors=True)
    records = []
    for category in config.categories:
        sources = CATALOGUE[category]
        images = {name: _load_source(name) for name in sources}
        for j in range(config.series_per_category):
            name = sources[j % len(sources)]
            series = f"{name}-{j // len(sources)}"
            rng = np.random.default_rng([config.seed, zlib.crc32(category.encode()), j])
            for level, (image, severity, kinds, comment) in enumerate(_ladder(images[name], name, config, rng)):
                path = out_dir / "images" / category / f"{series}_{level}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                image.save(path)
                records.append(ImageRecord(id=f"{series}_{level}", path=str(path), category=category,
                                           scores=_ground_truth(severity, kinds), series=series,
                                           rank=level, comment=comment))
    write_manifest(records, manifest)
    saved.write_text(json.dumps(wanted, indent=2, sort_keys=True) + "\n")
    return manifest


def _finished(manifest: Path, saved: Path, wanted: dict) -> bool:
    if not (manifest.is_file() and saved.is_file()):
        return False
    try:
        if json.loads(saved.read_text()) != wanted:
            return False
        read_manifest(manifest)  # every image is still there
    except (json.JSONDecodeError, DataError):
        return False
    return True


def _load_source(name: str) -> Image.Image:
    image = getattr(skimage.data, name)()
    if name == "stereo_motorcycle":
        image = image[0]  # (left, right, disparity)
    image = np.asarray(image)
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    return to_rgb(Image.fromarray(image))


def _ground_truth(severity: float, kinds) -> dict[str, float]:
    """overall and every DIMENSION_KINDS dimension of an image at `severity` of degradations `kinds`."""
    weights = {dim: 1.0 if set(kinds) & set(own) else OTHER_KIND_WEIGHT for dim, own in DIMENSION_KINDS.items()}
    return {dim: round(10.0 - 9.0 * severity * w, 6) for dim, w in {"overall": 1.0, **weights}.items()}


def _ladder(source: Image.Image, name: str, config: DemoConfig, rng: np.random.Generator):
    """Yield (image, severity, degradation kinds, comment) for levels 0..L of one series of source `name`."""
    # Every draw happens whatever kinds are chosen, so each draw means the same thing in every series.
    w, h = source.size
    top, left, bottom, right = np.multiply(REGIONS.get(name, (0, 0, 1, 1)), (h, w, h, w))
    side = rng.uniform(0.5, 1.0) * min(bottom - top, right - left)
    y, x = top + rng.uniform(0, bottom - top - side), left + rng.uniform(0, right - left - side)
    mirror = rng.random() < 0.5 and name not in UNMIRRORED
    chosen = rng.choice(len(config.degradations), config.kinds_per_series, replace=False)
    kinds = sorted((config.degradations[k] for k in chosen), key=DEGRADATIONS.index)
    strength = rng.uniform(config.min_strength, 1.0)
    params = {
        "crop": rng.integers(0, 2, size=2),  # the corner the bad crop is pushed towards
        "exposure": rng.choice([-1.0, 1.0]),  # under or over
        "color_cast": _cast_direction(rng),
        "noise": rng.standard_normal((config.size, config.size, 3)),  # one field, scaled up level by level
    }
    clean = source.resize((config.size, config.size), Image.LANCZOS, box=(x, y, x + side, y + side))
    if mirror:
        clean = clean.transpose(Image.FLIP_LEFT_RIGHT)
    yield clean, 0.0, kinds, "clean"
    for level in range(1, config.levels + 1):
        severity = strength * level / config.levels
        image = clean
        for kind in kinds:
            image = _DEGRADE[kind](image, severity, params.get(kind))
        yield image, severity, kinds, f"{'+'.join(kinds)} severity {severity:.3f}"


def _cast_direction(rng: np.random.Generator) -> np.ndarray:
    d = rng.standard_normal(3)
    d -= d.mean()  # a hue shift, not a brightness change
    return d / np.abs(d).max()


def _float(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float64) / 255.0


def _image(a: np.ndarray) -> Image.Image:
    return Image.fromarray(np.round(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8))


# Each maps severity 0 to the identity and grows monotonically up to severity 1, the strongest level.
def _bad_crop(image, s, corner):
    """An off-centre tight crop, upscaled back: the subject is cut and the detail is lost."""
    n = image.size[0]
    side = n * (1.0 - 0.6 * s)
    x, y = corner * (n - side)
    return image.resize((n, n), Image.BICUBIC, box=(x, y, x + side, y + side))


def _blur(image, s, _):
    return _image(gaussian_filter(_float(image), sigma=(3.0 * s, 3.0 * s, 0)))


def _exposure(image, s, direction):
    a = _float(image)
    return _image(a * (1.0 + 1.25 * s) if direction > 0 else a * (1.0 - 0.7 * s))  # over: highlights clip


def _contrast(image, s, _):
    a = _float(image)
    return _image(a.mean() + (a - a.mean()) * (1.0 - 0.8 * s))


def _color_cast(image, s, direction):
    return _image(_float(image) + 0.3 * s * direction)


def _noise(image, s, field):
    return _image(_float(image) + 0.2 * s * field)


def _jpeg(image, s, _):
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=int(round(95 - 90 * s)))
    return Image.open(buffer).convert("RGB")


_DEGRADE = {"crop": _bad_crop, "blur": _blur, "exposure": _exposure, "contrast": _contrast,
            "color_cast": _color_cast, "noise": _noise, "jpeg": _jpeg}
