"""`psdistill fuse`: expert CSVs -> both fusion constructions, read by the PPaint protocol as ground truth."""
import csv
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from _fixtures_datasets import write_images

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "eval"))  # the benchmarks' pair designs
from pair_designs import random_pairs, simulate_comparisons  # noqa: E402

from psdistill.cli import main as psdistill_main  # noqa: E402
from psdistill.data.predictions import write_predictions  # noqa: E402
from psdistill.data.loaders import load_manifest  # noqa: E402
from psdistill.evaluation.ground_truth import _majority_agreement  # noqa: E402
from psdistill.ranking import fuse_anchored, fuse_unified  # noqa: E402
from psdistill.ranking.concordance import kendall_w  # noqa: E402

CATS = ("landscape", "figure")
DIMS = ("composition", "brushwork")
N, EXPERTS, ALPHA = 10, 3, 0.1
pytestmark = pytest.mark.filterwarnings("ignore:Glyph .* missing from font")


def _panel(root: Path):
    """Per category N images with known quality, EXPERTS experts each comparing 25 random pairs
    (Thurstone) and rating about 80% of the images (5.5 + 1.5 q + noise, 1-10); image 9 is never
    rated (placed by preferences only), `<c>x` only rated (unplaced); one pair crosses categories.
    Returns the truth and, per (category, dimension), the arrays in local indices."""
    rng = np.random.default_rng(0)
    ids = {c: [f"{c[0]}{k}" for k in range(N)] for c in CATS}
    write_images(root / "images", *(f"{c}/{i}.png" for c in CATS for i in [*ids[c], f"{c[0]}x"]))
    ratings, prefs, panel = [["expert", "image_id", "dimension", "score"]], [], {}
    for c in CATS:
        for d in DIMS:
            q = rng.normal(size=N)
            r = np.clip(np.round(5.5 + 1.5 * q + rng.normal(scale=0.8, size=(EXPERTS, N))), 1, 10)
            r[rng.random((EXPERTS, N)) > 0.8] = np.nan
            r[:, 9] = np.nan
            pairs = np.vstack([random_pairs(N, 25, seed=int(rng.integers(1 << 30))) for _ in range(EXPERTS)])
            y = simulate_comparisons(q, pairs, "thurstone", seed=int(rng.integers(1 << 30)))
            who = np.repeat(np.arange(EXPERTS), 25)
            panel[c, d] = {"q": q, "r": r, "pairs": pairs, "y": y, "who": who}
            for u in range(EXPERTS):
                ratings += [[f"{c}-e{u}", ids[c][k], d, int(r[u, k])] for k in range(N) if not np.isnan(r[u, k])]
                ratings.append([f"{c}-e{u}", f"{c[0]}x", d, 5])
            prefs += [[f"{c}-e{u}", d, ids[c][a], ids[c][b], "first" if o else "second"]
                      for (a, b), o, u in zip(pairs, y, who)]
    prefs.append(["landscape-e0", "composition", "l0", "f0", "tie"])
    _write(root / "ratings.csv", ratings)
    _write(root / "pairs.csv", [["expert", "dimension", "first_id", "second_id", "winner"], *prefs])
    return ids, panel


def _write(path: Path, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)


@pytest.fixture(scope="module")
def fused(tmp_path_factory):
    root = tmp_path_factory.mktemp("experts")
    ids, panel = _panel(root)
    out = root / "out"
    assert psdistill_main(["fuse", "--ratings", str(root / "ratings.csv"), "--preferences", str(root / "pairs.csv"),
                           "--images", str(root / "images"), "-o", str(out), "--alpha", str(ALPHA)]) == 0
    with open(out / "fused_scores.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return root, ids, panel, out, rows


def _column(rows, c, d, name, ids):
    by_id = {row["image_id"]: row[name] for row in rows if row["category"] == c and row["dimension"] == d}
    return np.array([float(by_id[i] or "nan") for i in ids])  # blank: no mean rating


def test_both_constructions_equal_the_fusion_functions_and_recover_the_truth(fused):
    _, ids, panel, out, rows = fused
    for (c, d), p in panel.items():
        anchored = fuse_anchored(N, p["pairs"], p["y"], p["r"], alpha=ALPHA)
        unified = fuse_unified(N, p["pairs"], p["y"], p["r"], alpha=ALPHA)
        np.testing.assert_allclose(_column(rows, c, d, "anchored", ids[c]), anchored.scores, rtol=1e-9)
        np.testing.assert_allclose(_column(rows, c, d, "unified", ids[c]), unified.scores, atol=1e-4)
        assert spearmanr(unified.scores, p["q"])[0] > 0.8
        rated = ~np.isnan(p["r"])
        mean = np.where(rated.any(axis=0), np.nansum(p["r"], axis=0) / np.maximum(rated.sum(axis=0), 1), np.nan)
        np.testing.assert_allclose(_column(rows, c, d, "mean_rating", ids[c]), mean)
    assert {row["image_id"] for row in rows}.isdisjoint({"lx", "fx"})  # rated only: no fused score


def test_report_agreement_concordance_and_expert_quality(fused):
    _, ids, panel, out, _ = fused
    report = json.loads((out / "fuse_report.json").read_text())
    assert report["n_cross_category_preferences"] == 1
    groups = {(g["category"], g["dimension"]): g for g in report["groups"]}
    assert set(groups) == set(panel)
    for key, p in panel.items():
        g = groups[key]
        assert (g["n_images"], g["n_unplaced"], g["n_comparisons"], g["n_experts"]) == (N, 1, 75, EXPERTS)
        anchored = fuse_anchored(N, p["pairs"], p["y"], p["r"], alpha=ALPHA).scores
        unified = fuse_unified(N, p["pairs"], p["y"], p["r"], alpha=ALPHA).scores
        assert g["agreement"]["srcc"] == pytest.approx(spearmanr(anchored, unified)[0], abs=1e-6)
        # W over the images every expert rated (the unplaced image's ratings do not count: it has no score)
        complete = ~np.isnan(p["r"]).any(axis=0)
        assert g["kendall_w_ratings"]["n_items"] == complete.sum()
        assert g["kendall_w_ratings"]["w"] == pytest.approx(kendall_w(p["r"][:, complete]).w)
        assert 0 < g["kendall_w_preferences"]["w"] <= 1
        for u in range(EXPERTS):
            e = g["experts"][f"{key[0]}-e{u}"]
            others, own = p["who"] != u, ~np.isnan(p["r"][u])
            refit = fuse_anchored(N, p["pairs"][others], p["y"][others], np.delete(p["r"], u, axis=0), alpha=ALPHA)
            assert e["rating_srcc_loo"] == pytest.approx(spearmanr(p["r"][u][own], refit.scores[own])[0])
            assert e["n_ratings"] == own.sum() and e["n_comparisons"] == 25
    assert "| landscape | composition |" in (out / "fuse_report.md").read_text()


def test_majority_agreement_on_a_hand_checked_example():
    pairs = np.array([[0, 1], [1, 2],    # expert 0: 0 > 1, 1 > 2
                      [1, 0], [1, 2],    # expert 1: 0 > 1 (shown second), 1 > 2
                      [0, 1], [2, 1]])   # expert 2: a soft 0.25 for 0 over 1; 2 > 1
    y = np.array([1, 1, 0, 1, 0.25, 1])
    who = np.array([0, 0, 1, 1, 2, 2])
    share, n = _majority_agreement(pairs, y, who, 3)
    # {0,1}: the others of expert 0 give 0 over 1 with 1 and 0.25 (mean 0.625 > 0.5): agrees, 1;
    # {1,2}: the others of 0 are 1 and 0 -> tied, left out. Expert 1 likewise. Expert 2: the others
    # prefer 0 (mean 1): 0.25 agrees; they prefer 1 over 2 (mean 1): 2 > 1 agrees 0 -> (0.25 + 0) / 2
    np.testing.assert_allclose(share, [1.0, 1.0, 0.125])
    np.testing.assert_array_equal(n, [1, 1, 2])


def test_the_ppaint_protocol_reads_the_ground_truth(fused, tmp_path):
    _, ids, panel, out, rows = fused
    spec = importlib.util.spec_from_file_location("protocol_script",
                                                  Path(__file__).resolve().parents[1] / "eval" / "protocol.py")
    protocol = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(protocol)
    gt = out / "ground_truth_unified.csv"
    records = load_manifest(gt, strict=True).records
    rng = np.random.default_rng(5)
    pred = {r.id: float(rng.normal()) for r in records}
    pred_csv = write_predictions(tmp_path / "p.csv", records, {"composition": [pred[r.id] for r in records]})
    assert protocol.main(["ppaint-cross", "--manifest", str(gt), "--predictions", f"landscape={pred_csv}",
                          "--out", str(tmp_path / "cross"), "--bootstrap", "0"]) == 0
    matrix = json.loads((tmp_path / "cross" / "cross_category_composition.json").read_text())
    for j, c in enumerate(matrix["test"]):
        truth = _column(rows, c, "composition", "unified", ids[c])
        assert matrix["srcc"][0][j] == pytest.approx(spearmanr([pred[i] for i in ids[c]], truth)[0], abs=1e-9)


def _scores(path):
    with open(path, encoding="utf-8") as f:
        return {(r["category"], r["dimension"], r["image_id"]): (float(r["anchored"]), float(r["unified"]))
                for r in csv.DictReader(f)}


def test_a_folder_of_expert_files_gives_the_same_result(fused, tmp_path):
    root, _, _, out, _ = fused
    for name in ("ratings", "pairs"):
        with open(root / f"{name}.csv", encoding="utf-8") as f:
            by_expert = {}
            for row in csv.DictReader(f):
                by_expert.setdefault(row.pop("expert"), []).append(row)
        (tmp_path / name).mkdir()
        for expert, mine in by_expert.items():
            if name == "pairs":  # the other outcome form: the preferred image's id
                for row in mine:
                    winner = row.pop("winner")
                    row["preferred"] = {"first": row["first_id"], "second": row["second_id"]}.get(winner, "tie")
            _write(tmp_path / name / f"{expert}.csv", [list(mine[0]), *[list(row.values()) for row in mine]])
    assert psdistill_main(["fuse", "--ratings", str(tmp_path / "ratings"), "--preferences", str(tmp_path / "pairs"),
                           "--images", str(root / "images"), "-o", str(tmp_path / "out"), "--alpha", str(ALPHA)]) == 0
    mine, long = _scores(tmp_path / "out" / "fused_scores.csv"), _scores(out / "fused_scores.csv")
    assert mine.keys() == long.keys()
    for key, value in long.items():
        assert mine[key] == pytest.approx(value, abs=1e-4)


def test_images_from_a_manifest_and_the_moments_anchor(fused, tmp_path):
    root, ids, panel, out, _ = fused
    assert psdistill_main(["fuse", "--ratings", str(root / "ratings.csv"), "--preferences", str(root / "pairs.csv"),
                           "--manifest", str(out / "ground_truth_anchored.csv"), "-o", str(tmp_path / "out"),
                           "--alpha", str(ALPHA), "--anchor", "moments"]) == 0
    with open(tmp_path / "out" / "fused_scores.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for (c, d), p in panel.items():
        expected = fuse_anchored(N, p["pairs"], p["y"], p["r"], alpha=ALPHA, method="moments").scores
        np.testing.assert_allclose(_column(rows, c, d, "anchored", ids[c]), expected, rtol=1e-9)


BAD = [("ratings.csv", "e1,l0,composition,great\n", "line 2: field 'score' is not a number: 'great'"),
       ("ratings.csv", "e1,zz,composition,5\n", "line 2: field 'image_id': image 'zz' is not one of the 3 images"),
       ("ratings.csv", "e1,l0,composition,5\ne1,l0,composition,6\n", "line 3: 'e1' rated 'l0' on 'composition' again"),
       ("prefs.csv", "e1,composition,l0,l1,1.5\n", "line 2: field 'p_first' must be in [0, 1], got '1.5'"),
       ("prefs.csv", "e1,composition,l0,l0,1\n", "line 2: field 'second_id': 'l0' is compared with itself"),
       ("prefs.csv", "e1,,l0,l1,1\n", "line 2: field 'dimension' is empty")]


def _fuse_error(tmp_path, capsys, ratings, prefs, *extra) -> str:
    """The error line of `psdistill fuse` on three images of one category and these two files."""
    write_images(tmp_path / "images", "land/l0.png", "land/l1.png", "land/l2.png")
    (tmp_path / "ratings.csv").write_text(ratings)
    (tmp_path / "prefs.csv").write_text(prefs)
    assert psdistill_main(["fuse", "--ratings", str(tmp_path / "ratings.csv"), "--preferences",
                           str(tmp_path / "prefs.csv"), "--images", str(tmp_path / "images"), "-o",
                           str(tmp_path / "out"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    return err


@pytest.mark.parametrize("name,body,message", BAD)
def test_bad_rows_are_one_line_naming_file_line_and_field(name, body, message, tmp_path, capsys):
    files = {"ratings.csv": "expert,image_id,dimension,score\ne1,l0,composition,5\n",
             "prefs.csv": "expert,dimension,first_id,second_id,p_first\ne1,composition,l0,l1,1\n"}
    files[name] = files[name].split("\n")[0] + "\n" + body
    err = _fuse_error(tmp_path, capsys, files["ratings.csv"], files["prefs.csv"])
    assert err.startswith(f"psdistill: error: {tmp_path / name}, {message}"), err


def test_bad_headers_and_unfittable_groups_are_one_line(tmp_path, capsys):
    ratings = "expert,image_id,dimension,score\ne1,l0,composition,5\ne1,l1,composition,3\n"
    prefs = "expert,dimension,first_id,second_id,p_first\ne1,composition,l0,l1,1\n"
    err = _fuse_error(tmp_path, capsys, ratings.replace("score", "mark"), prefs)
    assert err.startswith(f"psdistill: error: {tmp_path / 'ratings.csv'}: missing column(s) ['score']"), err
    err = _fuse_error(tmp_path, capsys, ratings, prefs.replace("p_first", "winner,p_first").replace(",1\n", ",first,1\n"))
    assert "prefs.csv: need exactly one outcome column of ['winner', 'preferred', 'p_first']" in err
    assert _fuse_error(tmp_path, capsys, ratings, prefs, "--anchor", "median") == (
        "psdistill: error: anchor: use one of ['least_squares', 'moments'], got 'median'")
    # l0 never loses: no maximum-likelihood score at alpha = 0; the message names the group
    err = _fuse_error(tmp_path, capsys, ratings, prefs)
    assert err.startswith("psdistill: error: category 'land', dimension 'composition': the maximum-likelihood "
                          "estimate does not exist"), err
    assert "(e.g. items l0 never lose to" in err or "(e.g. items l1 never lose to" in err, err
    assert err.endswith("(--alpha sets alpha)"), err  # the way out, in the command's own words


def test_help_documents_the_columns(capsys):
    with pytest.raises(SystemExit) as e:
        psdistill_main(["fuse", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for words in ("expert,image_id,dimension,score", "expert,dimension,first_id,second_id", "p_first",
                  "ground_truth_unified.csv", "ppaint-cross --manifest"):
        assert words in text
