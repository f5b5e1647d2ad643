"""The student folder as a Hub artifact: its model card parses, its transformers-only snippet gives
psdistill's scores, the base model is recorded, and a scalar head that did not load is an error."""
import json
import re

import numpy as np
import pytest
from huggingface_hub import ModelCard
from peft import PeftModel
from safetensors.torch import load_file, save_file

from _distill_common import ladder_records, pseudo_scores
from psdistill.distill import DistillConfig, StudentScorer, train_student
from psdistill.distill.card import MODEL_PLACEHOLDER, TINY_BASE, LabelSource
from psdistill.core.errors import PsdistillError
from psdistill.models.loading import ModelConfig
from psdistill.models.tiny import save_tiny, tiny_qwen3_vl


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return ladder_records(tmp_path_factory.mktemp("ladders"), photos=("astronaut", "coffee"), levels=3)


@pytest.fixture(scope="module")
def base_folder(tmp_path_factory):
    """The tiny model saved, so that the base is a name_or_path that plain transformers loads."""
    return save_tiny(*tiny_qwen3_vl(seed=0), tmp_path_factory.mktemp("base") / "tiny-qwen3-vl")


def _train(records, out, model_cfg, labels=None, **kw):
    cfg = DistillConfig(max_steps=2, save_steps=100, per_device_train_batch_size=3, learning_rate=5e-3,
                        report_to=["none"], training_args={"disable_tqdm": True}, **kw)
    return train_student(records, pseudo_scores(records), model_cfg, cfg, out, rating_scale=(1.0, 10.0), labels=labels)


def _snippet_scores(folder, paths):
    """Run the card's transformers-only code block, pointed at `folder`, on `paths`."""
    text = ModelCard.load(folder / "README.md").text
    code = re.search(r"## Scoring with transformers only.*?```python\n(.*?)```", text, re.S).group(1)
    namespace = {}
    exec(code.replace(repr(MODEL_PLACEHOLDER), repr(str(folder))), namespace)
    return np.array([namespace["score"](p) for p in paths])


def test_lora_card_snippet_and_adapter_config(records, base_folder, tmp_path):
    out = _train(records, tmp_path / "lora", ModelConfig(name_or_path=base_folder))
    card = ModelCard.load(out / "README.md")
    assert card.data.base_model == base_folder and card.data.library_name == "peft"
    assert {"psdistill", "image-aesthetics", "qwen3-vl"} <= set(card.data.tags)
    assert card.data.psdistill["train_images"] == len(records) and card.data.psdistill["rating_scale"] == [1.0, 10.0]
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == base_folder
    paths = [r.path for r in records[:2]]
    expected = StudentScorer.from_pretrained(out).score(paths)
    assert np.ptp(expected) > 0
    np.testing.assert_allclose(_snippet_scores(out, paths), expected, atol=1e-5)


def test_full_card_on_the_tiny_model_says_so_and_its_snippet_scores(records, tmp_path):
    labels = LabelSource(judge_id="simulated(noise=0.3)", simulated=True)
    out = _train(records, tmp_path / "full", ModelConfig(), labels=labels, tuning="full")
    card = ModelCard.load(out / "README.md")
    assert card.data.base_model == TINY_BASE and card.data.library_name == "transformers"
    assert card.data.psdistill["simulated_judge"] is True and "SIMULATED" in card.text
    paths = [r.path for r in records[-2:]]
    expected = StudentScorer.from_pretrained(out).score(paths)
    assert np.ptp(expected) > 0  # two different scores, so the comparison tells images apart
    np.testing.assert_allclose(_snippet_scores(out, paths), expected, atol=1e-5)


@pytest.mark.parametrize("tuning", ["lora", "full"])
def test_scalar_head_card_snippet_reads_the_head_itself(records, base_folder, tmp_path, tuning):
    out = _train(records, tmp_path / tuning, ModelConfig(name_or_path=base_folder), head="scalar", tuning=tuning)
    paths = [r.path for r in records[:3]]
    expected = StudentScorer.from_pretrained(out).score(paths)
    assert np.ptp(expected) > 0  # the trained head tells the images apart
    np.testing.assert_allclose(_snippet_scores(out, paths), expected, atol=1e-5)


def test_scalar_head_that_did_not_load_is_an_error(records, tmp_path):
    out = _train(records, tmp_path / "scalar", ModelConfig(), head="scalar")
    StudentScorer.from_pretrained(out)  # the head loads with the adapter
    # What the card warns of: plain peft on the stock class keeps no score_head, and says nothing.
    model = PeftModel.from_pretrained(tiny_qwen3_vl(seed=0)[0], str(out))
    assert not hasattr(model.get_base_model(), "score_head")
    # An adapter saved without the head (not in modules_to_save, no tensors: peft loads it without a word)
    # would leave the fresh head in place: an error, not a silent constant score.
    config = json.loads((out / "adapter_config.json").read_text())
    (out / "adapter_config.json").write_text(json.dumps({**config, "modules_to_save": None}))
    adapter = out / "adapter_model.safetensors"
    save_file({k: v for k, v in load_file(adapter).items() if ".score_head." not in k}, adapter)
    with pytest.raises(PsdistillError, match="adapter_model.safetensors: the scalar head's trained weights"):
        StudentScorer.from_pretrained(out)


def _odd_images(folder, source):
    """The same photo as users have it: RGBA with transparency, palette, 16-bit grey, 8-bit grey, EXIF-rotated JPEG."""
    from PIL import Image

    folder.mkdir()
    rgb = Image.open(source).convert("RGB")
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgb.size))
    grey16 = Image.fromarray((np.asarray(rgb.convert("L"), dtype=np.uint16) * 257))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotated 90 degrees
    images = {"rgba.png": (rgba, {}), "palette.png": (rgb.convert("P"), {}), "grey16.png": (grey16, {}),
              "grey.png": (rgb.convert("L"), {}), "rotated.jpg": (rgb, {"exif": exif, "quality": 95})}
    for name, (im, kw) in images.items():
        im.save(folder / name, **kw)
    return [folder / name for name in images]


def test_card_snippet_opens_images_as_load_scorer_does(records, tmp_path):
    import psdistill

    out = _train(records, tmp_path / "full", ModelConfig(), tuning="full")
    paths = _odd_images(tmp_path / "odd", records[0].path)
    expected = psdistill.load_scorer(out).score(paths)
    np.testing.assert_allclose(_snippet_scores(out, paths), expected, atol=1e-4)


def test_lora_card_on_the_tiny_base_runs_as_written(records, tmp_path):
    # No hub has the tiny base: it is saved beside the adapter and the card's code loads it from there.
    out = _train(records, tmp_path / "lora_tiny", ModelConfig())
    paths = [r.path for r in records[:2]]
    expected = StudentScorer.from_pretrained(out).score(paths)
    assert np.ptp(expected) > 0
    np.testing.assert_allclose(_snippet_scores(out, paths), expected, atol=1e-5)
