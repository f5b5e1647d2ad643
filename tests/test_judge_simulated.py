import numpy as np
import pytest
from scipy.special import expit, logit

from psdistill.data.records import ImageRecord
from psdistill.core.errors import ConfigError
from psdistill.judge.base import combine_orders, position_bias, prefer_both_orders
from psdistill.judge.simulated import SimulatedJudge, SimulatedJudgeConfig


def _records(n):
    return [ImageRecord(id=f"i{k}", path="unused", scores={"overall": float(k)}) for k in range(n)]


def test_combine_orders_removes_an_additive_logit_bias():
    d = np.array([-2.0, -0.3, 0.0, 1.5])
    b = 0.7
    p_ab, p_ba = expit(d + b), expit(-d + b)
    np.testing.assert_allclose(logit(combine_orders(p_ab, p_ba)), d, atol=1e-9)
    assert position_bias(p_ab, p_ba) == pytest.approx(b)


def test_simulated_judge_accuracy_bias_and_calibration():
    recs = _records(60)
    pairs = [(recs[i], recs[j]) for i in range(60) for j in range(i + 1, 60)]  # first is always worse
    cfg = SimulatedJudgeConfig(accuracy=0.8, position_bias=0.4, seed=1)
    p, p_ab, p_ba = prefer_both_orders(SimulatedJudge(cfg), pairs, "overall")
    correct = p < 0.5
    assert abs(correct.mean() - 0.8) < 0.03  # 1770 pairs: sd of the share is 0.01
    assert position_bias(p_ab, p_ba) == pytest.approx(0.4)
    # Calibrated: the debiased probability it states for the better image is its accuracy.
    np.testing.assert_allclose(np.where(correct, 1 - p, p), 0.8, atol=1e-9)


def test_simulated_judge_is_deterministic_and_order_consistent():
    recs = _records(5)
    j = SimulatedJudge(SimulatedJudgeConfig(seed=3))
    a = j.prefer([(recs[0], recs[4]), (recs[4], recs[0])], "overall")
    b = SimulatedJudge(SimulatedJudgeConfig(seed=3)).prefer([(recs[0], recs[4]), (recs[4], recs[0])], "overall")
    np.testing.assert_array_equal(a, b)
    assert "simulated" in j.judge_id and j.simulated


def test_simulated_judge_needs_ground_truth():
    recs = _records(2)
    with pytest.raises(ConfigError, match="needs ground truth 'color'"):
        SimulatedJudge().prefer([(recs[0], recs[1])], "color")
    with pytest.raises(ConfigError, match="accuracy"):
        SimulatedJudgeConfig(accuracy=1.2)
