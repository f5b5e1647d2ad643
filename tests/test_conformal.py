"""Calibrated intervals (psdistill/scoring/conformal.py): the conformal quantile against a hand-worked case,
coverage on an exchangeable sample within a binomial tolerance, the interval of the real tiny levels head
against numpy from its logits, the one-line errors, and `psdistill score --coverage`'s columns."""
import csv
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from _distill_common import ladder_records
from psdistill.cli import main
from psdistill.core.errors import ConfigError, PsdistillError
from psdistill.data.predictions import read_predictions
from psdistill.scoring.batch import score_images
from psdistill.scoring.conformal import CALIBRATION_FILE, Calibration, CalibrationConfig, conformal_quantile
from psdistill.scoring.readout import level_token_ids, processor_inputs
from psdistill.scoring.teacher import teacher_pointwise


def test_the_quantile_is_the_ceil_n_plus_1_rank_by_hand():
    r = [0.5, 0.1, 0.9, 0.3, 0.7]  # sorted: 0.1 0.3 0.5 0.7 0.9
    assert conformal_quantile(r, 0.5) == 0.5  # ceil(6 * 0.5) = 3rd
    assert conformal_quantile(r, 0.6) == 0.7  # ceil(3.6) = 4th
    assert conformal_quantile(r, 0.8) == 0.9  # ceil(4.8) = 5th
    assert conformal_quantile(r, 0.9) == math.inf  # ceil(5.4) = 6th of 5: the whole scale
    # (19 + 1) * 0.9 is 18.000000000000004 in floating point: still the 18th of 19, not the 19th.
    assert conformal_quantile(np.arange(1.0, 20.0), 0.9) == 18.0


def _levels_sample(rng, n, values, on_scale):
    """An exchangeable sample of a levels head: each image's distribution over the levels (Dirichlet) and a
    target drawn from it plus noise (ratings: kept on the scale); returns (mean, std, target)."""
    p = rng.dirichlet(np.full(len(values), 0.7), size=n)
    mean, std = p @ values, np.sqrt(p @ values ** 2 - (p @ values) ** 2)
    level = (p.cumsum(1) > rng.random((n, 1))).argmax(1)
    y = values[level] + rng.normal(0, 0.3, n)
    return mean, std, np.clip(y, values.min(), values.max()) if on_scale else y


@pytest.mark.parametrize("target", ["ratings", "teacher"])  # clipped to the scale, and not
def test_coverage_on_an_exchangeable_sample_is_nominal_within_the_binomial(target):
    rng = np.random.default_rng(0)
    values = np.linspace(1.0, 10.0, 5)
    n_cal, n_test, reps, coverage = 200, 500, 100, 0.9
    covered = []
    for _ in range(reps):
        s, u, y = _levels_sample(rng, n_cal + n_test, values, on_scale=target == "ratings")
        cal = Calibration.fit("levels", target, (1, 10), {"overall": s[:n_cal]}, {"overall": u[:n_cal]},
                              {"overall": y[:n_cal]})
        lo, hi = cal.bounds("overall", s[n_cal:], u[n_cal:], coverage)
        covered.append(np.mean((lo <= y[n_cal:]) & (y[n_cal:] <= hi)))
    # Coverage given a calibration set is Beta(k, n + 1 - k), k = ceil((n + 1) c) (Vovk 2012); each rep's
    # test share adds a binomial c (1 - c) / n_test. Theory: c <= E[coverage] <= c + 1 / (n + 1).
    k = math.ceil((n_cal + 1) * coverage)
    a, b = k, n_cal + 1 - k
    var = a * b / ((a + b) ** 2 * (a + b + 1)) + coverage * (1 - coverage) / n_test
    tol = 4 * math.sqrt(var / reps)
    assert coverage - tol <= np.mean(covered) <= coverage + 1 / (n_cal + 1) + tol


def test_a_scalar_head_gets_constant_width():
    cal = Calibration.fit("scalar", "teacher", (1, 10), {"overall": [5.0, 6.0, 4.0]}, {"overall": [1.0, 1.0, 1.0]},
                          {"overall": [5.5, 5.0, 4.2]})
    assert cal.spread == "constant" and cal.target == "teacher pseudo-scores"
    assert cal.scores["overall"] == pytest.approx([0.2, 0.5, 1.0])
    lo, hi = cal.bounds("overall", np.array([5.0, 2.0]), np.array([0.3, 7.0]), 0.5)  # q: 2nd of 3 = 0.5
    np.testing.assert_allclose(hi - lo, [1.0, 1.0])


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return [r.path for r in ladder_records(tmp_path_factory.mktemp("imgs"), photos=("astronaut",), levels=4, size=48)]


@pytest.fixture(scope="module")
def teacher():
    return teacher_pointwise("tiny")


def test_the_levels_interval_equals_numpy_from_the_logits(teacher, images):
    calibration = Calibration("levels-std", "expert ratings", [1.0, 10.0],
                              {"overall": [0.2, 0.4, 0.9, 1.3, 2.0, 3.1]}, spread_floor=0.09, clip=[1.0, 10.0])
    teacher.calibration = calibration
    try:
        s, lo, hi = teacher.score(images, coverage=0.7)
    finally:
        teacher.calibration = None
    # Independently: the level words' logits at the answer position, softmax, mean and sd in numpy.
    text = teacher.readout.text
    ids = level_token_ids(teacher.processor, teacher.spec.level_words, teacher.spec.prompts["overall"])
    pil = [Image.open(p).convert("RGB") for p in images]
    with torch.no_grad():
        logits = teacher.model(**processor_inputs(teacher.processor, text, pil)).logits[:, -1, ids].double().numpy()
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    v = np.asarray(teacher.spec.level_values)
    v = 1 + (v - v.min()) * 9 / (v.max() - v.min())
    mean = p @ v
    sd = np.sqrt((p * (v[None] - mean[:, None]) ** 2).sum(1))
    q = sorted(calibration.scores["overall"])[math.ceil(7 * 0.7) - 1]  # the 5th of 6
    np.testing.assert_allclose(s, mean, atol=1e-5)
    np.testing.assert_allclose(lo, np.clip(mean - q * np.maximum(sd, 0.09), 1, 10), atol=1e-5)
    np.testing.assert_allclose(hi, np.clip(mean + q * np.maximum(sd, 0.09), 1, 10), atol=1e-5)
    assert np.all(hi - lo > 0)


def test_bad_coverage_and_missing_calibration_are_one_line(teacher, images, tmp_path):
    for bad in (0, 1, 1.5, -0.1, "ninety"):
        with pytest.raises(ConfigError, match=r"coverage: need a number in \(0, 1\)"):
            teacher.score(images[:1], coverage=bad)
    with pytest.raises(PsdistillError, match="no calibration.json, so no intervals") as e:
        teacher.score(images[:1], coverage=0.9)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="has no calibration"):
        score_images(teacher, images, tmp_path / "x.csv", coverage=0.9)
    with pytest.raises(ConfigError, match="pool_holdout > 0"):
        CalibrationConfig(target="teacher")
    with pytest.raises(PsdistillError, match="no calibration.json"):
        Calibration.load(tmp_path)


def test_score_command_writes_lo_and_hi_columns(teacher, images, tmp_path, capsys):
    folder = tmp_path / "scorer"
    folder.mkdir()
    teacher.spec.save(folder)  # the base model as a scorer folder, with a calibration beside it
    cal = Calibration("levels-std", "expert ratings", [1.0, 10.0], {"overall": [0.5, 1.0, 1.5, 2.0]}, 0.09, [1.0, 10.0])
    cal.save(folder)
    assert json.loads((folder / CALIBRATION_FILE).read_text())["quantiles"]["overall"] == {
        "0.8": 2.0, "0.9": None, "0.95": None}  # ceil(5 * 0.8) = 4th of 4; 0.9: rank 5 of 4, the whole scale
    out = tmp_path / "scores.csv"
    assert main(["score", "--model", str(folder), *map(str, images), "-o", str(out), "--coverage", "0.6"]) == 0
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["id", "path", "overall", "overall_lo", "overall_hi"]
    teacher.calibration = cal
    try:
        s, lo, hi = teacher.score(images, coverage=0.6)
    finally:
        teacher.calibration = None
    np.testing.assert_allclose([float(r["overall_lo"]) for r in rows], lo, atol=1e-6)
    np.testing.assert_allclose([float(r["overall_hi"]) for r in rows], hi, atol=1e-6)
    assert list(read_predictions(out)) == ["overall"]  # the bounds are no dimensions to evaluate
    assert main(["score", "--model", str(folder), str(images[0]), "-o", str(tmp_path / "b.csv"),
                 "--coverage", "1.2"]) == 2
    assert "coverage: need a number in (0, 1)" in capsys.readouterr().err


def test_the_distill_fingerprint_changes_only_when_pool_holdout_is_set():
    import dataclasses

    from psdistill.core.config import parse_config
    from psdistill.pipeline import PipelineConfig
    from psdistill.pipeline.runner import fingerprint
    from psdistill.pipeline.stages.distill import STAGE

    before = dataclasses.replace(STAGE, added=())  # the stage as runs finished before calibration knew it
    default = parse_config(PipelineConfig, [])
    held = parse_config(PipelineConfig, ["calibration.pool_holdout=0.2"])
    assert fingerprint(default, STAGE, []) == fingerprint(default, before, [])
    assert fingerprint(held, STAGE, []) != fingerprint(default, STAGE, [])


@pytest.mark.slow
def test_the_pipeline_calibrates_on_held_out_pool_images_and_reruns_only_what_a_setting_changes(tmp_path):
    from psdistill.core.config import parse_config
    from psdistill.pipeline import PipelineConfig, run_pipeline

    small = [f"run_dir={tmp_path / 'run'}", "data.demo.series_per_category=3", "data.demo.size=32", "pool.k=5",
             "distill.max_steps=2", "distill.per_device_train_batch_size=4", "distill.tuning=full",
             "distill.report_to=[]", "validation_images=0", "teacher_pointwise=false"]
    run = tmp_path / "run"
    results = run_pipeline(parse_config(PipelineConfig, [*small, "calibration.pool_holdout=0.4"]), log=lambda *a: None)
    # 15 pool images (3 series x 5 levels): 6 kept out of training for calibration, 9 trained on.
    assert results["distill"]["summary"]["train_images"] == 9
    assert results["distill"]["summary"]["calibration_images"] == 6
    cal = json.loads((run / "student" / CALIBRATION_FILE).read_text())
    assert cal["target"] == "teacher pseudo-scores" and cal["n"] == {"overall": 6} and cal["clip"] is None
    pseudo = {r["id"]: float(r["overall"]) for r in csv.DictReader(open(run / "predictions/pseudo-scores.csv"))}
    student = {r["id"]: float(r["overall"]) for r in csv.DictReader(open(run / "predictions/student.csv"))}
    spread = {r["id"]: float(r["overall"]) for r in csv.DictReader(open(run / "predictions/spread/student.csv"))}
    for image, r in cal["images"]["overall"].items():  # each score is |teacher - student| / spread
        assert r == pytest.approx(abs(pseudo[image] - student[image]) / max(spread[image], 0.09))
    report = json.loads((run / "report/intervals.json").read_text())["dimensions"]["overall"]
    assert report["halves"]["n_test"] == 3 and "## Intervals" in (run / "report/report.md").read_text()
    # The report's coverage reruns only the evaluation; no target reruns scoring and removes the calibration.
    status = lambda res: {k: m["status"] for k, m in res.items()}
    again = run_pipeline(parse_config(PipelineConfig, [*small, "calibration.pool_holdout=0.4",
                                                       "calibration.coverage=0.8"]), log=lambda *a: None)
    assert status(again) == {"data": "reused", "judge": "reused", "fit": "reused", "distill": "reused",
                             "score": "reused", "evaluate": "ran"}
    off = run_pipeline(parse_config(PipelineConfig, [*small, "calibration.pool_holdout=0.4",
                                                     "calibration.target=none"]), log=lambda *a: None)
    assert status(off)["distill"] == "reused" and status(off)["score"] == "ran"
    assert not (run / "student" / CALIBRATION_FILE).exists() and not (run / "report/intervals.json").exists()
