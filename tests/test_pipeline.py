"""The staged pipeline on a small demo: outputs, reuse, partial reruns, resume and clear errors."""
import json
import sqlite3
from pathlib import Path

import pytest
from PIL import Image

from psdistill.cli import main
from psdistill.core.config import parse_config
from psdistill.core.errors import ConfigError
from psdistill.pipeline import PipelineConfig, run_pipeline

SMALL = ["data.demo.series_per_category=3", "data.demo.size=32", "pool.k=5", "judge.simulated.accuracy=0.95", "distill.max_steps=2",
         "distill.per_device_train_batch_size=4", "distill.tuning=full", "distill.report_to=[]",
         "validation_images=0", "teacher_pointwise=false"]


def _cfg(tmp_path, *extra):
    return parse_config(PipelineConfig, [f"run_dir={tmp_path / 'run'}", *SMALL, *extra])


def _judgments(run_dir):
    with sqlite3.connect(run_dir / "judgments.sqlite") as db:
        return db.execute("SELECT COUNT(*) FROM judgments").fetchone()[0]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pipeline")
    cfg = _cfg(tmp)
    return tmp, cfg, run_pipeline(cfg, log=lambda *a: None)


def test_every_stage_writes_its_outputs(finished_run):
    tmp, cfg, results = finished_run
    run = tmp / "run"
    assert [m["status"] for m in results.values()] == ["ran"] * 6
    for name in ("config.yaml", "data/manifest.csv", "comparisons.csv", "pseudo_scores.csv",
                 "student/scorer_config.json", "predictions/student.csv", "predictions/pseudo-scores.csv",
                 "report/metrics.json", "report/report.md"):
        assert (run / name).is_file(), name
    judge = results["judge"]["summary"]
    # 15 training images (3 series x 5 levels); every judgment is in the store exactly once.
    assert judge["images"] == 15 and judge["simulated"] is True
    assert _judgments(run) == judge["pair_judgments"] == judge["computed"]
    # Pseudo-scores from the simulated judge order the training images like the ground truth.
    metrics = json.loads((run / "report/metrics.json").read_text())
    assert metrics["metrics"]["pseudo-scores"]["overall"]["all"]["srcc"] > 0.7


def test_every_csv_a_run_writes_has_unix_line_ends(finished_run):
    tmp, _, _ = finished_run
    csvs = sorted((tmp / "run").rglob("*.csv"))
    assert len(csvs) >= 5 and not [p for p in csvs if b"\r" in p.read_bytes()]


def test_rerun_reuses_every_stage(finished_run):
    tmp, cfg, _ = finished_run
    run = tmp / "run"
    before = (run / "student/scorer_config.json").stat().st_mtime_ns, _judgments(run)
    again = run_pipeline(cfg, log=lambda *a: None)
    assert [m["status"] for m in again.values()] == ["reused"] * 6
    assert ((run / "student/scorer_config.json").stat().st_mtime_ns, _judgments(run)) == before


def test_a_finished_runs_rerun_loads_nothing_of_the_model(finished_run, monkeypatch):
    import psdistill.models.loading as loading

    tmp, cfg, _ = finished_run
    loaded = []
    monkeypatch.setattr(loading, "load_vlm_processor", lambda *a, **k: loaded.append(a) or 1 / 0)
    assert [m["status"] for m in run_pipeline(cfg, log=lambda *a: None).values()] == ["reused"] * 6
    assert loaded == []
    # Something left to do: the words it reads are checked first (here the stand-in fails).
    changed = parse_config(PipelineConfig, [f"run_dir={tmp / 'run'}", *SMALL, "distill.learning_rate=0.01"])
    with pytest.raises(ZeroDivisionError):
        run_pipeline(changed, log=lambda *a: None)
    assert len(loaded) == 1


def test_changed_training_config_reruns_only_training_and_after(tmp_path):
    cfg = _cfg(tmp_path)
    run_pipeline(cfg, stop_after="distill", log=lambda *a: None)
    changed = _cfg(tmp_path, "distill.learning_rate=0.002")
    results = run_pipeline(changed, stop_after="distill", log=lambda *a: None)
    assert {k: m["status"] for k, m in results.items()} == {
        "data": "reused", "judge": "reused", "fit": "reused", "distill": "ran"}


def test_interrupted_judging_resumes_from_the_store(tmp_path):
    cfg = _cfg(tmp_path)
    first = run_pipeline(cfg, stop_after="judge", log=lambda *a: None)["judge"]["summary"]
    # As if killed after the judgments were stored but before the stage finished.
    (tmp_path / "run/stages/judge.json").unlink()
    again = run_pipeline(cfg, stop_after="judge", log=lambda *a: None)["judge"]
    assert again["status"] == "ran"
    assert again["summary"]["computed"] == 0 and again["summary"]["from_store"] == first["computed"]


def test_cli_names_a_bad_config_key(tmp_path, capsys):
    assert main(["run", f"run_dir={tmp_path}", "distill.lerning_rate=1"]) == 2
    err = capsys.readouterr().err
    assert "distill.lerning_rate: unknown key; did you mean distill.learning_rate?" in err
    assert "Traceback" not in err
    assert main(["run", f"run_dir={tmp_path}", "judge.simulated.accuracy=2"]) == 2
    assert "judge.simulated.accuracy" in capsys.readouterr().err


def test_cli_names_a_bad_manifest_row_and_an_unreadable_image(tmp_path, capsys):
    Image.new("RGB", (32, 32)).save(tmp_path / "ok.png")
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,category,overall\nok.png,a,3\nmissing.png,a,2\n")
    assert main(["data", f"run_dir={tmp_path / 'run'}", f"data.manifest={manifest}"]) == 2
    assert f"{manifest}, line 3: image file" in capsys.readouterr().err

    manifest.write_text("path,category,overall\nok.png,a,3\nbroken.jpg,a,2\n")
    assert main(["data", f"run_dir={tmp_path / 'run'}", f"data.manifest={manifest}"]) == 2
    err = capsys.readouterr().err
    assert "broken.jpg: cannot read image" in err and "data.on_bad_image=skip" in err
    # Skipping keeps the readable images and lists the other.
    assert main(["data", f"run_dir={tmp_path / 'run'}", f"data.manifest={manifest}", "data.on_bad_image=skip"]) == 0
    marker = json.loads((tmp_path / "run/stages/data.json").read_text())
    assert marker["summary"]["images"] == 1 and "broken.jpg" in marker["summary"]["skipped"][0]


def test_other_scorers_join_the_same_evaluation_table(finished_run):
    tmp, cfg, _ = finished_run
    from psdistill.data.manifest import read_manifest
    from psdistill.data.predictions import write_predictions

    records = read_manifest(tmp / "run/data/manifest.csv")
    oracle = write_predictions(tmp / "oracle.csv", records, {"overall": [r.scores["overall"] for r in records]})
    cfg2 = _cfg(tmp, f"compare_predictions=[{oracle}]")
    results = run_pipeline(cfg2, log=lambda *a: None)
    assert results["evaluate"]["status"] == "ran" and results["distill"]["status"] == "reused"
    metrics = json.loads((tmp / "run/report/metrics.json").read_text())["metrics"]
    assert metrics["oracle"]["overall"]["all"]["srcc"] == pytest.approx(1.0)
    assert "oracle" in (tmp / "run/report/report.md").read_text()


def test_a_manifest_edited_in_place_redoes_the_data_stage(tmp_path):
    for name in ("a.png", "b.png"):
        Image.new("RGB", (32, 32)).save(tmp_path / name)
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,category,overall\na.png,x,3\n")
    args = ["data", f"run_dir={tmp_path / 'run'}", f"data.manifest={manifest}"]
    marker = tmp_path / "run/stages/data.json"
    assert main(args) == 0 and json.loads(marker.read_text())["summary"]["images"] == 1
    first = json.loads(marker.read_text())["fingerprint"]
    assert main(args) == 0 and json.loads(marker.read_text())["fingerprint"] == first  # unchanged: reused
    manifest.write_text("path,category,overall\na.png,x,3\nb.png,x,5\n")  # same path, new content
    assert main(args) == 0
    assert json.loads(marker.read_text())["summary"]["images"] == 2


def test_score_command_takes_a_run_directory_for_its_student(finished_run, tmp_path):
    from psdistill.data.manifest import read_manifest
    from psdistill.data.predictions import read_predictions

    run = finished_run[0] / "run"
    records = read_manifest(run / "data/manifest.csv")[:3]
    out = tmp_path / "scores.csv"
    assert main(["score", "--model", str(run), *[r.path for r in records], "-o", str(out)]) == 0
    (dim, scored), = read_predictions(out).items()
    pipeline = read_predictions(run / "predictions/student.csv")[dim]
    for r in records:  # the command names an image by its file stem, the pipeline by its record id
        assert scored[Path(r.path).stem] == pytest.approx(pipeline[r.id], abs=1e-4), r.id


def test_a_level_word_of_two_tokens_stops_the_run_before_judging(tmp_path):
    cfg = _cfg(tmp_path, "distill.level_words=[excellent,Good,Fair,Poor,Bad]")
    with pytest.raises(ConfigError, match=r"distill.level_words.*'excellent'"):
        run_pipeline(cfg, log=lambda *a: None)
    assert not (tmp_path / "run" / "judgments.sqlite").exists()


def test_the_students_model_card_names_the_simulated_judge(finished_run):
    from huggingface_hub import ModelCard

    tmp, _, results = finished_run
    card = ModelCard.load(tmp / "run" / "student" / "README.md")
    assert card.data.to_dict()["psdistill"]["simulated_judge"] is True
    assert results["judge"]["summary"]["judge"] in card.text and "SIMULATED" in card.text


def test_export_writes_the_run_as_datasets(finished_run, tmp_path):
    import datasets

    from psdistill.data.manifest import read_manifest
    from psdistill.data.predictions import read_predictions
    from psdistill.data.run_files import read_comparisons, read_pseudo_scores

    tmp, _, _ = finished_run
    run = tmp / "run"
    assert main(["export", str(run), "-o", str(tmp_path / "ds")]) == 0
    images = datasets.load_from_disk(str(tmp_path / "ds" / "images"))
    records = read_manifest(run / "data" / "manifest.csv")
    assert images["id"] == [r.id for r in records]
    pseudo = read_pseudo_scores(run / "pseudo_scores.csv")["overall"]
    assert [p for p in images["pseudo_score_overall"] if p is not None] == [pseudo[r.id][0] for r in records if r.id in pseudo]
    student = read_predictions(run / "predictions" / "student.csv")["overall"]
    assert images["pred_student_overall"] == [student[r.id] for r in records]
    assert images[0]["image"].size == Image.open(records[0].path).size
    judgments = datasets.load_from_disk(str(tmp_path / "ds" / "judgments"))
    assert set(judgments["dimension"]) == {"overall"}
    assert list(zip(judgments["first_id"], judgments["second_id"], judgments["p_first_preferred"])) == \
        read_comparisons(run / "comparisons.csv")["overall"]


def test_the_exported_images_set_reads_back_as_a_manifest(finished_run, tmp_path):
    from psdistill.data.manifest import read_manifest
    from psdistill.pipeline.export import export_run

    tmp, _, _ = finished_run
    export_run(tmp / "run", tmp_path / "ds")
    cfg = parse_config(PipelineConfig, [f"run_dir={tmp_path / 'again'}", f"data.manifest={tmp_path / 'ds' / 'images'}"])
    run_pipeline(cfg, stop_after="data", log=lambda *a: None)
    key = lambda r: (r.id, r.category, r.series, r.rank, r.scores)  # noqa: E731
    assert ([key(r) for r in read_manifest(tmp_path / "again/data/manifest.csv")]
            == [key(r) for r in read_manifest(tmp / "run/data/manifest.csv")])


def test_exported_training_signal_is_self_contained_and_what_the_objectives_read(finished_run, tmp_path):
    import datasets
    import numpy as np

    from psdistill.data.manifest import read_manifest
    from psdistill.data.run_files import read_pseudo_scores
    from psdistill.distill.signal import training_signal

    tmp, cfg, _ = finished_run
    run = tmp / "run"
    assert main(["export", str(run), "-o", str(tmp_path / "ds")]) == 0
    records = read_manifest(run / "data" / "manifest.csv")
    pseudo = read_pseudo_scores(run / "pseudo_scores.csv")
    train = [r for r in records if r.id in pseudo["overall"]]
    expected = training_signal(train, pseudo, {"overall": cfg.distill.rendered_prompt("overall")})
    pixels = {r.path: np.asarray(Image.open(r.path)) for r in train}
    for r in records:  # the exported folder must not need the image files (put back below)
        Path(r.path).rename(r.path + ".gone")
    try:
        signal = datasets.load_from_disk(str(tmp_path / "ds" / "signal"))
        assert signal.column_names == expected.column_names and len(signal) == len(train) > 0
        for column in ("prompt", "dimension", "pseudo_score", "variance", "confidence", "series"):
            assert signal[column] == expected[column], column
        for row, path in zip(signal, expected["image"]):
            assert np.array_equal(np.asarray(row["image"]), pixels[path])
    finally:
        for r in records:
            Path(r.path + ".gone").rename(r.path)


def test_push_uploads_a_complete_scorer_with_the_runs_evaluation(finished_run, tmp_path):
    import shutil

    import numpy as np

    from psdistill.data.manifest import read_manifest
    from psdistill.data.predictions import read_predictions
    from psdistill.distill import StudentScorer
    from psdistill.distill.push import EVAL_HEADING, push_student, upload_plan
    from psdistill.core.errors import PsdistillError

    tmp, _, results = finished_run
    run = tmp / "run"
    files, card = upload_plan(run)
    names = {name for name, _ in files}
    assert "scorer_config.json" in names and "model.safetensors" in names
    assert not any(n.startswith("checkpoint-") or n == "trainer_state.json" for n in names)
    assert EVAL_HEADING in card and results["evaluate"]["summary"]["headline"][0] in card
    # What the Hub would hold is a scorer on its own: it scores as the run did.
    repo = tmp_path / "repo"
    for name, local in files:
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(local, repo / name)
    (repo / "README.md").write_text(card)
    records = read_manifest(run / "data" / "manifest.csv")[:4]
    expected = read_predictions(run / "predictions" / "student.csv")["overall"]
    scores = StudentScorer.from_pretrained(repo).score([r.path for r in records])
    np.testing.assert_allclose(scores, [expected[r.id] for r in records], atol=1e-5)
    assert main(["push", str(run), "me/demo", "--dry-run"]) == 0
    with pytest.raises(PsdistillError, match="push to 'me/demo' failed"):  # HF_HUB_OFFLINE=1 in the tests
        push_student(run, "me/demo")
