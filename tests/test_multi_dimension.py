"""Every dimension in one run (issue 13 part 3): config checks, the one-pass scorer against separate
per-dimension passes, the student's training rows and metrics, and the pipeline on the small demo."""
import json
import sqlite3

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import pearsonr, spearmanr

from _distill_common import ladder_records
from psdistill.core.config import parse_config
from psdistill.data.predictions import read_predictions
from psdistill.data.run_files import read_comparisons, read_pool, read_pseudo_scores
from psdistill.distill import DistillConfig, StudentScorer
from psdistill.scoring.readout import attach_score_head
from psdistill.scoring.spec import ScorerSpec
from psdistill.scoring.teacher import teacher_pointwise
from psdistill.distill.trainer import srcc_metrics
from psdistill.core.errors import ConfigError
from psdistill.models.loading import ModelConfig, load_vlm
from psdistill.pipeline import PipelineConfig, run_pipeline
from psdistill.scoring.api import by_dimension
from test_pipeline import SMALL as PIPELINE_SMALL

PROMPT = "distill.prompt=Rate the {dimension} of this image. Answer with one word."
DIMS = ["composition", "color", "overall"]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("md")
    paths = [r.path for r in ladder_records(root, photos=("astronaut", "coffee"), levels=2)]
    # Two other sizes: rows of a batch then differ in image tokens, so the prefix is left-padded.
    for n, size in enumerate(((96, 64), (32, 64))):
        Image.open(paths[n]).resize(size).save(root / f"resized{n}.png")
        paths.append(str(root / f"resized{n}.png"))
    return paths


@pytest.mark.parametrize("head", ["levels", "scalar"])
def test_one_pass_scores_equal_each_dimension_scored_alone(images, head):
    cfg = DistillConfig(prompt=PROMPT.split("=", 1)[1], head=head)
    model, processor = load_vlm(ModelConfig())
    if head == "scalar":
        torch.manual_seed(1)
        torch.nn.init.normal_(attach_score_head(model, (1.0, 10.0)).weight)  # not the zero start: a real readout

    def scorer(dims):
        return StudentScorer(model, processor, ScorerSpec.build(ModelConfig(), cfg.readout_config(dims), "base", "x"))

    together = scorer(DIMS)
    assert together.dimensions == tuple(DIMS)
    scores = together.score(images, batch_size=4)
    assert scores.shape == (len(images), len(DIMS))
    # The independent computation: each dimension's full prompt in its own pass (no shared prefix).
    for k, dim in enumerate(DIMS):
        alone = scorer([dim]).score(images, batch_size=4)
        assert alone.shape == (len(images),)
        np.testing.assert_allclose(scores[:, k], alone, atol=1e-5)
    assert np.ptp(scores, axis=1).max() > 1e-4  # the dimensions' prompts do read differently
    assert list(by_dimension(together, scores)) == DIMS and together(images[0]).shape == (len(DIMS),)


def test_gradient_checkpointing_reads_each_full_prompt_with_the_same_scores(images):
    # Checkpointed training keeps no KV cache: the readout runs each dimension's full prompt instead.
    from psdistill.scoring.readout import Readout, processor_inputs
    from psdistill.data.images import load_image

    cfg = DistillConfig(prompt=PROMPT.split("=", 1)[1])
    model, processor = load_vlm(ModelConfig())
    readout = Readout(ScorerSpec.build(ModelConfig(), cfg.readout_config(DIMS), "base", "x"), processor)
    inputs = processor_inputs(processor, readout.text, [load_image(p) for p in images])
    model.eval()
    with torch.no_grad():
        cached = readout(model, inputs)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()  # the tiny model has no dropout: train mode changes only the checkpointing
    checkpointed = readout(model, inputs)
    np.testing.assert_allclose(checkpointed.detach().numpy(), cached.numpy(), atol=1e-5)
    checkpointed.sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads) and any(g.abs().max() > 0 for g in grads)


def test_srcc_metrics_per_dimension_against_scipy():
    rng = np.random.default_rng(0)
    target = rng.normal(size=(12, 2))
    scores = target + rng.normal(size=(12, 2))
    target[3, 1] = np.nan  # unknown ground truth: left out of that dimension only

    class Pred:
        predictions, label_ids = scores, target

    out = srcc_metrics(Pred, ["a", "b"])
    known = np.isfinite(target[:, 1])
    assert out["srcc_a"] == pytest.approx(spearmanr(scores[:, 0], target[:, 0])[0])
    assert out["plcc_b"] == pytest.approx(pearsonr(scores[known, 1], target[known, 1])[0])
    assert out["srcc"] == pytest.approx((out["srcc_a"] + out["srcc_b"]) / 2)

    class One:
        predictions, label_ids = scores[:, 0], target[:, 0]

    assert srcc_metrics(One, ["a"]) == {"srcc": out["srcc_a"], "plcc": out["plcc_a"]}  # one dimension: as before


@pytest.mark.parametrize("overrides, message", [
    (["data.dimensions=[overall, overall]"], "data.dimensions: need distinct names"),
    (["data.dimensions=[]"], "data.dimensions: need distinct names"),
    (["data.dimensions=[over all]"], "data.dimensions: need distinct names"),
    (["data.dimensions=[overall, color]"], "distill.prompt: .* would all get the same prompt"),
    (["judge.kind=vlm", "data.dimensions=[overall, lighting]", PROMPT],
     r"data.dimensions: \['lighting'\] have no prompt in judge.vlm.prompt_set 'painting'"),
    (["data.dimension=overall"], "did you mean data.dimensions"),
])
def test_bad_dimensions_are_one_clear_line(overrides, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(PipelineConfig, overrides)


def test_the_photo_prompt_set_takes_its_own_dimensions():
    cfg = parse_config(PipelineConfig, ["judge.kind=vlm", "judge.vlm.prompt_set=photo", PROMPT,
                                        "data.dimensions=[overall, lighting, technique]"])
    assert cfg.data.dimensions == ("overall", "lighting", "technique")


SMALL = [*PIPELINE_SMALL, PROMPT]


def test_every_dimension_in_one_run_matches_one_dimension_runs(tmp_path):
    dims = ["overall", "technique"]
    multi = parse_config(PipelineConfig, [f"run_dir={tmp_path / 'multi'}", *SMALL, f"data.dimensions=[{', '.join(dims)}]",
                                          "teacher_pointwise=true"])
    results = run_pipeline(multi, log=lambda *a: None)
    run = tmp_path / "multi"
    judge = results["judge"]["summary"]
    # Store rows per dimension: each dimension's pool asked its own pairs, each stored once.
    with sqlite3.connect(run / "judgments.sqlite") as db:
        rows = dict(db.execute("SELECT dimension, COUNT(*) FROM judgments GROUP BY dimension").fetchall())
    comparisons = read_comparisons(run / "comparisons.csv")
    assert list(comparisons) == dims
    for dim in dims:
        assert rows[dim] == judge["dimensions"][dim]["pair_judgments"] == len(comparisons[dim]) > 0
    assert judge["pair_judgments"] == sum(rows.values()) == judge["computed"]
    pools = read_pool(run / "pool.json")
    assert pools["overall"].reference_ids == pools["technique"].reference_ids  # pool.seed draws them
    pseudo = read_pseudo_scores(run / "pseudo_scores.csv")
    assert list(pseudo) == dims

    # Each dimension's judging and pseudo-scores are exactly those of a run of that dimension alone.
    for dim in dims:
        alone = parse_config(PipelineConfig, [f"run_dir={tmp_path / dim}", *SMALL, f"data.dimensions=[{dim}]"])
        run_pipeline(alone, stop_after="fit", log=lambda *a: None)
        assert read_comparisons(tmp_path / dim / "comparisons.csv") == {dim: comparisons[dim]}
        assert read_pseudo_scores(tmp_path / dim / "pseudo_scores.csv") == {dim: pseudo[dim]}

    # One student, one column per dimension, in the predictions and the report.
    spec = json.loads((run / "student/scorer_config.json").read_text())
    assert list(spec["prompts"]) == dims and "{dimension}" not in "".join(spec["prompts"].values())
    for name in ("student", "teacher-pointwise", "pseudo-scores"):
        assert list(read_predictions(run / f"predictions/{name}.csv")) == dims
    student = StudentScorer.from_pretrained(run)
    assert student.dimensions == tuple(dims)
    metrics = json.loads((run / "report/metrics.json").read_text())["metrics"]
    for dim in dims:
        assert metrics["pseudo-scores"][dim]["all"]["srcc"] > 0.7
        assert np.isfinite(metrics["student"][dim]["all"]["srcc"])


def test_apdd_transfer_maps_the_students_dimensions_onto_total_and_attributes():
    from psdistill.data.records import ImageRecord
    from psdistill.core.errors import DataError
    from psdistill.evaluation.protocols import APDD_DIMENSION_MAP, apdd_transfer, read_dimension_map

    rng = np.random.default_rng(0)
    cats = ("oil painting*romanticism*landscapes", "sketching*classicism*portraiture")
    records = [ImageRecord(f"i{n}", f"i{n}.png", category=cats[n % 2],
                           scores={"total": float(rng.uniform(30, 90)), "layout_and_composition": float(rng.uniform(2, 9)),
                                   "mood": float(rng.uniform(2, 9))}) for n in range(16)]
    noise = {d: rng.normal(0, 1, len(records)) for d in ("overall", "composition")}
    student = {"overall": {r.id: r.score("total") / 10 + e for r, e in zip(records, noise["overall"])},
               "composition": {r.id: r.score("layout_and_composition") + e for r, e in zip(records, noise["composition"])}}
    mapping = read_dimension_map(APDD_DIMENSION_MAP)
    assert mapping["overall"] == "total" and mapping["composition"] == "layout_and_composition"
    t = apdd_transfer(records, {"student": student}, scales={"student": 10}, dimension_map=mapping, n_bootstrap=0)
    cells = t.all.metrics["student"]
    for ours, theirs in (("overall", "total"), ("composition", "layout_and_composition")):
        expected = spearmanr([student[ours][r.id] for r in records], [r.score(theirs) for r in records]).statistic
        assert cells[theirs]["all"]["srcc"] == pytest.approx(expected)
    assert "mood" not in cells  # no student column maps there: not evaluated against another dimension
    total = np.array([r.score("total") for r in records])
    assert cells["total"]["all"]["rmse"] == pytest.approx(
        np.sqrt(np.mean((10 * np.array([student["overall"][r.id] for r in records]) - total) ** 2)))
    with pytest.raises(DataError, match="overall -> 'score', which is no ground-truth dimension"):
        apdd_transfer(records, {"student": student}, dimension_map={"overall": "score"}, n_bootstrap=0)
    with pytest.raises(DataError, match="two columns of 'student' map onto 'total'"):
        apdd_transfer(records, {"student": student}, dimension_map={"overall": "total", "composition": "total"},
                      n_bootstrap=0)


def test_the_vlm_teachers_anchor_ratings_come_from_one_multi_dimension_pass(images, tmp_path):
    from psdistill.data.records import ImageRecord
    from psdistill.pipeline import RunContext
    from psdistill.pipeline.stages.fit import _teacher_rater

    cfg = parse_config(PipelineConfig, [f"run_dir={tmp_path}", "judge.kind=vlm", PROMPT, "fit.anchor=teacher",
                                        "data.dimensions=[overall, color]"])
    rate = _teacher_rater(RunContext(cfg))
    records = [ImageRecord(id=str(n), path=p) for n, p in enumerate(images)]
    for dim in ("color", "overall"):
        alone = teacher_pointwise(ModelConfig(), readout=cfg.distill.readout_config([dim])).score(images)
        np.testing.assert_allclose(rate(records, dim), alone, atol=1e-5)


def test_a_one_dimension_spec_of_format_1_loads_as_its_dimension(tmp_path):
    spec = ScorerSpec.build(ModelConfig(), DistillConfig().readout_config(["overall"]), "base", "x")
    old = {k: v for k, v in json.loads(json.dumps(spec.__dict__)).items() if k != "prompts"}
    (tmp_path / "scorer_config.json").write_text(json.dumps({**old, "format": "psdistill-scorer/1",
                                                              "dimension": "mood", "prompt": "Rate it."}))
    assert ScorerSpec.load(tmp_path).prompts == {"mood": "Rate it."}


def test_a_broken_pseudo_scores_file_names_the_line(tmp_path):
    from psdistill.core.errors import DataError

    path = tmp_path / "pseudo_scores.csv"
    path.write_text("id,overall,overall_variance,overall_is_reference\na,1.5,0.1,0\nb,x,0.1,1\n")
    with pytest.raises(DataError, match=r"pseudo_scores.csv, line 3: 'overall' or its variance is not a number"):
        read_pseudo_scores(path)
    path.write_text("id,score,variance\na,1.5,0.1\n")  # the one-dimension layout of before
    with pytest.raises(DataError, match="needs columns id,<dimension>,<dimension>_variance"):
        read_pseudo_scores(path)
