from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from psdistill.core.config import from_dict
from psdistill.data.demo import CATALOGUE, DemoConfig, build_demo
from psdistill.data.manifest import read_manifest
from psdistill.core.errors import ConfigError

SMALL = DemoConfig(categories=("textures",), series_per_category=2, levels=2)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return build_demo(tmp_path_factory.mktemp("demo"))


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _series(records) -> dict[str, dict[int, np.ndarray]]:
    out = defaultdict(dict)
    for r in records:
        out[r.series][r.rank] = np.asarray(Image.open(r.path))
    return out


def test_default_demo_layout_and_counts(demo):
    cfg = DemoConfig()
    records = read_manifest(demo)
    assert len(records) == len(cfg.categories) * cfg.series_per_category * (cfg.levels + 1) == 120
    assert sorted({r.category for r in records}) == ["objects", "portraits", "science", "textures"]
    for category in cfg.categories:
        assert len({r.series for r in records if r.category == category}) >= 6  # enough for a held-out split
    for r in records:
        assert Path(r.path) == demo.parent / "images" / r.category / f"{r.series}_{r.rank}.png"
        assert r.id == f"{r.series}_{r.rank}"
    assert {r.rank for r in records} == set(range(cfg.levels + 1))
    assert all(1.0 <= r.score("overall") <= 10.0 for r in records)
    assert {r.score("overall") for r in records if r.rank == 0} == {10.0}
    assert {r.comment for r in records if r.rank == 0} == {"clean"}


def test_scores_strictly_decrease_with_level_and_differ_across_series(demo):
    by_series = defaultdict(dict)
    for r in read_manifest(demo):
        by_series[r.series][r.rank] = r.score("overall")
    for series, scores in by_series.items():
        ladder = [scores[level] for level in sorted(scores)]
        assert all(a > b for a, b in zip(ladder, ladder[1:])), (series, ladder)
    assert len({scores[4] for scores in by_series.values()}) == len(by_series)  # per-series strength


def test_images_are_rgb_at_the_configured_size(demo, tmp_path):
    for r in read_manifest(demo):
        with Image.open(r.path) as im:
            assert im.mode == "RGB" and im.size == (64, 64)
    for r in read_manifest(build_demo(tmp_path, DemoConfig(categories=("portraits",), series_per_category=1,
                                                           levels=1, size=96))):
        with Image.open(r.path) as im:
            assert im.size == (96, 96) and im.size[0] % 32 == 0


def test_degradation_degrades_by_independent_measures(demo):
    psnr, ssim = [], []
    for levels in _series(read_manifest(demo)).values():
        clean = levels[0]
        psnr.append([peak_signal_noise_ratio(clean, levels[k]) for k in range(1, len(levels))])
        ssim.append([structural_similarity(clean, levels[k], channel_axis=2) for k in range(1, len(levels))])
    psnr, ssim = np.array(psnr), np.array(ssim)
    assert np.all(np.diff(psnr.mean(axis=0)) < 0), psnr.mean(axis=0)
    assert np.all(np.diff(ssim.mean(axis=0)) < 0), ssim.mean(axis=0)
    assert np.mean(psnr[:, -1] < psnr[:, 0]) >= 0.9  # the last level is further from clean than the first


def test_same_seed_is_byte_identical(demo, tmp_path):
    build_demo(tmp_path)
    assert _files(tmp_path) == _files(demo.parent)


def test_different_seed_differs(demo, tmp_path):
    build_demo(tmp_path, DemoConfig(seed=1))
    ours, theirs = _files(tmp_path), _files(demo.parent)
    assert ours.keys() == theirs.keys()  # same layout, other windows and degradations
    pngs = [k for k in ours if k.endswith(".png")]
    assert sum(ours[k] != theirs[k] for k in pngs) == len(pngs)
    assert ours["manifest.csv"] != theirs["manifest.csv"]


def test_reuse_does_not_rewrite_and_a_new_config_rebuilds(tmp_path):
    manifest = build_demo(tmp_path, SMALL)
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    assert build_demo(tmp_path, SMALL) == manifest
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == stamps

    build_demo(tmp_path, DemoConfig(categories=("portraits",), series_per_category=2, levels=2))
    assert {r.category for r in read_manifest(manifest)} == {"portraits"}
    assert not (tmp_path / "images" / "textures").exists()  # the old build's images are gone


def test_an_incomplete_build_is_rebuilt(tmp_path):
    manifest = build_demo(tmp_path, SMALL)
    first = _files(tmp_path)
    Path(read_manifest(manifest)[3].path).unlink()
    build_demo(tmp_path, SMALL)
    assert _files(tmp_path) == first


def test_every_catalogue_source_loads_offline(tmp_path):
    most = max(len(sources) for sources in CATALOGUE.values())
    cfg = DemoConfig(categories=tuple(CATALOGUE), series_per_category=most, levels=1, size=32)
    series = {r.series for r in read_manifest(build_demo(tmp_path, cfg))}
    assert {f"{name}-0" for sources in CATALOGUE.values() for name in sources} <= series


@pytest.mark.parametrize("field, value", [
    ("size", 48), ("size", 0), ("levels", 0), ("series_per_category", 0), ("seed", -1), ("seed", 1.5),
    ("categories", ()), ("categories", ("food",)), ("categories", ("objects", "objects")),
    ("degradations", ("sepia",)), ("kinds_per_series", 0), ("kinds_per_series", 8), ("min_strength", 0.0),
])
def test_bad_config_names_the_field(field, value):
    with pytest.raises(ConfigError, match=rf"^{field}: "):
        DemoConfig(**{field: value})


def test_bad_config_from_yaml_names_the_dotted_key():
    with pytest.raises(ConfigError, match=r"^data\.demo\.size: .*multiple of 32"):
        from_dict(DemoConfig, {"size": 100}, "data.demo.")
