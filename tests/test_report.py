import json
import math
import re
import warnings

import numpy as np
import scipy.stats
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from psdistill.evaluation import metrics as M
from psdistill.evaluation.bootstrap import bootstrap_ci
from psdistill.data.predictions import read_predictions, write_predictions
from psdistill.data.records import ImageRecord
from psdistill.core.errors import DataError
from psdistill.evaluation import cross_category_matrix, evaluate, write_report
from psdistill.evaluation.report import format_number

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
    assert student["all"]["srcc_ci"] == list(bootstrap_ci(M.srcc, p, g, n_resamples=N_BOOT, seed=0))
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
    from psdistill.evaluation.headline import WIDTH, headline

    lines = headline(result, ["overall"])
    assert all(len(line) <= WIDTH for line in lines)
    student = result.metrics["student"]["overall"]
    trained = [c for c in CATS if c not in ("figure", "flower")]
    assert lines[1].split() == [trained[0], "2", "categories"]
    # The training category first (its own SRCC from scipy), then held-out, then all images with the CI.
    p, g = _arrays(records, predictions["student"]["overall"], "overall", tuple(trained))
    row = lines[2].split()
    assert row[0] == "student" and row[1] == format_number(scipy.stats.spearmanr(p, g)[0])
    assert row[3] == format_number(student["held_out"]["srcc"]) and row[5] == format_number(student["all"]["srcc"])
    assert row[-1] == "36" and lines[3].split()[0] == "teacher" and lines[3].split()[-1] == "18"
    several = headline(result, ["overall", "color"])
    assert several[:len(lines)] == lines  # the first dimension's table, then each scorer's SRCC per dimension
    assert several[len(lines) + 2].split() == ["student", (
        f"{format_number(student['categories'][trained[0]]['srcc'])}/{format_number(student['held_out']['srcc'])}"),
        f"{format_number(result.metrics['student']['color']['categories'][trained[0]]['srcc'])}/"
        f"{format_number(result.metrics['student']['color']['held_out']['srcc'])}"]
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


def test_blank_prediction_cells_are_missing_and_bad_ones_name_the_place(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("id,path,overall,creativity\na,a.png,6.5,\nb,b.png,,  \nc,c.png,7,8\n")
    assert read_predictions(path) == {"overall": {"a": 6.5, "c": 7.0}, "creativity": {"c": 8.0}}
    path.write_text("id,path,overall\na,a.png,6.5\nb,b.png,high\n")
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}, line 3: field 'overall' is not a number: 'high'$"):
        read_predictions(path)
    path.write_text("id,path,overall,mood\na,a.png,6.5\n")
    with pytest.raises(DataError, match=r", line 2: field 'mood' is missing \(the row has too few fields\)"):
        read_predictions(path)


def test_unscaled_scorers_get_no_error_metric(records, predictions):
    result = evaluate(records, predictions, dimensions=["overall"], n_bootstrap=0, acc_threshold=5.0,
                      unscaled=["student"])
    student, teacher = result.metrics["student"]["overall"]["all"], result.metrics["teacher"]["overall"]["all"]
    assert not {"rmse", "mae", "acc"} & set(student) and student["srcc"] == M.srcc(
        *_arrays(records, predictions["student"]["overall"], "overall"))
    assert {"rmse", "mae", "acc"} <= set(teacher)
    assert "student: rmse, mae, acc not computed: its predictions' scale is not the ground truth's" in \
        result.to_markdown()


def test_partial_coverage_is_flagged_in_the_report(result):
    assert result.partial_coverage() == {"teacher": [("overall", 18, 36)]}
    md = result.to_markdown()
    assert "- **partial coverage: teacher** scores 18 of 36 on overall; its cells are on those images only" in md


# ---- plots at APDDv2's 24 categories ---------------------------------------------------------------

APDD_CATEGORIES = [f"{style}*{school}*{subject}" for style in ("oil painting", "sketching")
                   for school in ("classicism", "romanticism", "symbolism")
                   for subject in ("landscapes", "portraiture", "still life")] + \
                  [f"traditional Chinese painting*{t}*{s}" for t in ("freehand", "meticulous")
                   for s in ("floral and avian", "mountains and water", "portraiture")]


@pytest.fixture(scope="module")
def apdd_like():
    """4 images in each of the 24 categories; creativity blank in the meticulous ones, as in the release."""
    rng = np.random.default_rng(5)
    recs = [ImageRecord(f"{c}-{k}", "", category=c, scores={"total": float(rng.uniform(10, 90)),
                                                           **({} if "meticulous" in c else
                                                              {"creativity": float(rng.uniform(1, 9))})})
            for c in APDD_CATEGORIES for k in range(4)]
    preds = {name: {r.id: float(rng.normal()) for r in recs} for name in ("student", "fgaesq")}
    return evaluate(recs, preds, n_bootstrap=0)


def test_categories_have_distinct_styles():
    from psdistill.evaluation.plots import category_styles

    assert len(APDD_CATEGORIES) == 24 and len(set(category_styles(24))) == 24
    assert len(set(category_styles(8))) == 8


def test_scatter_legend_is_outside_the_panels(apdd_like):
    from psdistill.evaluation import plots

    fig = plots._scatter(apdd_like, "total", apdd_like.scorers)
    FigureCanvasAgg(fig).draw()
    legend = fig.legends[0].get_window_extent()
    assert len(fig.legends[0].get_texts()) == 24
    assert not any(legend.overlaps(ax.get_window_extent()) for ax in fig.axes)


def test_blank_categories_are_marked_not_drawn_as_zero(apdd_like):
    from psdistill.evaluation import plots

    fig = plots._bars(apdd_like, "creativity", apdd_like.scorers)
    marked = [t for t in fig.axes[0].texts if t.get_text() == "n/a (blank)"]
    assert len(marked) == 3 * 2  # the 3 meticulous categories, for each scorer
    heat = plots._heatmap(apdd_like, "student", ["total", "creativity"])
    assert sum(t.get_text() == "n/a" for t in heat.axes[0].texts) == 3


def test_cjk_labels_render_with_an_installed_cjk_font():
    from psdistill.evaluation import plots

    if plots.cjk_font() is None:
        pytest.skip("no CJK font installed (Debian: fonts-noto-cjk or fonts-wqy-zenhei)")

    def draw():
        fig = Figure()
        FigureCanvasAgg(fig)
        fig.subplots().set_title("中国画*工笔*山水 −0.5")
        fig.canvas.draw()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with plots.font_context():
            draw()
        assert not [w for w in caught if "missing from font" in str(w.message)]
        draw()  # the default font alone lacks the glyphs: the check above can fail
        assert [w for w in caught if "missing from font" in str(w.message)]


def test_the_report_links_every_figure_it_wrote(written):
    report = written["markdown"]
    pngs = sorted(p.relative_to(report.parent).as_posix() for p in (report.parent / "plots").glob("*.png"))
    linked = sorted(re.findall(r"\]\((plots/[^)]+\.png)\)", report.read_text()))
    assert pngs and linked == pngs


def test_without_a_cjk_font_chinese_labels_give_one_warning_not_one_per_glyph(tmp_path, caplog, monkeypatch):
    from psdistill.evaluation import plots

    monkeypatch.setattr(plots, "cjk_font", lambda: None)  # as on a machine without one
    rng = np.random.default_rng(0)
    recs = [ImageRecord(id=f"i{k}", path=f"/x/{k}.png", category=("山水", "花鸟")[k % 2],
                        scores={"overall": float(rng.uniform(1, 10))}) for k in range(12)]
    result = evaluate(recs, {"s": {"overall": {r.id: r.scores["overall"] + float(rng.normal()) for r in recs}}},
                      n_bootstrap=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        written = plots.write_plots(result, tmp_path)
    assert written and not [w for w in caught if "missing from font" in str(w.message)]
    assert [r.getMessage() for r in caplog.records if "no CJK font" in r.getMessage()] == [
        "no CJK font installed: the plots draw the category names ['山水', '花鸟'] as boxes "
        "(Debian: apt-get install fonts-noto-cjk)"]
