"""The single-pass scorer: the zero-shot teacher, save -> load round trips, registry, CSV, merged export."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.stats import pearsonr, spearmanr

from _distill_common import ladder_records, pseudo_scores
from psdistill.data.predictions import read_predictions
from psdistill.distill import DistillConfig, StudentScorer, export_merged, score_images, train_student
from psdistill.distill.student_build import build_student
from psdistill.core.errors import ConfigError
from psdistill.models.loading import ModelConfig
from psdistill.scoring.registry import create_scorer

PHOTOS = ("astronaut", "camera", "coffee", "chelsea")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ladders")
    records = ladder_records(root, photos=PHOTOS + ("rocket",), levels=4)
    return [r for r in records if r.category != "rocket"], [r for r in records if r.category == "rocket"]


def _train(data, out, **kw):
    train, val = data
    cfg = DistillConfig(max_steps=4, eval_steps=4, save_steps=4, per_device_train_batch_size=4,
                        learning_rate=5e-3, logging_steps=1, report_to=["none"],
                        training_args={"disable_tqdm": True}, **kw)
    return train_student(train, pseudo_scores(train), ModelConfig(), cfg, out, val_records=val, rating_scale=(1.0, 5.0))


def _final_eval(run_dir):
    history = json.loads((Path(run_dir) / "trainer_state.json").read_text())["log_history"]
    return [h for h in history if "eval_plcc" in h][-1]


@pytest.fixture(scope="module")
def lora_student(data, tmp_path_factory):
    return _train(data, tmp_path_factory.mktemp("student") / "lora")


def test_teacher_pointwise_scores_on_the_scale_and_ignores_padding(data):
    teacher = create_scorer("teacher-pointwise", model="tiny", rating_scale=[1.0, 10.0])
    assert teacher.name == "teacher-pointwise" and teacher.score_range == (1.0, 10.0) and not teacher.lower_better
    paths = [r.path for r in data[0][:6]]
    # images of different sizes give different token counts, so the batch is left-padded
    images = [Image.open(p).convert("RGB").resize((64, 32 + 32 * (n % 2))) for n, p in enumerate(paths)]
    batched = teacher.score(images, batch_size=6)
    alone = np.array([teacher.score([im])[0] for im in images])
    np.testing.assert_allclose(batched, alone, atol=1e-5)
    assert np.all((batched >= 1) & (batched <= 10)) and np.ptp(batched) > 0


def test_the_teacher_checks_its_readout_without_a_training_config():
    # The scoring layer checks what it reads itself (it imports no DistillConfig), with the config keys' names.
    from psdistill.scoring.spec import ReadoutConfig
    from psdistill.scoring.teacher import teacher_pointwise

    with pytest.raises(ConfigError, match="distill.level_values: 1 values for 2 level_words"):
        create_scorer("teacher-pointwise", level_words=["Good", "Bad"], level_values=[1.0])
    with pytest.raises(ConfigError, match="distill.prompt: \\['a', 'b'\\] would all get the same prompt"):
        create_scorer("teacher-pointwise", dimensions=["a", "b"])
    with pytest.raises(ConfigError, match="distill.head: a scorer without training needs the 'levels' head"):
        teacher_pointwise(readout=DistillConfig(head="scalar").readout_config(["overall"]))
    # An untouched training config reads what the default teacher reads.
    assert DistillConfig().readout_config(["overall"]) == ReadoutConfig.from_template()
    assert DistillConfig(prompt="Rate its {dimension}.", level_words=["Good", "Bad"], level_values=[2, 1],
                         head="scalar").readout_config(["color", "mood"]) == ReadoutConfig(
        {"color": "Rate its color.", "mood": "Rate its mood."}, "scalar", ("Good", "Bad"), (2.0, 1.0))


def test_level_words_must_be_single_tokens():
    with pytest.raises(ConfigError, match="distill.level_words: .*'superlative' is [2-9] tokens"):
        build_student(ModelConfig(), DistillConfig(level_words=["superlative", "bad"], level_values=[2, 1]))


def test_saved_student_reloads_with_the_scores_it_was_validated_with(lora_student, data):
    # The last validation ran in memory right after the last optimizer step; the reloaded scorer must
    # reproduce its correlations with ground truth exactly (same scores, not just the same order).
    val = data[1]
    target = [r.score("overall") for r in val]
    scorer = StudentScorer.from_pretrained(lora_student)
    scores = scorer.score([r.path for r in val])
    final = _final_eval(lora_student)
    assert final["step"] == 4
    assert pearsonr(scores, target)[0] == pytest.approx(final["eval_plcc"], abs=1e-5)
    assert spearmanr(scores, target)[0] == pytest.approx(final["eval_srcc"], abs=1e-5)
    # the registry entry and the checkpoint folder give the same scorer
    np.testing.assert_allclose(create_scorer("psdistill", path=str(lora_student)).score([r.path for r in val]),
                               scores, atol=1e-6)
    np.testing.assert_allclose(StudentScorer.from_pretrained(lora_student / "checkpoint-4").score(
        [r.path for r in val]), scores, atol=1e-6)
    # training changed the model: the adapter is not a no-op
    teacher = create_scorer("teacher-pointwise").score([r.path for r in val])
    assert np.abs(scores - teacher).max() > 1e-3
    spec = json.loads((lora_student / "scorer_config.json").read_text())
    assert spec["weights"] == "adapter" and spec["head"] == "levels" and spec["base_model"]["name_or_path"] == "tiny"
    assert spec["level_words"] == DistillConfig().level_words and spec["rating_scale"] == [1.0, 5.0]


@pytest.mark.parametrize("tuning,head", [("lora", "scalar"), ("full", "scalar"), ("full", "levels")])
def test_other_heads_and_tunings_round_trip(data, tmp_path, tuning, head):
    out = _train(data, tmp_path / "run", tuning=tuning, head=head)
    scores = StudentScorer.from_pretrained(out).score([r.path for r in data[1]])
    assert pearsonr(scores, [r.score("overall") for r in data[1]])[0] == \
        pytest.approx(_final_eval(out)["eval_plcc"], abs=1e-5)


def test_score_images_writes_predictions_and_export_merged_keeps_the_scores(lora_student, data, tmp_path):
    val = data[1]
    scorer = StudentScorer.from_pretrained(lora_student)
    scores = score_images(scorer, val, tmp_path / "pred.csv", batch_size=3)
    written = read_predictions(tmp_path / "pred.csv")["overall"]
    assert list(written) == [r.id for r in val]
    np.testing.assert_allclose([written[r.id] for r in val], scores, rtol=1e-6)
    merged = export_merged(lora_student, tmp_path / "merged")
    assert (merged / "model.safetensors").is_file()
    assert json.loads((merged / "scorer_config.json").read_text())["weights"] == "full"
    np.testing.assert_allclose(StudentScorer.from_pretrained(merged).score([r.path for r in val]), scores, atol=1e-5)
