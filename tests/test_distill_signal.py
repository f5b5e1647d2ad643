"""The training signal both objectives read (psdistill/distill/signal.py)."""
import numpy as np
import pytest
from scipy.stats import norm

from psdistill.data.records import ImageRecord
from psdistill.distill.signal import COLUMNS, image_confidence, training_signal, with_images
from psdistill.core.errors import DataError


def test_image_confidence_is_the_mean_pair_weight_by_hand():
    mu, var = np.array([3.0, 5.0, 5.5]), np.array([0.5, 1.0, 0.25])
    expected = []
    for i in range(3):
        w = [abs(2 * norm.cdf((mu[i] - mu[j]) / np.sqrt(var[i] + var[j])) - 1) for j in range(3) if j != i]
        expected.append(np.mean(w))
    np.testing.assert_allclose(image_confidence(mu, var), expected, rtol=1e-12)
    assert image_confidence([1.0], [0.1]).tolist() == [0.0]


def test_chunked_confidence_equals_one_block(monkeypatch):
    rng = np.random.default_rng(0)
    mu, var = rng.normal(5, 2, 50), rng.uniform(0.1, 1, 50)
    whole = image_confidence(mu, var)
    monkeypatch.setattr("psdistill.distill.signal._CHUNK", 7)
    np.testing.assert_allclose(image_confidence(mu, var), whole, rtol=1e-12)


def _records(tmp_path, n=4):
    from PIL import Image

    recs = []
    for k in range(n):
        p = tmp_path / f"im{k}.png"
        Image.new("RGB", (8, 8), (k * 40, 0, 0)).save(p)
        recs.append(ImageRecord(id=f"im{k}", path=str(p), category="c", series="s1" if k < 2 else ""))
    return recs


def test_rows_per_image_and_dimension(tmp_path):
    recs = _records(tmp_path)
    scores = {"overall": {r.id: (float(k), 0.5) for k, r in enumerate(recs)},
              "color": {r.id: (float(-k), 0.1) for k, r in enumerate(recs)}}
    ds = training_signal(recs, scores, {"overall": "Rate it.", "color": "Rate its color."})
    assert tuple(ds.column_names) == COLUMNS and len(ds) == 8
    assert ds["dimension"] == ["overall"] * 4 + ["color"] * 4
    assert ds["prompt"][4] == "Rate its color."
    assert ds["pseudo_score"][4:] == [0.0, -1.0, -2.0, -3.0]
    assert ds["series"][:4] == ["s1", "s1", "im2", "im3"]
    np.testing.assert_allclose(ds["confidence"][:4], image_confidence(np.arange(4.0), np.full(4, 0.5)))
    assert with_images(ds)[0]["image"].size == (8, 8)


def test_missing_or_broken_pseudo_scores_are_named(tmp_path):
    recs = _records(tmp_path, 2)
    with pytest.raises(DataError, match="no pseudo-score for 'overall'.*im1"):
        training_signal(recs, {"overall": {"im0": (1.0, 0.1)}}, {"overall": "p"})
    with pytest.raises(DataError, match="'im1' is \\(nan"):
        training_signal(recs, {"overall": {"im0": (1.0, 0.1), "im1": (float("nan"), 0.1)}}, {"overall": "p"})
    with pytest.raises(DataError, match="no prompt for dimension 'color'"):
        training_signal(recs, {"color": {"im0": (1.0, 0.1)}}, {"overall": "p"})
