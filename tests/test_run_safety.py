"""A run directory one can trust: never repurposed, locked while in use, replaced outputs kept aside,
label-free runs that finish, no stale outputs reported, manifests and images checked up front."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from psdistill.cli import DEMO_CONFIG, main
from psdistill.core.config import parse_config
from psdistill.data.demo import DemoConfig, build_demo
from psdistill.data.manifest import read_manifest, write_manifest
from psdistill.data.predictions import read_predictions
from psdistill.data.records import ImageRecord
from psdistill.core.errors import ConfigError
from psdistill.pipeline import PipelineConfig, run_pipeline
from tests.test_pipeline import SMALL, _cfg, _judgments

QUIET = dict(log=lambda *a: None)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """One finished run (the teacher's pointwise scores too); tests work on copies of it."""
    tmp = tmp_path_factory.mktemp("finished")
    run_pipeline(_cfg(tmp, "teacher_pointwise=true"), **QUIET)
    return tmp / "run"


def _copy(finished: Path, tmp_path) -> Path:
    return shutil.copytree(finished, tmp_path / "run", symlinks=True)


def _own_manifest(tmp_path, n=3) -> Path:
    folder = tmp_path / "paintings"
    folder.mkdir()
    for i in range(n):
        Image.new("RGB", (32, 32), (40 * i, 0, 0)).save(folder / f"{i}.png")
    manifest = folder / "manifest.csv"
    manifest.write_text("path,category,overall\n" + "".join(f"{i}.png,a,{i}\n" for i in range(n)))
    return manifest


# ---- item 1: never silently repurposed ------------------------------------------------------------

def test_another_data_set_or_judge_is_refused_naming_both(finished, tmp_path):
    _copy(finished, tmp_path)
    config_before = (tmp_path / "run/config.yaml").read_text()
    manifest = _own_manifest(tmp_path)
    with pytest.raises(ConfigError) as e:
        run_pipeline(_cfg(tmp_path, f"data.manifest={manifest}"), stop_after="data", **QUIET)
    message = str(e.value)
    assert "\n" not in message and "the embedded demo" in message and str(manifest) in message
    assert "use a new run_dir or set overwrite_run_dir=true" in message
    assert (tmp_path / "run/config.yaml").read_text() == config_before  # the refused config replaced nothing

    with pytest.raises(ConfigError, match=r"simulated\(accuracy=0\.95.*simulated\(accuracy=0\.9,"):
        run_pipeline(_cfg(tmp_path, "judge.simulated.accuracy=0.9"), stop_after="judge", **QUIET)

    # Said explicitly, the run directory is taken over.
    results = run_pipeline(_cfg(tmp_path, f"data.manifest={manifest}", "overwrite_run_dir=true"),
                           stop_after="data", **QUIET)
    assert results["data"]["status"] == "ran" and results["data"]["summary"]["images"] == 3


def test_the_same_manifest_edited_in_place_or_copied_is_the_same_data_set(tmp_path):
    manifest = _own_manifest(tmp_path, n=4)
    manifest.write_text("path,category,overall\n0.png,a,0\n")
    run_pipeline(_cfg(tmp_path, f"data.manifest={manifest}"), stop_after="data", **QUIET)
    with open(manifest, "a") as f:  # the same path, grown: the data stage is redone, not refused
        f.write("3.png,b,1\n")
    assert run_pipeline(_cfg(tmp_path, f"data.manifest={manifest}"), stop_after="data", **QUIET)["data"]["status"] \
        == "ran"
    copy = shutil.copytree(manifest.parent, tmp_path / "copy") / "manifest.csv"  # another path, the same bytes
    assert run_pipeline(_cfg(tmp_path, f"data.manifest={copy}"), stop_after="data", **QUIET)["data"]["status"] == "ran"
    other = tmp_path / "copy" / "other.csv"  # another path and other bytes: another data set
    other.write_text("path,category,overall\n0.png,a,1\n")
    with pytest.raises(ConfigError, match="holds the data of another run"):
        run_pipeline(_cfg(tmp_path, f"data.manifest={other}"), stop_after="data", **QUIET)


def test_changed_training_settings_redo_later_stages_and_keep_the_replaced_aside(finished, tmp_path):
    lines = []
    run = _copy(finished, tmp_path)
    old_student = (run / "student/scorer_config.json").read_bytes()
    old_report = (run / "report/report.md").read_bytes()
    judged = _judgments(run)
    lines.clear()
    results = run_pipeline(_cfg(tmp_path, "distill.learning_rate=0.002"), log=lines.append)
    assert {k: m["status"] for k, m in results.items()} == {
        "data": "reused", "judge": "reused", "fit": "reused", "distill": "ran", "score": "ran", "evaluate": "ran"}
    assert _judgments(run) == judged
    (aside,) = (run / "replaced").iterdir()
    said = [line for line in lines if "replacing" in line]
    assert len(said) == 1 and "student, predictions, report" in said[0] and str(aside) in said[0]
    assert (aside / "student/scorer_config.json").read_bytes() == old_student
    assert (aside / "report/report.md").read_bytes() == old_report
    assert (aside / "stages/distill.json").is_file() and (run / "stages/distill.json").is_file()

    # keep_replaced=false deletes them instead
    other = shutil.copy(run / "predictions/student.csv", tmp_path / "other.csv")
    again = run_pipeline(_cfg(tmp_path, "distill.learning_rate=0.002", f"compare_predictions=[{other}]",
                              "keep_replaced=false"), **QUIET)
    assert [k for k, m in again.items() if m["status"] == "ran"] == ["evaluate"]
    assert list((run / "replaced").iterdir()) == [aside]
    assert (run / "report/report.md").is_file()


def test_a_users_manifest_does_not_default_to_the_demos_run_dir(tmp_path):
    manifest = tmp_path / "paintings" / "manifest.csv"
    assert parse_config(PipelineConfig, []).run_dir == "runs/demo"
    assert parse_config(PipelineConfig, [f"data.manifest={manifest}"]).run_dir == "runs/paintings"
    # the recipe's route: the demo config, then the user's manifest on top
    assert parse_config(PipelineConfig, ["--config", DEMO_CONFIG, f"data.manifest={manifest}"]).run_dir \
        == "runs/paintings"
    assert parse_config(PipelineConfig, [f"data.manifest={manifest}", "run_dir=x"]).run_dir == "x"


_HOLD = ("import sys, time\nfrom psdistill.core.run_lock import run_lock\n"
         "with run_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(120)\n")


def test_a_second_run_on_a_locked_run_dir_fails_at_once_and_a_dead_holders_lock_is_taken_over(tmp_path):
    run = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(run)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "held"
        start = time.monotonic()
        with pytest.raises(ConfigError) as e:
            run_pipeline(_cfg(tmp_path), stop_after="data", **QUIET)
        assert time.monotonic() - start < 10
        assert f"pid {holder.pid} on {socket.gethostname()}" in str(e.value) and str(run) in str(e.value)
        assert not (run / "config.yaml").exists() and not (run / "data").exists()
    finally:
        holder.send_signal(signal.SIGKILL)  # dies holding it: the lock file stays behind
        holder.wait()
    assert f"pid {holder.pid}" in (run / ".lock").read_text()
    assert run_pipeline(_cfg(tmp_path), stop_after="data", **QUIET)["data"]["status"] == "ran"
    assert f"pid {os.getpid()}" in (run / ".lock").read_text()


# ---- item 2: label-free runs -----------------------------------------------------------------------

def test_a_label_free_run_exits_0_with_a_report_of_what_needs_no_labels(finished, tmp_path, capsys):
    # The same images without any ground truth (no scores, no series ranks).
    records = read_manifest(finished / "data/manifest.csv")
    unlabelled = tmp_path / "unlabelled" / "manifest.csv"
    write_manifest([ImageRecord(id=r.id, path=r.path, category=r.category) for r in records], unlabelled)
    # A real judge's answers already in the store stand in for a VLM (the simulated one needs labels).
    (tmp_path / "free").mkdir()
    shutil.copy(finished / "judgments.sqlite", tmp_path / "free/judgments.sqlite")
    free = tmp_path / "free"
    assert main(["run", f"run_dir={free}", *SMALL, f"data.manifest={unlabelled}"]) == 0
    assert "nothing to evaluate" not in capsys.readouterr().err
    metrics = json.loads((free / "report/metrics.json").read_text())
    assert metrics["label_free"] is True and (free / "report/report.md").is_file()

    # Score distribution of the student, against numpy on its predictions file.
    (dim, student), = read_predictions(free / "predictions/student.csv").items()
    values = np.array(list(student.values()))
    stats = metrics["distributions"]["student"][dim]["all"]
    assert stats["n"] == len(records)
    assert stats["mean"] == pytest.approx(values.mean()) and stats["sd"] == pytest.approx(values.std(ddof=1))
    assert stats["median"] == pytest.approx(np.median(values))

    # Judge consistency between the orders, counted by hand from comparisons.csv.
    rows = [line.split(",")[1:] for line in (free / "comparisons.csv").read_text().splitlines()[1:]]  # dimension first
    asked = defaultdict(list)
    for a, b, p in rows:
        asked[(a, b)].append(float(p))
    same = [(np.mean(asked[(a, b)]) > 0.5) == (np.mean(asked[(b, a)]) < 0.5)
            for (a, b) in asked if (b, a) in asked and a < b]
    judge = metrics["judge_order_consistency"]["overall"]
    assert judge["pairs_both_orders"] == len(same) > 0 and judge["agreement"] == pytest.approx(np.mean(same))
    assert judge["mean_p_first"] == pytest.approx(np.mean([float(p) for *_, p in rows]))
    assert metrics["pool"]["overall"]["images"] == 15 and metrics["pool"]["overall"]["references"] == 5


def test_a_pool_larger_than_the_training_set_names_pool_k(tmp_path, capsys):
    assert main(["run", *[f"run_dir={tmp_path / 'run'}", *SMALL], "pool.k=20"]) == 2
    err = capsys.readouterr().err
    assert "pool.k=20" in err and "has 15" in err and "at most 14" in err and "n_items" not in err
    assert not (tmp_path / "run/judgments.sqlite").exists()


# ---- item 6: nothing stale reported ------------------------------------------------------------------

def test_outputs_the_config_no_longer_produces_are_not_reported(finished, tmp_path):
    run = _copy(finished, tmp_path)
    assert (run / "predictions/teacher-pointwise.csv").is_file()
    run_pipeline(_cfg(tmp_path), **QUIET)  # teacher_pointwise=false
    assert not (run / "predictions/teacher-pointwise.csv").exists()
    metrics = json.loads((run / "report/metrics.json").read_text())
    assert "teacher-pointwise" not in metrics["scorers"]
    assert "teacher-pointwise" not in (run / "report/report.md").read_text()

    # As if a run with teacher_pointwise=true was killed mid-score: its file, and no score marker.
    shutil.copy(run / "predictions/student.csv", run / "predictions/teacher-pointwise.csv")
    (run / "stages/score.json").unlink()
    run_pipeline(_cfg(tmp_path), **QUIET)
    assert "teacher-pointwise" not in json.loads((run / "report/metrics.json").read_text())["scorers"]


# ---- item 7: manifests in other encodings --------------------------------------------------------

def test_an_undecodable_manifest_names_its_line_and_data_encoding_reads_it(tmp_path, capsys):
    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    Image.new("RGB", (32, 32)).save(tmp_path / "b.png")
    manifest = tmp_path / "m.csv"
    # cp1252 "é" then a comma: no UTF-8, GBK or GB18030 sequence reads it.
    manifest.write_bytes("path,category,overall\na.png,x,3\nb.png,café,5\n".encode("cp1252"))
    args = ["data", f"run_dir={tmp_path / 'run'}", f"data.manifest={manifest}"]
    assert main(args) == 2
    assert f"{manifest}, line 3: cannot decode" in capsys.readouterr().err
    assert main([*args, "data.encoding=cp1252"]) == 0
    assert sorted(r.category for r in read_manifest(tmp_path / "run/data/manifest.csv")) == ["café", "x"]
    assert main([*args, "data.encoding=klingon"]) == 2
    assert "data.encoding: unknown encoding 'klingon'" in capsys.readouterr().err


# ---- item 3: every image the processor rejects, named; skip covers missing files --------------------

def test_the_data_check_agrees_with_the_vlm_processor_on_shapes():
    from psdistill.data.images import check_processable
    from psdistill.core.errors import DataError
    from psdistill.models.loading import ModelConfig, load_vlm_processor

    processor = load_vlm_processor(ModelConfig()).image_processor
    for size in [(2000, 5), (1000, 5), (1001, 5), (5, 1500), (3, 3), (64, 64)]:
        try:
            processor(images=[Image.new("RGB", size)])
            rejected = False
        except ValueError:
            rejected = True
        if rejected:
            with pytest.raises(DataError, match=r"x\.png: aspect ratio"):
                check_processable(Image.new("RGB", size), "x.png")
        else:
            check_processable(Image.new("RGB", size), "x.png")


def test_skip_leaves_out_missing_and_unprocessable_images_and_says_so(tmp_path, capsys):
    demo = build_demo(tmp_path / "demo", DemoConfig(series_per_category=3, size=32))
    records = read_manifest(demo)
    train = records[0].category
    Image.new("RGB", (2000, 5)).save(tmp_path / "thin.png")
    thin = ImageRecord(id="thin", path=str(tmp_path / "thin.png"), category=train, scores={"overall": 5.0})
    gone = ImageRecord(id="gone", path=str(tmp_path / "gone.png"), category=train, scores={"overall": 5.0})
    run_dir = f"run_dir={tmp_path / 'run'}"
    only_thin = write_manifest(records + [thin], tmp_path / "thin.csv")
    assert main(["data", run_dir, *SMALL, f"data.manifest={only_thin}"]) == 2
    err = capsys.readouterr().err
    assert "thin.png: aspect ratio 400:1 (2000x5 px)" in err and "data.on_bad_image=skip" in err

    both = write_manifest(records + [thin, gone], tmp_path / "both.csv")
    assert main(["run", run_dir, *SMALL, f"data.manifest={both}", "data.on_bad_image=skip",
                 "overwrite_run_dir=true"]) == 0
    out = capsys.readouterr().out
    assert "skipped 2 image(s)" in out and "thin.png: aspect ratio 400:1" in out and "gone.png: image file not found" in out
    report = (tmp_path / "run/report/report.md").read_text()
    assert "thin.png: aspect ratio" in report and "gone.png: image file not found" in report
    assert len(read_manifest(tmp_path / "run/data/manifest.csv")) == len(records)
