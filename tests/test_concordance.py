"""Kendall's W: a hand-worked case with ties, Friedman's test in scipy, and missing scores."""
import numpy as np
import pytest
from scipy.stats import friedmanchisquare, spearmanr

from psdistill.core.errors import DataError
from psdistill.ranking.concordance import kendall_w


def test_hand_worked_cases_with_and_without_ties():
    # 3 raters, 4 items. Rank sums 4, 5, 10, 11 about their mean 3 * 5 / 2 = 7.5: S = 37;
    # W = 12 * 37 / (9 * (64 - 4)) = 444 / 540
    c = kendall_w([[1, 2, 3, 4], [10, 20, 30, 40], [2, 1, 4, 3]])
    assert c.w == pytest.approx(444 / 540)
    assert (c.n_raters, c.n_items, c.n_dropped_items) == (3, 4, 0)
    assert c.chi2 == pytest.approx(3 * 3 * 444 / 540)
    # the third rater ties the first two items: ranks 1.5, 1.5, 3, 4; rank sums 3.5, 5.5, 9, 12, S = 42.5;
    # one tie of t = 2 gives T = 2^3 - 2 = 6: W = 12 * 42.5 / (9 * 60 - 3 * 6) = 510 / 522
    assert kendall_w([[1, 2, 3, 4], [1, 2, 3, 4], [5, 5, 7, 8]]).w == pytest.approx(510 / 522)
    assert kendall_w([[3, 1, 2], [30, 10, 20]]).w == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(3))
def test_equals_friedmans_chi_square_with_ties(seed):
    # Friedman: items are the treatments, raters the blocks; scipy corrects for ties too, so W = chi2 / (m (n - 1))
    rng = np.random.default_rng(seed)
    m, n = 5, 8
    scores = rng.integers(1, 6, size=(m, n)) + np.arange(n) * 0.3 * seed  # Likert ties, some agreement
    c = kendall_w(scores)
    chi2, p = friedmanchisquare(*scores.T)
    assert c.w == pytest.approx(chi2 / (m * (n - 1)), rel=1e-12)
    assert c.chi2 == pytest.approx(chi2, rel=1e-12) and c.p_value == pytest.approx(p, rel=1e-9)


def test_missing_scores_leave_out_the_item_and_empty_raters():
    rng = np.random.default_rng(4)
    full = rng.normal(size=(4, 7))
    holey = np.vstack([full, np.full(7, np.nan)])  # a rater of nothing here
    holey[1, 2] = holey[3, 5] = np.nan
    c = kendall_w(holey)
    assert (c.n_raters, c.n_items, c.n_dropped_items) == (4, 5, 2)
    assert c.w == pytest.approx(kendall_w(full[:, [0, 1, 3, 4, 6]]).w)


def test_pairwise_w_is_w_on_complete_untied_data_and_uses_every_co_rated_item():
    rng = np.random.default_rng(6)
    full = rng.normal(size=(4, 9)) + np.arange(9)
    c = kendall_w(full)
    assert c.w_pairwise == pytest.approx(c.w) and c.n_rater_pairs == 6
    holey = full.copy()
    holey[0, :3] = holey[1, 3:6] = holey[2, 6:] = np.nan  # no item scored by all four
    c = kendall_w(holey)
    assert c.n_items == 0 and np.isnan(c.w)
    rhos = []
    for i in range(4):
        for j in range(i + 1, 4):
            both = ~np.isnan(holey[i]) & ~np.isnan(holey[j])
            rhos.append(spearmanr(holey[i, both], holey[j, both])[0])
    assert c.w_pairwise == pytest.approx((3 * np.mean(rhos) + 1) / 4) and c.n_rater_pairs == 6


def test_undefined_and_bad_input():
    assert np.isnan(kendall_w([[1, 2, 3]]).w)  # one rater
    assert np.isnan(kendall_w([[1, 1, 1], [2, 2, 2]]).w)  # every rater ties every item
    with pytest.raises(DataError, match="shape"):
        kendall_w([1, 2, 3])
    with pytest.raises(DataError, match="infinite"):
        kendall_w([[1, np.inf], [1, 2]])
