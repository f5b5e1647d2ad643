"""data.manifest as a saved datasets.Dataset, an image folder or a hub id, read by the pipeline's data stage."""
import datasets
import numpy as np
import pytest
from PIL import Image

from psdistill.core.config import parse_config
from psdistill.data.manifest import read_manifest
from psdistill.data.sources import resolve_manifest
from psdistill.core.errors import DataError
from psdistill.pipeline import PipelineConfig, run_pipeline


def _images(n, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)) for _ in range(n)]


def test_an_image_folder_takes_its_categories_from_its_sub_folders(tmp_path):
    for n, im in enumerate(_images(4)):
        (tmp_path / "imgs" / ("landscape" if n < 3 else "figure")).mkdir(parents=True, exist_ok=True)
        im.save(tmp_path / "imgs" / ("landscape" if n < 3 else "figure") / f"{n}.png")
    cfg = parse_config(PipelineConfig, [f"run_dir={tmp_path / 'run'}", f"data.manifest={tmp_path / 'imgs'}"])
    data = run_pipeline(cfg, stop_after="data", log=lambda *a: None)["data"]["summary"]
    assert data["images"] == 4 and data["categories"] == ["figure", "landscape"]
    records = read_manifest(tmp_path / "run" / "data" / "manifest.csv")
    assert sorted(r.id for r in records) == ["figure/3", "landscape/0", "landscape/1", "landscape/2"]


def test_a_saved_dataset_keeps_its_ids_categories_and_scores(tmp_path):
    images = _images(3)
    ds = datasets.Dataset.from_dict(
        {"image": images, "id": ["a", "b", "c"], "category": ["x", "x", "y"], "overall": [1.5, 7.0, 4.25]},
        features=datasets.Features({"image": datasets.Image(), "id": datasets.Value("string"),
                                    "category": datasets.Value("string"), "overall": datasets.Value("float32")}))
    ds.save_to_disk(str(tmp_path / "saved"))
    records = read_manifest(resolve_manifest(str(tmp_path / "saved"), tmp_path / "out"))
    assert [(r.id, r.category, r.scores["overall"]) for r in records] == [("a", "x", 1.5), ("b", "x", 7.0), ("c", "y", 4.25)]
    for r, im in zip(records, images):  # the pixels, not a re-encoded copy's
        np.testing.assert_array_equal(np.asarray(Image.open(r.path).convert("RGB")), np.asarray(im))


def test_a_hub_id_without_a_hub_is_one_clear_error(tmp_path):
    with pytest.raises(DataError, match="cannot load the hub data set 'someone/paintings'.*save_to_disk"):
        resolve_manifest("someone/paintings", tmp_path)


def test_an_image_folder_under_the_simulated_judge_says_a_real_run_needs_a_vlm_judge(tmp_path):
    from psdistill.core.errors import ConfigError

    (tmp_path / "imgs").mkdir()
    for n, im in enumerate(_images(6)):
        im.save(tmp_path / "imgs" / f"{n}.png")
    cfg = parse_config(PipelineConfig, [f"run_dir={tmp_path / 'run'}", f"data.manifest={tmp_path / 'imgs'}", "pool.k=3"])
    with pytest.raises(ConfigError, match=r"needs ground truth 'overall'.*use judge.kind=vlm with model.name_or_path"):
        run_pipeline(cfg, stop_after="judge", log=lambda *a: None)
