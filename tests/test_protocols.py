import argparse
import csv
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr

from _fixtures_datasets import write_images

from psdistill.cli import DEMO_CONFIG
from psdistill.cli import main as psdistill_main
from psdistill.data.loaders import load_apddv2, load_ava, load_fg_series, load_ppaint
from psdistill.data.predictions import read_predictions, write_predictions
from psdistill.data.records import ImageRecord
from psdistill.core.errors import DataError
from psdistill.evaluation.protocols import apdd_transfer, ava, fg_series, one_score, ppaint_cross_category

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "eval" / "protocol.py"
N_BOOT = 50
# APDDv2's categories are Chinese; matplotlib's default font has no CJK glyphs (the labels still say which)
pytestmark = pytest.mark.filterwarnings("ignore:Glyph .* missing from font")


def _load_script():
    spec = importlib.util.spec_from_file_location("protocol_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(*args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)


# ---- PPaint --------------------------------------------------------------------------------------

PPAINT_CATS = ("landscape", "figure", "bird-and-flower")


@pytest.fixture(scope="module")
def ppaint(tmp_path_factory):
    root = tmp_path_factory.mktemp("ppaint")
    ids = {c: [f"{c[0]}{k}" for k in range(5)] for c in PPAINT_CATS}
    write_images(root / "images", *(f"{c}/{i}.png" for c in PPAINT_CATS for i in ids[c]))
    rng = np.random.default_rng(0)
    rows = ["expert,image_id,dimension,score"]
    for c in PPAINT_CATS:
        for i in ids[c]:
            for dim in ("composition", "brushwork"):
                rows += [f"e{e},{i},{dim},{rng.integers(1, 11)}" for e in range(2)]
    (root / "ratings.csv").write_text("\n".join(rows) + "\n")
    (root / "pairs.csv").write_text("expert,dimension,first_id,second_id,winner\n")
    return root, load_ppaint(root).records


def _ppaint_predictions(records):
    rng = np.random.default_rng(1)
    sign = {"landscape": 1, "figure": -1, "bird-and-flower": 1}
    return {
        # the landscape model: right on composition except on figures, where it is reversed; right on brushwork
        "landscape": {"composition": {r.id: sign[r.category] * r.score("composition") for r in records},
                      "brushwork": {r.id: r.score("brushwork") for r in records}},
        # the figure model predicts one "overall" score per image: compared with both dimensions
        "figure": {"overall": {r.id: float(rng.normal()) for r in records}},
    }


def test_ppaint_cross_category(ppaint, tmp_path):
    _, records = ppaint
    preds = _ppaint_predictions(records)
    cross = ppaint_cross_category(records, preds)
    assert cross.dimensions == ["brushwork", "composition"] and cross.train == ["landscape", "figure"]
    m = cross.matrices["composition"]
    assert m.test == ["bird-and-flower", "figure", "landscape"]
    assert m.srcc[0].tolist() == pytest.approx([1.0, -1.0, 1.0])
    for d, matrix in cross.matrices.items():  # the one-score model, against scipy on each test category
        for j, c in enumerate(matrix.test):
            sel = [r for r in records if r.category == c]
            expected = spearmanr([preds["figure"]["overall"][r.id] for r in sel], [r.score(d) for r in sel]).statistic
            assert matrix.srcc[1, j] == pytest.approx(expected)
    table = cross.mean_srcc()  # columns: brushwork, composition, mean over both
    assert table[0].tolist() == pytest.approx([1.0, 1 / 3, 2 / 3])  # (1 - 1 + 1) / 3 on composition
    assert table[1, 2] == pytest.approx(np.mean(cross.matrices["brushwork"].srcc[1].tolist()
                                                + cross.matrices["composition"].srcc[1].tolist()))
    md = cross.to_markdown()
    assert "| train | brushwork | composition | mean |" in md and "| landscape | 1.000 | 0.333 | 0.667 |" in md
    (tmp_path / "cross_category_colour.png").write_bytes(b"an earlier run's dimension")
    paths = cross.write(tmp_path)
    assert not (tmp_path / "cross_category_colour.png").exists()
    assert json.loads(paths["json"].read_text())["mean_srcc"]["landscape"]["mean"] == pytest.approx(2 / 3)
    assert (tmp_path / "cross_category_composition.png").stat().st_size > 0

    only = ppaint_cross_category(records, preds, dimensions=["composition"])
    assert only.dimensions == ["composition"]
    with pytest.raises(DataError, match=r"training categories \['sky'\] are not categories"):
        ppaint_cross_category(records, {"sky": preds["landscape"]})
    with pytest.raises(DataError, match=r"dimensions \['colour'\]: no ground truth"):
        ppaint_cross_category(records, preds, dimensions=["colour"])


# ---- APDDv2 --------------------------------------------------------------------------------------

APDD_ATTRS = ("Theme and logic", "Creativity", "Layout and composition", "Space and perspective",
              "The sense of order", "Light and shadow", "Color", "Details and texture", "The overall", "Mood")
# Category strings of the release (BestiVictory/APDDv2 at 3ff08cd), with the attributes each leaves blank there
GONGBI, FIGURE, OIL = ("traditional Chinese painting*meticulous*mountains and water",
                       "traditional Chinese painting*meticulous*portraiture", "oil painting*romanticism*landscapes")
APDD_BLANK = {GONGBI: {"Creativity"}, FIGURE: {"Theme and logic", "Creativity", "The sense of order", "Mood"},
              OIL: {"Space and perspective", "Light and shadow"}}
APDD_TEST = 3  # the first 3 images of each category form the split file (the authors' csvfiles/test.csv)


def _load_authors_eval():
    spec = importlib.util.spec_from_file_location("apdd_authors_eval", ROOT / "eval" / "apdd_authors_eval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.authors_eval


@pytest.fixture(scope="module")
def apdd(tmp_path_factory):
    """5 paintings in each of 3 categories, in the release's format (GBK; attributes blank where the release
    leaves them blank), and a split file of 9 of them with Score = total / 10."""
    root = tmp_path_factory.mktemp("apdd")
    rng = np.random.default_rng(2)
    rows, split = [], []
    for c in (GONGBI, FIGURE, OIL):
        for k in range(5):
            attrs = ["" if a in APDD_BLANK[c] else f"{rng.uniform(2, 9):.2f}" for a in APDD_ATTRS]
            total = 50.0 if c == OIL and k == 0 else round(float(rng.uniform(30, 90)), 2)  # Score 5: label 0
            rows.append([f"{c.split('*')[1][:4]}{c[-3:]}{k}.png".replace(" ", ""), c, f"{total:.2f}", *attrs,
                         "笔触熟练、" if k == 0 else ""])
            if k < APDD_TEST:
                split.append([rows[-1][0], c, f"{total / 10:.4g}", *attrs])
    header = ["filename", "Artistic Categories", "Total aesthetic score", *APDD_ATTRS, "Language Comment"]
    with open(root / "APDDv2-10023.csv", "w", newline="", encoding="gbk") as f:
        csv.writer(f).writerows([header, *rows])
    (root / "csvfiles").mkdir()
    with open(root / "csvfiles" / "test.csv", "w", newline="", encoding="ISO-8859-1") as f:
        csv.writer(f).writerows([["filename", "Artistic Categories", "Score", *APDD_ATTRS], *split])
    write_images(root / "images", *(r[0] for r in rows))
    return root, load_apddv2(root / "APDDv2-10023.csv", root / "images").records


def _apdd_predictions(records):
    rng = np.random.default_rng(3)
    return {"student": {"overall": {r.id: float(rng.uniform(1, 10)) for r in records}},  # one score per image
            "fg": {"total": {r.id: r.score("total") + float(rng.normal(0, 10)) for r in records}}}


def test_apdd_categories_are_the_release_strings(apdd):
    _, records = apdd
    assert {r.category for r in records} == {GONGBI, FIGURE, OIL}
    assert apdd_transfer(records, _apdd_predictions(records), n_bootstrap=0).chinese.categories == [GONGBI, FIGURE]


def test_apdd_transfer(apdd):
    _, records = apdd
    preds = _apdd_predictions(records)
    t = apdd_transfer(records, preds, n_bootstrap=N_BOOT)
    creativity = t.all.metrics["student"]["creativity"]
    # blank in both Chinese categories: no cell there, left out of the mean, and no "undefined" note
    assert creativity["categories"][GONGBI] == {} and creativity["categories"][FIGURE] == {}
    assert creativity["category_mean"]["srcc_n_categories"] == 1
    assert creativity["category_mean"]["srcc"] == creativity["categories"][OIL]["srcc"]
    assert not any("creativity" in note for note in t.all.notes)
    assert "creativity" not in t.chinese.dimensions and "creativity" not in t.all.metrics["fg"]
    chinese = [r for r in records if r.category in (GONGBI, FIGURE)]
    for name, dim in (("student", "overall"), ("fg", "total")):
        expected = spearmanr([preds[name][dim][r.id] for r in chinese], [r.score("total") for r in chinese]).statistic
        assert t.chinese.metrics[name]["total"]["all"]["srcc"] == pytest.approx(expected)
    md = t.to_markdown()
    assert "| dimension | group | images | student | fg |" in md
    assert "| creativity | all | 5 | " in md and "| creativity | Chinese painting" not in md
    assert "| total | Chinese painting | 10 | " in md
    summary = t.to_dict()  # the files are checked with the script, which writes them
    assert summary["chinese_categories"] == t.chinese.categories and summary["srcc"][0]["dimension"] == "total"
    assert summary["srcc"][0]["scorers"]["student"]["srcc"] == t.all.metrics["student"]["total"]["all"]["srcc"]
    constant = apdd_transfer(records, {"constant": {r.id: 5.0 for r in records}}, n_bootstrap=0).to_dict()
    assert json.loads(json.dumps(constant, allow_nan=False))["srcc"][0]["scorers"]["constant"]["srcc"] is None

    oil = apdd_transfer(records, preds, chinese_styles=("oil painting",), n_bootstrap=0)
    assert oil.chinese.categories == [OIL]
    none = apdd_transfer(records, preds, chinese_styles=("watercolour",), n_bootstrap=0)
    assert none.chinese is None and "no such category" in none.to_markdown()


def test_apdd_scales_are_explicit(apdd):
    _, records = apdd
    preds = _apdd_predictions(records)
    unstated = apdd_transfer(records, preds, n_bootstrap=0)
    student = unstated.all.metrics["student"]
    # a one-score scorer of unknown scale: correlations only, never an error between 1-10 and 0-100
    assert "srcc" in student["total"]["all"] and "rmse" not in student["total"]["all"]
    assert "mse" not in unstated.authors.scorers["student"] and "srcc" in unstated.authors.scorers["student"]
    assert any(n.startswith("student: rmse, mae, acc not computed") for n in unstated.all.notes)
    assert "student: not stated: RMSE, MAE, MSE and ACC@5 are not computed" in unstated.to_markdown()
    # fg's column is the total: on the total's scale, compared as it is
    total = np.array([r.score("total") for r in records])
    fg = np.array([preds["fg"]["total"][r.id] for r in records])
    assert unstated.all.metrics["fg"]["total"]["all"]["rmse"] == pytest.approx(np.sqrt(np.mean((fg - total) ** 2)))
    stated = apdd_transfer(records, preds, scales={"student": 10}, n_bootstrap=0)
    student = stated.all.metrics["student"]
    p = np.array([preds["student"]["overall"][r.id] for r in records])
    assert student["total"]["all"]["rmse"] == pytest.approx(np.sqrt(np.mean((10 * p - total) ** 2)))
    mood = [(preds["student"]["overall"][r.id], r.score("mood")) for r in records if "mood" in r.scores]
    assert student["mood"]["all"]["mae"] == pytest.approx(np.mean([abs(a - b) for a, b in mood]))  # 0-10 as is
    assert "student: 0-10 (stated): x 10 onto the total (0-100); x 1 onto the attributes (0-10)" in stated.to_markdown()
    with pytest.raises(DataError, match=r"scales given for \['nobody'\]"):
        apdd_transfer(records, preds, scales={"nobody": 10})
    wrong = apdd_transfer(records, preds, scales={"fg": 10}, n_bootstrap=0)  # fg is on 0-100: x 10 overflows
    assert wrong.notes == ["fg: after the scale conversion, total 100% outside 0-100: is its scale right? "
                           "(--scale fg=TOP)"]
    assert stated.notes == [] and unstated.notes == []


def test_apdd_authors_metrics_equal_their_formulas(apdd, tmp_path):
    """Our protocol on the split file against a transcription of the authors' eval.py, which reads the split's
    Score column (not our total / 10) as they do; a scorer covering 5 of the 9 images and one on 0-100."""
    root, _ = apdd
    authors_eval = _load_authors_eval()
    records = load_apddv2(root / "APDDv2-10023.csv", root / "images", split=root / "csvfiles" / "test.csv").records
    assert len(records) == 9
    rng = np.random.default_rng(4)
    near = {r.id: r.score("total") / 10 + float(rng.normal(0, 1.5)) for r in records}  # on 0-10, around 5
    near[records[0].id] = 5.0  # on the threshold: label 0, as a Score of 5 is
    partial = {r.id: float(rng.uniform(2, 8)) for r in records[:5]}
    hundred = {r.id: 10 * v for r, v in zip(records, near.values())}
    t = apdd_transfer(records, {"near": {"score": near}, "partial": {"score": partial},
                                "hundred": {"total": hundred}}, scales={"near": 10, "partial": 10}, n_bootstrap=0,
                      split="the images of csvfiles/test.csv")
    for name, on_score in (("near", near), ("partial", partial), ("hundred", {i: v / 10 for i, v in hundred.items()})):
        theirs = authors_eval(root / "csvfiles" / "test.csv", on_score, dtype=np.float64)
        ours = t.authors.scorers[name]
        assert ours["n"] == theirs["n"] and ours["n_ground_truth"] == 9
        for m in ("srcc", "plcc", "mse", "mae", "acc"):
            assert ours[m] == pytest.approx(theirs[m], abs=1e-12), (name, m)
        float32 = authors_eval(root / "csvfiles" / "test.csv", on_score)  # as they run it
        assert all(ours[m] == pytest.approx(float32[m], abs=1e-5) for m in ("srcc", "plcc", "mse", "mae"))
    assert 0 < t.authors.scorers["near"]["acc"] < 1  # the threshold splits the images
    md = t.to_markdown()
    assert "Score = total / 10 on the images of csvfiles/test.csv" in md
    assert "| partial | 5 of 9 (partial) | " in md and "**partial coverage: partial** scores 5 of 9 on total" in md
    assert "(n=5)" in md.split("## SRCC per dimension")[1]  # the SRCC table marks the scorer's own n too
    everything = apdd_transfer(load_apddv2(root / "APDDv2-10023.csv", root / "images").records,
                               {"near": {"score": near}}, n_bootstrap=0)
    assert "15 images in 3 categories, every image of the CSV, not the authors' test split" in \
        everything.to_markdown()


def test_one_score_only_for_a_single_dimension_without_ground_truth():
    recs = [ImageRecord("a", "a.png", scores={"total": 60.0})]
    preds = {"student": {"overall": {"a": 6.1}}, "fg": {"total": {"a": 5.0}},
             "two": {"overall": {"a": 1.0}, "mood": {"a": 2.0}}, "flat": {"a": 3.0}}
    assert one_score(preds, recs) == {"student": {"a": 6.1}, "fg": {"total": {"a": 5.0}},
                                      "two": preds["two"], "flat": {"a": 3.0}}


# ---- FGAesthetics series -------------------------------------------------------------------------

FG_MEMBERS = """series,image_id,path,category
s1,a,img/a.png,Natural
s1,b,img/b.png,Natural
s1,c,img/c.png,Natural
s2,d,img/d.png,Natural
s2,e,img/e.png,Natural
s3,f,img/f.png,AIGC
s3,g,img/g.png,AIGC
"""
FG_PAIRS = """series,first_id,second_id,p_first
s1,a,b,0.9
s1,b,c,0.8
s1,a,c,1.0
s2,d,e,1.0
s3,f,g,0.1
"""
# ranks: s1 a 0, b 1, c 2; s2 d 0, e 1; s3 g 0, f 1
FG_PREDICTIONS = {"a": 1.0, "b": 3.0, "c": 2.0, "d": 5.0, "e": 4.0, "f": 0.0, "g": 1.0}


@pytest.fixture(scope="module")
def fg(tmp_path_factory):
    root = tmp_path_factory.mktemp("fg")
    (root / "members.csv").write_text(FG_MEMBERS)
    (root / "pairs.csv").write_text(FG_PAIRS)
    write_images(root, *(f"img/{k}.png" for k in "abcdefg"))
    return root, load_fg_series(root / "members.csv", root / "pairs.csv").records


def test_fg_series_by_hand(fg):
    _, records = fg
    result = fg_series(records, {"m": {"overall": FG_PREDICTIONS}}, n_bootstrap=N_BOOT)
    cells = result.metrics["m"]["overall"]
    natural, aigc, pooled = cells["categories"]["Natural"], cells["categories"]["AIGC"], cells["all"]
    # s1: predicted ranks b > c > a against a > b > c: rho = 1 - 6 * (4 + 1 + 1) / (3 * 8) = -0.5, top image wrong,
    # 1 of 3 pairs right; s2 and s3 are right. s-SRCC and s-Acc weigh a series by its length.
    assert natural["s_srcc"] == pytest.approx((3 * -0.5 + 2 * 1) / 5)
    assert natural["s_acc"] == pytest.approx(2 / 5) and natural["pair_acc"] == pytest.approx(2 / 4)
    assert [aigc[m] for m in ("s_srcc", "s_acc", "pair_acc", "pair_f1")] == pytest.approx([1.0] * 4)
    assert pooled["s_srcc"] == pytest.approx((3 * -0.5 + 2 + 2) / 7) and pooled["pair_acc"] == pytest.approx(3 / 5)
    assert pooled["n_series"] == 3 and len(pooled["s_srcc_ci"]) == 2 and "pair_f1_ci" in natural
    with pytest.raises(DataError, match="no image has a series and a rank"):
        fg_series([ImageRecord("x", "x.png", category="Natural")], {"m": {"x": 1.0}})


# ---- AVA -----------------------------------------------------------------------------------------

AVA_TXT = """1 101 0 0 10 0 0 0 0 0 0 0 0 0 1
2 102 0 0 0 5 5 0 0 0 0 0 0 0 1
3 103 0 0 0 0 0 8 0 0 0 0 0 0 1
4 104 0 0 0 0 0 0 6 0 0 0 0 0 1
5 105 0 0 0 0 0 0 0 2 2 0 0 0 1
6 106 0 0 0 0 0 0 0 0 0 7 0 0 1
"""
AVA_PREDICTIONS = {"101": 4.5, "102": 5.5, "103": 5.2, "104": 6.9, "105": 9.0, "106": 1.0}


@pytest.fixture(scope="module")
def ava_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ava")
    (root / "AVA.txt").write_text(AVA_TXT)
    (root / "test.jpgl").write_text("101.jpg\n102.jpg\n103.jpg\n104.jpg\n105.jpg\n")  # 106 is a training image
    write_images(root / "images", *(f"{i}.jpg" for i in range(101, 107)))
    return root, load_ava(root / "AVA.txt", root / "images", split=root / "test.jpgl").records


def test_ava(ava_data):
    _, records = ava_data
    assert [r.score("overall") for r in records] == [3.0, 4.5, 6.0, 7.0, 8.5]  # mean votes
    result = ava(records, {"student": {"score": AVA_PREDICTIONS}}, n_bootstrap=N_BOOT)  # one score: vs overall
    assert result.dimensions == ["overall"]
    cell = result.metrics["student"]["overall"]["all"]
    pred, gt = [AVA_PREDICTIONS[r.id] for r in records], [r.score("overall") for r in records]
    assert cell["n"] == 5 and cell["srcc"] == pytest.approx(spearmanr(pred, gt).statistic)
    assert cell["plcc"] == pytest.approx(pearsonr(pred, gt).statistic)
    assert cell["acc"] == pytest.approx(4 / 5)  # good (> 5): truth F F T T T, predicted F T T T T
    with pytest.raises(DataError, match="no image has a mean vote"):
        ava([ImageRecord("x", "x.jpg")], {"s": {"x": 1.0}})


# ---- scoring into a predictions file, resumed --------------------------------------------------------

class IndexScorer:
    """Scores an image by the number in its file name; fails on the image named `fail_on`."""

    name, dimensions, score_range, lower_better = "index", ("overall",), (0.0, 100.0), False

    def __init__(self, fail_on=None):
        self.fail_on, self.seen = fail_on, []

    def score(self, images):
        stems = [Path(p).stem for p in images]
        if self.fail_on in stems:
            raise RuntimeError("killed")
        self.seen += stems
        return np.array([float(s[1:]) for s in stems])


def test_scoring_is_resumed_from_the_predictions_file(tmp_path, monkeypatch):
    protocol = _load_script()
    monkeypatch.setattr(protocol, "SCORE_CHUNK", 3)
    records = [ImageRecord(f"i{k}", str(tmp_path / f"i{k}.png")) for k in range(8)]
    with pytest.raises(RuntimeError, match="killed"):
        protocol.scored_predictions(lambda: IndexScorer(fail_on="i4"), "index", records, tmp_path)
    path = tmp_path / "predictions" / "index.csv"
    assert read_predictions(path) == {"overall": {f"i{k}": float(k) for k in range(3)}}  # the first chunk was kept
    resumed = IndexScorer()
    preds = protocol.scored_predictions(lambda: resumed, "index", records, tmp_path)
    assert resumed.seen == [f"i{k}" for k in range(3, 8)]
    assert preds == read_predictions(path) == {"overall": {f"i{k}": float(k) for k in range(8)}}

    def must_not_load():
        raise AssertionError("every image is scored already: no model should be built")
    assert protocol.scored_predictions(must_not_load, "index", records, tmp_path) == preds
    # the scorer's score_range is its scale on APDDv2 unless --scale says otherwise
    args = argparse.Namespace(scorer="index", name=None, out=tmp_path, scale=[])
    assert protocol.scales(args) == {"index": 100.0}
    assert protocol.scales(argparse.Namespace(**{**vars(args), "scale": ["index=10"]})) == {"index": 10.0}
    # another model under the same name: its file is not reused
    other = IndexScorer()
    protocol.scored_predictions(lambda: other, "index", records, tmp_path, {"scorer": "index", "model": "other"})
    assert other.seen == [f"i{k}" for k in range(8)]


# ---- the entry script and the CLI alias ----------------------------------------------------------

def test_script_apdd_transfer_with_predictions_files(apdd, tmp_path, capsys):
    root, records = apdd
    preds = _apdd_predictions(records)
    # both on the total only (a plot per dimension makes every attribute cost a second here); the student's file
    # leaves some cells blank, as a scorer that skipped images writes them: read as missing
    files = {"fg": write_predictions(tmp_path / "fg.csv", records, {"total": [preds["fg"]["total"][r.id]
                                                                              for r in records]})}
    files["student"] = tmp_path / "student.csv"
    # its column is named "total" but holds 1-10 scores: the stated scale, not the name, decides
    lines = ["id,path,total"] + [f"{r.id},{r.path},{preds['student']['overall'][r.id] if k % 3 else ''}"
                                   for k, r in enumerate(records)]
    files["student"].write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    split = root / "csvfiles" / "test.csv"
    args = ["apdd-transfer", "--csv", root / "APDDv2-10023.csv", "--images", root / "images", "--split", split,
            "--bootstrap", N_BOOT, "--out", out, "--predictions", f"student={files['student']}"]
    proc = _run(*args, f"fg={files['fg']}", "--scale", "student=10")
    assert proc.returncode == 0, proc.stderr
    assert "| dimension | group | images | student | fg |" in proc.stdout
    assert "| total | Chinese painting | 6 | " in proc.stdout and "| student | 6 of 9 (partial) | " in proc.stdout
    for name in ("summary.md", "metrics.json", "report.md", "chinese_painting/metrics.json",
                 "chinese_painting/report.md"):
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["chinese_categories"]) == {GONGBI, FIGURE} and summary["srcc"][0]["group"] == "all"
    assert summary["authors_eval"]["scorers"]["student"]["n"] == 6 and "mse" in summary["authors_eval"]["scorers"]["fg"]
    assert list((out / "plots").glob("*.png")) and list((out / "chinese_painting" / "plots").glob("*.png"))
    # the inputs, with their hashes, in inputs.json and at the end of summary.md
    inputs = json.loads((out / "inputs.json").read_text())
    for key, path in (("csv", root / "APDDv2-10023.csv"), ("split", split)):
        assert inputs[key] == {"path": str(path), "bytes": path.stat().st_size,
                               "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    assert inputs["predictions"]["fg"]["sha256"] == hashlib.sha256(files["fg"].read_bytes()).hexdigest()
    assert inputs["options"]["scale"] == ["student=10"] and summary["inputs"] == inputs
    assert hashlib.sha256(split.read_bytes()).hexdigest() in (out / "summary.md").read_text()
    # a rerun into the same --out with other scorers and no Chinese subset keeps nothing of the first run
    assert (out / "plots" / "srcc_heatmap_fg.png").is_file()
    assert _load_script().main([*map(str, args), "--chinese-styles", "watercolour"]) == 0
    assert not (out / "chinese_painting").exists() and not (out / "plots" / "srcc_heatmap_fg.png").exists()
    assert (out / "plots" / "srcc_heatmap_student.png").is_file()
    assert json.loads((out / "metrics.json").read_text())["scorers"] == ["student"]
    assert list(json.loads((out / "inputs.json").read_text())["predictions"]) == ["student"]


def test_script_ppaint_cross_from_run_dirs(ppaint, tmp_path):
    root, records = ppaint
    runs = []
    for category, preds in _ppaint_predictions(records).items():
        run = tmp_path / f"run_{category}"
        write_predictions(run / "predictions" / "student.csv", records,
                          {d: [scores[r.id] for r in records] for d, scores in preds.items()})
        runs.append(f"{category}={run}")
    out = tmp_path / "out"
    proc = _run("ppaint-cross", "--root", root, "--runs", *runs, "--bootstrap", 0, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "| landscape | 1.000 | 0.333 | 0.667 |" in proc.stdout
    for dim in ("brushwork", "composition"):
        assert all((out / f"cross_category_{dim}.{ext}").stat().st_size > 0 for ext in ("json", "md", "png"))
    assert json.loads((out / "ppaint_cross.json").read_text())["train"] == ["landscape", "figure"]
    assert not (out / "predictions").exists()  # the runs' predictions covered every image: nothing scored


@pytest.mark.parametrize("protocol", ["fg-series", "ava"])
def test_script_fg_series_and_ava(protocol, fg, ava_data, tmp_path):
    (root, records), preds = (fg, FG_PREDICTIONS) if protocol == "fg-series" else (ava_data, AVA_PREDICTIONS)
    csv_path = write_predictions(tmp_path / "m.csv", records, {"overall": [preds[r.id] for r in records]})
    data = (["--members", root / "members.csv", "--pairs", root / "pairs.csv"] if protocol == "fg-series" else
            ["--ava", root / "AVA.txt", "--images", root / "images", "--split", root / "test.jpgl"])
    proc = _run(protocol, *data, "--predictions", f"m={csv_path}", "--bootstrap", N_BOOT, "--out", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())["metrics"]["m"]["overall"]
    if protocol == "fg-series":
        assert "### s-SRCC" in proc.stdout
        assert metrics["categories"]["Natural"]["s_srcc"] == pytest.approx(0.1)
    else:
        assert "### acc@5" in proc.stdout and metrics["all"]["acc"] == pytest.approx(0.8)
    assert (tmp_path / "out" / "report.md").is_file()


def test_script_bad_input_names_the_file(tmp_path):
    missing = tmp_path / "APDDv2-missing.csv"
    proc = _run("apdd-transfer", "--csv", missing, "--predictions", f"x={tmp_path / 'x.csv'}", "--out", tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"protocol apdd-transfer: error: {missing}: file not found"


def test_script_bad_input_messages(ppaint, apdd, tmp_path, capsys):
    protocol = _load_script()
    root, records = ppaint
    sky = write_predictions(tmp_path / "sky.csv", records, {"overall": [1.0] * len(records)})
    assert protocol.main(["ppaint-cross", "--root", str(root), "--predictions", f"sky={sky}", "--out",
                          str(tmp_path / "o")]) == 2
    assert "training categories ['sky'] are not categories of the images" in capsys.readouterr().err
    _, apdd_records = apdd
    other = write_predictions(tmp_path / "other.csv", apdd_records, {"overall": [1.0] * len(apdd_records)})
    assert protocol.main(["ppaint-cross", "--root", str(root), "--predictions", f"landscape={other}", "--out",
                          str(tmp_path / "o")]) == 2
    assert f"{other}: none of its 15 image ids is one of the 15 images evaluated" in capsys.readouterr().err


# ---- the protocol on real pipeline runs ----------------------------------------------------------

@pytest.mark.slow
def test_ppaint_cross_on_two_demo_runs_agrees_with_each_runs_own_evaluation(tmp_path):
    # Two short demo pipelines, one trained on each category; the script's cross-category matrix must
    # hold, cell for cell, what each run's own evaluation stage measured per category. The second run is
    # `psdistill eval`: it must run every stage up to the evaluation, whose report is read below.
    demo = ["data.demo.series_per_category=2", "data.demo.categories=[objects,portraits]", "distill.max_steps=4",
            "distill.eval_steps=4", "distill.save_steps=4", "distill.report_to=[none]", "pool.k=4"]
    runs = {}
    for category, command in (("objects", ["demo"]), ("portraits", ["eval", "--config", DEMO_CONFIG])):
        runs[category] = tmp_path / category
        assert psdistill_main([*command, f"run_dir={runs[category]}", f"data.train_categories=[{category}]",
                               *demo]) == 0
    out = tmp_path / "cross"
    run = _run("ppaint-cross", "--manifest", runs["objects"] / "data" / "manifest.csv", "--out", out,
               "--bootstrap", 0, "--runs", *[f"{c}={r}" for c, r in runs.items()])
    assert run.returncode == 0, run.stderr
    matrix = json.loads((out / "cross_category_overall.json").read_text())
    for i, train in enumerate(matrix["train"]):
        own = json.loads((runs[train] / "report" / "metrics.json").read_text())
        per_category = own["metrics"]["student"]["overall"]["categories"]
        for j, test in enumerate(matrix["test"]):
            assert matrix["srcc"][i][j] == pytest.approx(per_category[test]["srcc"], abs=1e-9), (train, test)
