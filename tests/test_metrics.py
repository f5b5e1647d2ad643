import math
import warnings

import numpy as np
import pytest
from scipy import stats

from psdistill.evaluation import bootstrap as B
from psdistill.evaluation import metrics as M


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    gt = np.round(rng.normal(5, 2, 80), 1)  # rounding makes ties
    pred = np.round(gt + rng.normal(0, 1.5, 80), 1)
    return pred, gt


def test_correlations_match_scipy(data):
    pred, gt = data
    assert M.srcc(pred, gt) == pytest.approx(stats.spearmanr(pred, gt).statistic, abs=1e-12)
    assert M.krcc(pred, gt) == pytest.approx(stats.kendalltau(pred, gt).statistic, abs=1e-12)
    assert M.plcc(pred, gt) == pytest.approx(stats.pearsonr(pred, gt).statistic, abs=1e-12)
    assert M.rmse(pred, gt) == pytest.approx(np.sqrt(np.mean((pred - gt) ** 2)))
    assert M.mae(pred, gt) == pytest.approx(np.mean(np.abs(pred - gt)))


def test_logistic_fit_recovers_a_logistic_map():
    x = np.linspace(-50, 150, 60)  # an arbitrary scale: the fit standardizes it
    gt = M.logistic4(x, 9.0, 1.0, 40.0, 25.0)
    assert M.plcc(x, gt) < 0.99
    assert M.plcc(x, gt, fit="logistic") == pytest.approx(1.0, abs=1e-6)
    assert M.rmse(x, gt, fit="logistic") == pytest.approx(0.0, abs=1e-4)
    assert M.mae(x, gt, fit="logistic") == pytest.approx(0.0, abs=1e-4)
    # a decreasing relation is fitted too (the map absorbs the direction; SRCC keeps it)
    assert M.plcc(-x, gt, fit="logistic") == pytest.approx(1.0, abs=1e-6)
    assert M.srcc(-x, gt) == pytest.approx(-1.0)


def test_logistic_fit_on_noisy_data_beats_or_matches_linear(data):
    pred, gt = data
    assert M.plcc(pred, gt, fit="logistic") >= M.plcc(pred, gt) - 1e-3
    mapped = M.fit_logistic4(pred, gt)(pred)
    assert mapped.min() >= gt.min() - 1 and mapped.max() <= gt.max() + 1  # asymptotes near the data


def test_acc_at_5_hand_case():
    # APDDv2 labels "good" as score > 5, so 5 itself is "not good":
    # pred labels F T F T, gt labels F T T F -> agree on 2 of 4
    assert M.binary_accuracy([4, 6, 5, 7], [3, 6, 6, 4]) == 0.5
    assert M.binary_accuracy([40, 60], [45, 70], threshold=50) == 1.0


def test_nan_policy():
    pred, gt = [1.0, 2.0, np.nan, 4.0, 5.0], [1.0, 3.0, 2.0, 5.0, np.inf]
    with pytest.raises(ValueError, match="2 of 5 items have NaN or infinite values .first at index 2.*omit"):
        M.srcc(pred, gt)
    assert M.srcc(pred, gt, nan_policy="omit") == M.srcc([1, 2, 4], [1, 3, 5])
    assert math.isnan(M.plcc(pred, gt, nan_policy="propagate"))
    with pytest.raises(ValueError, match="equal length"):
        M.srcc([1, 2], [1, 2, 3])


def test_constant_input_is_nan_with_a_warning():
    with pytest.warns(M.UndefinedMetricWarning, match="srcc: all predictions are equal"):
        assert math.isnan(M.srcc([3, 3, 3], [1, 2, 3]))
    with pytest.warns(M.UndefinedMetricWarning, match="ground-truth values are equal"):
        assert math.isnan(M.plcc([1, 2, 3], [2, 2, 2], fit="logistic"))
    with pytest.warns(M.UndefinedMetricWarning, match="at least 2 items"):
        assert math.isnan(M.krcc([1], [1]))
    with pytest.warns(M.UndefinedMetricWarning, match="all predictions are equal"):
        assert math.isnan(M.series_srcc([1, 1, 1, 1], [1, 2, 1, 2], ["a", "a", "b", "b"]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert M.rmse([3, 3, 3], [1, 2, 3]) == pytest.approx(math.sqrt(5 / 3))  # still defined


# Hand-worked series example (ground truth: higher = better; a pair's first image is the earlier one).
#   A: gt [3, 2, 1], pred [.9, .5, .7]
#      top prediction .9 is the best image -> hit 1
#      ranks gt [3, 2, 1], pred [3, 1, 2]: sum d^2 = 0 + 1 + 1 = 2, rho = 1 - 6*2 / (3*(9-1)) = 0.5
#      pairs (0,1) first/first, (0,2) first/first, (1,2) true first, predicted second
#   B: gt [1, 2], pred [.2, .8]: hit 1, rho 1, pair (0,1) true second, predicted second
#   C: gt [4, 3, 2, 1], pred [.1, .4, .3, .4]
#      top predictions tie (images 1 and 3), neither is the best image 0 -> hit 0/2 = 0
#      ranks gt [4, 3, 2, 1], pred [1, 3.5, 2, 3.5]; deviations from 2.5: [1.5, .5, -.5, -1.5] and
#      [-1.5, 1, -.5, 1]: cov = -2.25 + .5 + .25 - 1.5 = -3, var 5 and 4.5 -> rho = -3 / sqrt(22.5)
#      all six pairs are "first better"; predicted first: (1,2) and half of the tie (1,3) -> 1.5 of 6
#   D: one image; E: gt tied [2, 2] -> no ranking information, left out
#   weights 3, 2, 4 (sum 9)
#   s-Acc  = (3*1 + 2*1 + 4*0) / 9 = 5/9
#   s-SRCC = (3*0.5 + 2*1 + 4*(-3/sqrt(22.5))) / 9
#   confusion (true, predicted): FF = 2 + 1.5 = 3.5, FS = 1 + 4.5 = 5.5, SF = 0, SS = 1; 10 pairs
#   pair Acc = (3.5 + 1) / 10 = 0.45
#   F1(first) = 2*3.5 / (7 + 0 + 5.5) = 0.56, F1(second) = 2*1 / (2 + 5.5 + 0) = 4/15, macro = (0.56 + 4/15) / 2
SERIES = dict(
    pred=[.9, .5, .7, .2, .8, .1, .4, .3, .4, .6, .1, .2],
    gt=[3, 2, 1, 1, 2, 4, 3, 2, 1, 5, 2, 2],
    groups=["A", "A", "A", "B", "B", "C", "C", "C", "C", "D", "E", "E"],
)


def test_series_metrics_hand_case():
    p, g, s = SERIES["pred"], SERIES["gt"], SERIES["groups"]
    assert M.series_accuracy(p, g, s) == pytest.approx(5 / 9)
    assert M.series_srcc(p, g, s) == pytest.approx((1.5 + 2 - 4 * 3 / math.sqrt(22.5)) / 9)
    assert M.pair_accuracy(p, g, s) == pytest.approx(0.45)
    assert M.pair_f1(p, g, s) == pytest.approx((0.56 + 4 / 15) / 2)
    together = M.series_metrics(p, g, s)
    assert together["series_srcc"][0] == pytest.approx(M.series_srcc(p, g, s))
    # the per-series rho above is scipy's Spearman rho
    assert stats.spearmanr([.1, .4, .3, .4], [4, 3, 2, 1]).statistic == pytest.approx(-3 / math.sqrt(22.5))


def test_series_metrics_perfect_and_reversed():
    g = [3, 2, 1, 2, 1]
    s = ["a", "a", "a", "b", "b"]
    for metric in (M.series_accuracy, M.series_srcc, M.pair_accuracy, M.pair_f1):
        assert metric(g, g, s) == pytest.approx(1.0)
    assert M.series_srcc([-v for v in g], g, s) == pytest.approx(-1.0)
    assert M.pair_accuracy([1, 1, 2, 5, 5], g, s) == pytest.approx((0 + 0.5 + 0 + 0.5) / 4)  # ties count half
    with pytest.raises(ValueError, match="needs `groups`"):
        M.series_srcc(g, g, None)


def test_bootstrap_is_seeded_and_matches_the_plain_loop(data):
    pred, gt = data
    a = B.bootstrap_samples(M.srcc, pred, gt, n_resamples=300, seed=3)
    assert np.array_equal(a, B.bootstrap_samples(M.srcc, pred, gt, n_resamples=300, seed=3))
    assert not np.array_equal(a, B.bootstrap_samples(M.srcc, pred, gt, n_resamples=300, seed=4))
    # the vectorized SRCC/PLCC equal the metric on the same resamples
    idx = np.random.default_rng(3).integers(0, len(pred), size=(300, len(pred)))
    assert np.allclose(a, [M.srcc(pred[i], gt[i]) for i in idx])
    b = B.bootstrap_samples(M.plcc, pred, gt, n_resamples=300, seed=3)
    assert np.allclose(b, [M.plcc(pred[i], gt[i]) for i in idx])
    lo, hi = B.bootstrap_ci(M.srcc, pred, gt, n_resamples=300, seed=3)
    assert lo < M.srcc(pred, gt) < hi
    assert (lo, hi) == pytest.approx(tuple(np.percentile(a, [2.5, 97.5])))
    lo, hi = B.bootstrap_ci(M.krcc, pred, gt, n_resamples=50)  # a metric without a vectorized form
    assert lo < M.krcc(pred, gt) < hi


def test_series_bootstrap_resamples_whole_series():
    rng = np.random.default_rng(1)
    groups = np.repeat([f"s{k:02d}" for k in range(30)], 4)
    gt = np.tile([4.0, 3.0, 2.0, 1.0], 30)
    pred = gt + rng.normal(0, 1.5, len(gt))
    samples = B.bootstrap_samples(M.series_srcc, pred, gt, groups, n_resamples=5, seed=7)
    # the same draws, done explicitly: repeat each drawn series, relabelled so copies stay apart
    counts = np.random.default_rng(7).multinomial(30, np.full(30, 1 / 30), size=5)
    names = np.unique(groups)
    for b in range(5):
        parts = [(pred[groups == n], gt[groups == n], f"{n}/{c}")
                 for n, k in zip(names, counts[b]) for c in range(k)]
        p = np.concatenate([x[0] for x in parts])
        g = np.concatenate([x[1] for x in parts])
        s = np.concatenate([[x[2]] * 4 for x in parts])
        assert samples[b] == pytest.approx(M.series_srcc(p, g, s))
    with pytest.raises(ValueError, match="item metric"):
        B.bootstrap_samples(M.srcc, pred, gt, groups)


def test_percentile_ci_with_undefined_resamples():
    assert all(math.isnan(v) for v in B.percentile_ci(np.array([np.nan] * 6 + [0.1, 0.2, 0.3, 0.4])))
    lo, hi = B.percentile_ci(np.array([np.nan, 0.0, 1.0, 2.0, 3.0]), confidence=0.5)
    assert (lo, hi) == (0.75, 2.25)
    assert B.bootstrap_samples(M.srcc, [1, 1, 1], [1, 2, 3]).size == 0  # undefined on the data itself


def test_logistic_fit_failure_falls_back_to_a_line(data, monkeypatch):
    pred, gt = data

    def fail(*args, **kwargs):
        raise RuntimeError("Optimal parameters not found")

    monkeypatch.setattr(M.optimize, "curve_fit", fail)
    with pytest.warns(M.UndefinedMetricWarning, match="curve_fit failed .* linear map"):
        assert M.plcc(pred, gt, fit="logistic") == pytest.approx(M.plcc(pred, gt))
