import json
import math

import numpy as np
import pytest

from psdistill import metrics as M
from psdistill.data.predictions import read_predictions, write_predictions
from psdistill.data.records import ImageRecord
from psdistill.errors import DataError
from psdistill.evaluation import cross_category_matrix, evaluate, write_report

CATS = ("landscape", "figure", "flower")
N_BOOT = 200


@pytest.fixture(scope="module")
def records():
    rng = np.random.default_rng(0)
    recs = []
    for k in range(36):
        cat = CATS[k % 3]
        recs.append(ImageRecord(id=f"im{k:02d}", path=f"/x/im{k:02d}.png", category=cat,
                                scores={"overall": float(rng.uniform(1, 10)), "color": float(rng.uniform(1, 10))},
                                series=f"s{k // 6}", rank=(k // 3) % 2))  # 2 ranked images per (category, series)
    return recs


@pytest.fixture(scope="module")
def predictions(records):
    rng = np.random.default_rng(1)
    return {
        "student": {d: {r.id: r.scores[d] + float(rng.normal(0, 2)) for r in records} for d in ("overall", "color")},
        "teacher": {"overall": {r.id: r.scores["overall"] + float(rng.normal(0, 1)) for r in records[:18]}},
        "constant": {r.id: 5.0 for r in records},  # one score per image: compared with every dimension
    }


@pytest.fixture(scope="module")
def result(records, predictions):
    return evaluate(records, predictions, held_out=["figure", "flower"], n_bootstrap=N_BOOT, seed=0)


@pytest.fixture(scope="module")
def written(result, tmp_path_factory):
    return write_report(result, tmp_path_factory.mktemp("report"))  # plots are slow here: write once


def _arrays(records, preds, dim, cats=CATS):
    sel = [r for r in records if r.category in cats and r.id in preds]
    return np.array([preds[r.id] for r in sel]), np.array([r.scores[dim] for r in sel])


def test_report_files_and_side_by_side_markdown(result, written):
    paths = written
    for key in ("json", "markdown", "scatter:overall", "srcc_by_category:overall", "srcc_heatmap:student"):
        assert paths[key].is_file() and paths[key].stat().st_size > 0, key
    md = paths["markdown"].read_text()
    assert md.count("| group | images | student | teacher | constant |") >= 2 * 6  # every table, both dims
    assert "## overall" in md and "## color" in md and "### SRCC" in md and "### s-SRCC" in md
    teacher_all = result.metrics["teacher"]["overall"]["all"]
    assert f"{teacher_all['srcc']:.3f} [" in md and "(n=18)" in md  # partial coverage is flagged
    assert "constant / overall: srcc: all predictions are equal" in md


def test_json_numbers_equal_direct_metric_calls(written, records, predictions):
    data = json.loads(written["json"].read_text())
    student = data["metrics"]["student"]["overall"]
    p, g = _arrays(records, predictions["student"]["overall"], "overall")
    assert student["all"]["srcc"] == M.srcc(p, g)
    assert student["all"]["plcc"] == M.plcc(p, g)
    assert student["all"]["plcc_logistic"] == M.plcc(p, g, fit="logistic")
    assert student["all"]["krcc"] == M.krcc(p, g)
    assert student["all"]["rmse"] == M.rmse(p, g) and student["all"]["n"] == 36
    assert student["all"]["srcc_ci"] == list(M.bootstrap_ci(M.srcc, p, g, n_resamples=N_BOOT, seed=0))
    held = _arrays(records, predictions["student"]["overall"], "overall", ("figure", "flower"))
    assert student["held_out"]["srcc"] == M.srcc(*held)
    per_cat = {c: M.srcc(*_arrays(records, predictions["student"]["overall"], "overall", (c,))) for c in CATS}
    assert {c: student["categories"][c]["srcc"] for c in CATS} == per_cat
    assert student["category_mean"]["srcc"] == pytest.approx(np.mean(list(per_cat.values())))
    lo, hi = student["category_mean"]["srcc_ci"]
    assert lo < student["category_mean"]["srcc"] < hi
    # series metrics on ranks (0 = best), series keyed by (category, series)
    sp = np.array([predictions["student"]["overall"][r.id] for r in records])
    sg = -np.array([r.rank for r in records], dtype=float)
    groups = [f"{r.category}/{r.series}" for r in records]
    assert student["all"]["s_srcc"] == pytest.approx(M.series_srcc(sp, sg, groups))
    assert student["all"]["s_acc"] == pytest.approx(M.series_accuracy(sp, sg, groups))
    assert student["all"]["pair_acc"] == pytest.approx(M.pair_accuracy(sp, sg, groups))
    assert student["all"]["n_series"] == 18
    # partial coverage and a constant scorer
    teacher = data["metrics"]["teacher"]["overall"]["all"]
    assert teacher["n"] == 18 and teacher["n_ground_truth"] == 36
    assert teacher["srcc"] == M.srcc(*_arrays(records, predictions["teacher"]["overall"], "overall"))
    assert "color" not in data["metrics"]["teacher"]
    constant = data["metrics"]["constant"]["color"]["all"]
    assert constant["srcc"] is None and constant["srcc_ci"] == [None, None]
    assert constant["rmse"] == M.rmse(*_arrays(records, predictions["constant"], "color"))
    assert data["dimensions"] == ["color", "overall"] and data["held_out"] == ["figure", "flower"]


def test_headline_and_options(result, records, predictions):
    lines = result.headline("overall")
    assert lines[0].startswith("student [overall]: all (n=36) SRCC ") and "held-out (n=24)" in lines[0]
    assert lines[1].startswith("teacher [overall]: all (n=18)")
    only = evaluate(records, predictions, dimensions=["overall"], categories=["figure"], n_bootstrap=0,
                    acc_threshold=5.0)
    cell = only.metrics["student"]["overall"]["all"]
    assert "srcc_ci" not in cell and "categories" not in only.metrics["student"]["overall"]
    assert cell["acc"] == M.binary_accuracy(*_arrays(records, predictions["student"]["overall"], "overall",
                                                      ("figure",)), threshold=5.0)
    with pytest.raises(DataError, match="not in the records"):
        evaluate(records, predictions, held_out=["sculpture"])


def test_reads_the_predictions_files(records, tmp_path):
    path = write_predictions(tmp_path / "student.csv", records, {"overall": [r.scores["overall"] for r in records]})
    result = evaluate(records, {"student": read_predictions(path)}, n_bootstrap=0)
    assert result.dimensions == ["overall"]
    assert result.metrics["student"]["overall"]["all"]["srcc"] == pytest.approx(1.0)


def test_ranks_only_series_data():
    recs = [ImageRecord(id=f"{s}{k}", path="", category="Natural", series=s, rank=k) for s in "ab" for k in range(3)]
    preds = {"fgaesq": {"overall": {r.id: -float(r.rank) for r in recs}}}  # perfect, no ground-truth scores
    cell = evaluate(recs, preds, n_bootstrap=0).metrics["fgaesq"]["overall"]["all"]
    assert cell["s_srcc"] == cell["s_acc"] == cell["pair_acc"] == cell["pair_f1"] == 1.0
    assert "srcc" not in cell


def test_cross_category_matrix(records, tmp_path):
    rng = np.random.default_rng(2)
    preds = {c: {r.id: r.scores["overall"] + float(rng.normal(0, 1 + 3 * (r.category != c))) for r in records}
             for c in CATS[:2]}
    m = cross_category_matrix(records, preds, "overall", n_bootstrap=100)
    assert m.train == ["landscape", "figure"] and m.test == sorted(CATS)
    for i, t in enumerate(m.train):
        for j, c in enumerate(m.test):
            assert m.srcc[i, j] == M.srcc(*_arrays(records, preds[t], "overall", (c,)))
            assert m.n[i, j] == 12
    assert m.in_domain() == pytest.approx(np.mean([m.srcc[0, 2], m.srcc[1, 0]]))
    assert m.row_means()[0] == pytest.approx(m.srcc[0].mean())
    paths = m.write(tmp_path)
    md = paths["markdown"].read_text()
    assert "| train \\ test | figure | flower | landscape | mean |" in md and "| landscape | " in md
    assert json.loads(paths["json"].read_text())["srcc"][0][2] == m.srcc[0, 2]
    assert paths["plot"].stat().st_size > 0
    assert math.isfinite(m.cross_domain())
