"""Judge budget: ranking accuracy and confidence calibration against judge calls per item.

    python eval/bench_judge_budget.py      # ~30 min on 2 busy cores; writes eval/results/judge_budget.{md,png}

Three parts. First, across judges: at each accuracy 0.60-0.95 and both kinds below, on N = 600
items over `--sweep-seeds` seeds, the fixed pool (k = 16), a fixed pool with k = 11 (0.7x the
calls, spread evenly), the adaptive pool (k = 16) at its default (`stop_information_gain`
0.09), with `stop_place_error` 0.5, and with that and one presentation order per item pair, and
the plugin pool (`pool_plugin`, its default budget of 0.69x the pairs), beside the bound of
eval/bench_pool_bound.py on the same instances; the targets (issue 25) are SRCC within 0.02 of the
fixed pool at <= 0.7x its calls (at graded 0.60-0.70, out of any rule's reach, within 0.01 of the
bound) and pair-confidence ECE no worse than the fixed pool's. Second, the reliability of both pools' pair confidences with the constant judge of
accuracy 0.85 (N = 600, the same seeds), and which pairs carry their error. Third, at accuracy
0.85 on N = 1000 items, every method's cost/accuracy frontier.

N items with known latent quality q ~ N(0, 1) are judged by a SIMULATED judge
(`psdistill.judge.simulated.simulated_judge`) with accuracy 0.85 (first part: each accuracy) on
random pairs and a position bias of +0.3 logits toward the first-shown item, of two kinds:

- constant: every pair ordered correctly with probability 0.85, however far apart (the
  pipeline's `SimulatedJudge`); answers are p = 0.85 or 0.15 before the bias.
- graded: Thurstone-style perception, close pairs hard and distant ones easy.

Methods, all judging every pair in both presentation orders (one judge call per order):

- random-pair BT: random pairs (a spanning cycle plus uniform pairs), debiased by the two orders,
  soft Bradley-Terry MAP with a weak N(0, 10) prior (alpha = 0.1); confidences from its Laplace covariance scaled by the
  deviance dispersion.
- online Elo: the same judgments, K = 32, averaged over 20 shuffled orders.
- fixed pool: `run_reference_pool` with strategy "fixed", every item against all k random references.
- adaptive pool: `run_reference_pool` with strategy "adaptive", k = 24 references, each item's next
  reference chosen from its posterior, stopping when the next reference adds little
  information (`stop_information_gain`) or at a cap.

SRCC to q and the expected calibration error (15 bins) of P(s_i > s_j) on 20,000 random item
pairs are averaged over seeds. "Calls to reach SRCC 0.90" interpolates each method's
cost/accuracy frontier linearly.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.special import expit, logit, xlogy  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from psdistill.judge.simulated import simulated_judge  # noqa: E402
from elo import fit_elo  # noqa: E402
from pair_designs import expected_calibration_error, random_pairs  # noqa: E402
from psdistill.ranking import (ReferencePoolConfig, fit_bradley_terry, pair_confidence,  # noqa: E402
                               run_reference_pool)

ACCURACY, BIAS, TARGET = 0.85, 0.3, 0.90
ACCURACIES, SWEEP_K, SWEEP_N = (0.60, 0.65, 0.70, 0.75, 0.80, 0.85, 0.90, 0.95), 16, 600
BOUND_K = 11  # a fixed pool at 0.7x the calls of k = 16: what 30% fewer calls cost without adaptivity
RANDOM_BUDGETS = (2, 4, 6, 8, 12, 16, 24, 32)        # calls per item
FIXED_K = (3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32)
ADAPTIVE = [(cap, gain) for cap in (2, 3, 4, 6, 8, 12, 16) for gain in (0.0, 0.05, 0.1, 0.2)]
ADAPTIVE_K = 24

SWEEP_WHY = """Reading (the adaptive pool; this paragraph's figures are from the 5-seed run, seeds 0-4, that chose
its settings, before the plugin pool): no stopping rule meets all three targets for a weak judge, and the fixed pool with
k = 11 shows why: 30% fewer calls, spread evenly, lose 0.04-0.08 SRCC below accuracy ~0.8. A
graded judge's answer carries the gap, so every reference informs about equally and adaptivity
has nothing to choose (eval/results/pool_bound.md: even an oracle's best rule at 0.7x the calls
loses 0.054, 0.045, 0.028 at graded 0.60-0.70); a weak constant judge leaves every item's place so
uncertain that distant references still inform. The default rule stops an item once the next
reference adds at most 0.09 of the Fisher information gathered: where every reference informs
about alike, after about 1 / 0.09 = 11 of the 16, 0.7x the fixed pool's calls. Where the judge is
strong the distant references carry little and items stop sooner. Strong judges (constant >= 0.85, graded >= 0.85) save 39-60% of the calls at SRCC
+0.011 to +0.018 (constant) or -0.001 to -0.010 (graded); a weak judge's items meet about 11 and
lose what 11 references lose (-0.06 to -0.02 below constant 0.75 and graded 0.80), at 0.64-0.70x
the calls (0.75x at constant 0.60). Against the previous 0.1 (0.48-0.63x the calls), SRCC is
closer to the fixed pool's at every judge below 0.80 (constant 0.70: -0.041 to -0.024, graded
0.75: -0.034 to -0.027) and ECE lower at every constant judge (0.85: 0.027 to 0.021). The 0.09 was chosen
on seeds 5-9 (stop_information_gain 0.1, 0.095, 0.09, 0.085, 0.075, 0.07, with and without a cap of
11 references: 0.08 with that cap did as well, but a cap also binds a strong judge's items when k
is small, 6 of the demo's 8, SRCC 0.897 to 0.883) and is reported here on seeds 0-4; before it
the default met all three targets at 4 of 16 judges, now at 5.
`stop_place_error = 0.5` (also keep placing until P(the item lies outside the interval between
its two nearest references) <= 0.5, a criterion on the scale the references span) never loses more than 0.01 SRCC to the fixed pool and is better calibrated than the default
(ECE <= 0.018 for constant judges >= 0.70 and graded >= 0.65; 0.023 at constant 0.65 and graded
0.60, where the fixed pool has 0.021; 0.060 at constant 0.60, fixed 0.059), at the cost of the
calls a weak judge needs: it saves them only where the judge is strong (constant 0.95, graded >=
0.85). The value 0.5 was chosen among 0.3 and 0.5 on seeds 0-2 (of the 5 here). The last table
is an artefact of these simulated judges, which give one verdict per unordered pair: the second
presentation order only cancels the bias the references already measure, so judging one order
halves the calls for nothing; a real VLM's second order is a partly fresh sample whose worth this
benchmark cannot measure.

Calibration since the pool's final step refits references and items jointly on every judgment
(`psdistill.ranking.pool`, step 4; before, the references stayed at their round-robin scores, fit
on k - 1 judgments each, and the adaptive pool kept the round robin's dispersion), measured with
the previous stopping rule (0.1) at the same calls: the default adaptive pool's ECE fell
at constant 0.60-0.75 (0.093, 0.045, 0.035, 0.032 to 0.082, 0.037, 0.023, 0.024) and 0.95 (0.020
to 0.018), stayed at 0.026-0.027 (was 0.025-0.028) at constant 0.80-0.90, and is <= 0.018 for
graded judges >= 0.65 (was <= 0.020); stop_place_error = 0.5 fell from 0.015-0.024 to
0.013-0.018 at constant >= 0.70; SRCC rose by 0.000-0.012 in every table (paired, same
instances); the fixed pool's ECE moved by -0.002 to +0.003. The ECE target is still missed by the
default at constant 0.60-0.85 and graded 0.60 (the table above): the next section shows why."""

RELIABILITY_WHY = """Reading: the adaptive pool is under-confident in every bin from 0.55 to 0.95 (frequency above
confidence by 0.02-0.08); the fixed pool is close in the bins most of its pairs fall in. By pair,
both pools make the same two errors of opposite sign: pairs with no reference between them are
ordered over-confidently, pairs 4 or more references apart under-confidently. The constant judge's
answer is a step in the score gap (right with probability 0.85 however far apart), not the
logistic curve the pool fits: two items in the same gap between references differ only by the
judge's mistakes, which the logistic model reads as a gap; items several references apart are
ordered by many verdicts, which it reads as weak evidence each. The fixed pool's confidences take
few distinct values (items with the same verdicts against all 16 references share a score), so
both kinds of pair share its bins and cancel in its ECE; the adaptive pool's confidences are
spread and do not, and its pairs 2-3 references apart are more under-confident. No single
variance scale removes an error of two signs: measured on seeds 0-4 before the joint refit
(adaptive ECE 0.032 at constant 0.75, 0.028 at 0.85), the best variance factor (0.8) gave 0.037
and 0.023; the exact 1-D posterior by quadrature instead of Laplace 0.033 and 0.027; the
dispersion pooled over every judgment 0.027 and 0.031, measured on the item judgments alone 0.027
and 0.031 (Pearson 0.028 and 0.028), by leave-one-judgment-out prediction 0.027 and 0.035; a
probit link for the items 0.034 and 0.027 (SRCC -0.004); the prior variance halved or doubled
0.038 and 0.032, 0.036 and 0.021; pair covariances through shared references (instead of
independent posteriors) 0.033 and 0.028; a guess-rate link fitted on the round robin, epsilon +
(1 - 2 epsilon) F(beta d), 0.039 and 0.020, with graded judges worse. Only a model of the judge's
answer as a step would remove it, and the Gaussian (mu, var) per item that the training pairs
read cannot carry such a posterior."""

WHY = """Why the two judges differ (mechanisms; the figures above are what was measured):

- A graded judge's answer carries the size of the gap (its logit is proportional to the gap plus
  noise), so a distant reference is almost as informative as a close one: choosing references
  adaptively has little to gain, and the fixed pool already reaches SRCC 0.91 with k = 3.
  Random-pair BT is cheapest here because each of its comparisons informs two items, while a pool
  comparison informs only the item (references are frozen).
- A constant-accuracy judge's answer is a noisy bit about which side of the reference the item
  lies on, whatever the distance, so only references near the item say much about its rank: the
  adaptive pool (a noisy binary search) needs far fewer calls than the fixed pool. Its pair
  confidences are under-confident, though (the reliability section): the logistic soft-label
  likelihood is smooth where this judge's is a step, and an adaptive pool capped at 2-8 of 24
  references puts every comparison where that misfit is largest, which the dispersion pooled over
  those judgments reads as noise (ECE 0.054-0.061 here, 0.043-0.052 when the references stayed at
  their round-robin scores and the round robin's dispersion was used). The fixed pool, which
  spreads comparisons over the range, is much better calibrated (its ECE column). Under-confidence
  only down-weights training pairs.
- With a constant-accuracy judge and few calls per item, online Elo's strongly shrunk
  win counts are as good as a weakly regularised BT fit (alpha = 0.1); BT pulls ahead as the
  data grow. With a graded judge BT wins at every budget."""


def confidences(mu, var, q, seed=0, n=20_000):
    """P(s_i > s_j) on n random item pairs, and whether i is truly better."""
    ij = np.random.default_rng(seed).integers(0, len(q), (n, 2))
    ij = ij[ij[:, 0] != ij[:, 1]]
    return pair_confidence(mu, var, ij[:, 0], ij[:, 1]), q[ij[:, 0]] > q[ij[:, 1]]


def ece(mu, var, q, seed=0):
    return expected_calibration_error(*confidences(mu, var, q, seed))


def ece_floor(mu, var, seed=0, draws=20):
    """The ECE a calibrated posterior with these (mu, var) shows: its mean over truths drawn from the
    posterior itself. The 20,000 pairs share items, so even a calibrated posterior has an ECE, larger the
    wider its variances: comparing pools by ECE alone charges the one with fewer calls for it."""
    rng = np.random.default_rng(seed)
    return float(np.mean([ece(mu, var, mu + np.sqrt(var) * rng.normal(size=len(mu)), seed) for _ in range(draws)]))


def reliability_lines(seeds, bins=10):
    """Reliability table at constant accuracy ACCURACY: per bin of confidence (folded to the predicted
    side), pairs, mean confidence and frequency correct, over every seed's pairs, for both pools."""
    folded, between = {}, {}
    for name, strategy in (("fixed pool", "fixed"), ("adaptive pool", "adaptive")):
        conf, hit, apart = [], [], []
        for q, judge, s in instances("constant", SWEEP_N, seeds):
            res = run_reference_pool(SWEEP_N, judge, ReferencePoolConfig(k=SWEEP_K, strategy=strategy, seed=s))
            c, h = confidences(res.mu, res.var, q, s)
            conf.append(np.maximum(c, 1 - c))
            hit.append(np.where(c >= 0.5, h, ~h))
            # how many references truly lie between the two items of each pair (the same pairs as confidences)
            ij = np.random.default_rng(s).integers(0, len(q), (20_000, 2))
            slot = np.searchsorted(np.sort(q[res.reference_ids]), q[ij[ij[:, 0] != ij[:, 1]]])
            apart.append(np.abs(slot[:, 0] - slot[:, 1]))
        folded[name] = np.concatenate(conf), np.concatenate(hit)
        between[name] = np.concatenate(apart)
    lines = [f"## Reliability at constant accuracy {ACCURACY}", "",
             f"N = {SWEEP_N}, k = {SWEEP_K}, the {len(seeds)} sweep seeds' pairs together: per bin of confidence "
             "(max(P, 1 - P)), the pairs in it, their mean confidence and how often the more likely order is right.", "",
             "| confidence | " + " | ".join(f"{n}: pairs | confidence | frequency" for n in folded) + " |",
             "|---|" + "---:|---:|---:|" * len(folded)]
    for b in range(bins):
        lo, hi = 0.5 + b / (2 * bins), 0.5 + (b + 1) / (2 * bins)
        cells = []
        for conf, hit in folded.values():
            m = (conf >= lo) & ((conf < hi) if b < bins - 1 else (conf <= hi))
            cells.append(f"{m.sum()} | {conf[m].mean():.3f} | {hit[m].mean():.3f}" if m.any() else "0 | | ")
        lines.append(f"| {lo:.2f}-{hi:.2f} | " + " | ".join(cells) + " |")
    groups = (("0", 0, 0), ("1", 1, 1), ("2-3", 2, 3), (">= 4", 4, SWEEP_K))
    lines += ["", "Which pairs carry the error: frequency minus confidence summed over the pairs with that many references "
              "truly between them, divided by all pairs (positive: under-confident), and their share of the pairs.", "",
              "| references between | " + " | ".join(f"{n}: share | (freq - conf) / all" for n in folded) + " |",
              "|---|" + "---:|---:|" * len(folded)]
    for label, lo, hi in groups:
        cells = []
        for name, (conf, hit) in folded.items():
            m = (between[name] >= lo) & (between[name] <= hi)
            cells.append(f"{m.mean():.3f} | {np.sum(hit[m] - conf[m]) / len(conf):+.4f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines + ["", RELIABILITY_WHY, ""]


def random_bt_and_elo(q, judge, calls_per_item, seed):
    n = len(q)
    pairs = random_pairs(n, calls_per_item * n // 2, seed=seed)  # each pair is two calls, one per order
    raw = judge(np.concatenate([pairs, pairs[:, ::-1]]))
    la, lb = logit(np.clip(raw[: len(pairs)], 1e-6, 1 - 1e-6)), logit(np.clip(raw[len(pairs):], 1e-6, 1 - 1e-6))
    y = expit((la - lb) / 2)
    # a weak N(0, 10) prior: at 2-4 calls per item the random graph is nearly a long cycle, whose
    # unregularised fit is ill-conditioned (and near-separable for the graded judge)
    fit = fit_bradley_terry(n, pairs, y, alpha=0.1)
    fitted = expit(fit.params[pairs[:, 0]] - fit.params[pairs[:, 1]])
    df = len(pairs) - (n - 1)
    deviance = 2 * np.sum(xlogy(y, y / fitted) + xlogy(1 - y, (1 - y) / (1 - fitted)))
    phi = deviance / df if df >= n // 2 else 1.0  # too few residual degrees of freedom: no dispersion
    elo = fit_elo(n, pairs, y, shuffles=20, seed=seed)
    calls = 2 * len(pairs) / n
    return ({"calls": calls, "srcc": spearmanr(fit.params, q)[0], "ece": ece(fit.params, fit.se ** 2 * phi, q, seed)},
            {"calls": calls, "srcc": spearmanr(elo, q)[0], "ece": np.nan})


def pool(q, judge, cfg):
    res = run_reference_pool(len(q), judge, cfg)
    e = ece(res.mu, res.var, q, cfg.seed)
    out = {"calls": len(res.comparisons) / len(q), "srcc": spearmanr(res.mu, q)[0], "ece": e,
           "excess": e - ece_floor(res.mu, res.var, cfg.seed)}
    if hasattr(judge, "scale"):  # a graded judge: its latent scores are known
        out["z"] = latent_z(res, judge.scale * q)
    return out


def latent_z(res, truth):
    """(truth - mu) / sd of the non-reference items, on a latent scale whose origin is the references' mean
    (the plugin pool's graded model): sd 1 if the item posteriors are calibrated."""
    others = np.setdiff1d(np.arange(len(truth)), res.reference_ids)
    return (truth[others] - truth[res.reference_ids].mean() - res.mu[others]) / np.sqrt(res.var[others])


def average(runs):
    return {key: float(np.mean([r[key] for r in runs])) for key in runs[0] if key != "z"} | {
        "srcc_sd": float(np.std([r["srcc"] for r in runs]))}


def frontier(points):
    """The cheapest configurations: sorted by calls, each more accurate than every cheaper one."""
    best, out = -np.inf, []
    for p in sorted(points, key=lambda p: p["calls"]):
        if p["srcc"] > best:
            out.append(p)
            best = p["srcc"]
    return out


def calls_to_reach(points, target=TARGET):
    front = frontier(points)
    for lo, hi in zip(front, front[1:]):
        if lo["srcc"] < target <= hi["srcc"]:
            return lo["calls"] + (target - lo["srcc"]) / (hi["srcc"] - lo["srcc"]) * (hi["calls"] - lo["calls"])
    return front[0]["calls"] if front and front[0]["srcc"] >= target else np.nan


def run(kind, n, seeds):
    results = {"random-pair BT": [], "online Elo": [], "fixed pool": [], "adaptive pool": []}
    for budget in RANDOM_BUDGETS:
        bt, elo = zip(*[random_bt_and_elo(q, judge, budget, s) for q, judge, s in instances(kind, n, seeds)])
        results["random-pair BT"].append(average(bt) | {"setting": f"{budget} calls/item"})
        results["online Elo"].append(average(elo) | {"setting": f"{budget} calls/item"})
    for k in FIXED_K:
        runs = [pool(q, judge, ReferencePoolConfig(k=k, strategy="fixed", seed=s))
                for q, judge, s in instances(kind, n, seeds)]
        results["fixed pool"].append(average(runs) | {"setting": f"k={k}"})
    for cap, gain in ADAPTIVE:
        runs = [pool(q, judge, ReferencePoolConfig(k=ADAPTIVE_K, strategy="adaptive", max_comparisons_per_item=cap,
                                                   stop_information_gain=gain, seed=s))
                for q, judge, s in instances(kind, n, seeds)]
        results["adaptive pool"].append(average(runs) | {"setting": f"k={ADAPTIVE_K}, cap={cap}, gain={gain}"})
    return results


def instances(kind, n, seeds, accuracy=ACCURACY):
    for s in seeds:
        q = np.random.default_rng(1000 + s).normal(size=n)
        yield q, simulated_judge(q, accuracy, BIAS, kind=kind, seed=s), s


VARIANTS = [  # (name, adaptive-pool settings on top of k = SWEEP_K)
    ("adaptive pool", {"strategy": "adaptive"}),
    ("adaptive pool, stop_place_error = 0.5", {"strategy": "adaptive", "stop_place_error": 0.5}),
    # these simulated judges give one verdict per unordered pair, so a second order only cancels the bias
    ("adaptive pool, stop_place_error = 0.5, one order per item pair",
     {"strategy": "adaptive", "stop_place_error": 0.5, "both_orders": False}),
    ("plugin pool", {"strategy": "plugin"}),
]
SRCC_MARGIN, BOUND_MARGIN = 0.02, 0.01  # the targets: SRCC >= fixed - 0.02, or within 0.01 of the bound


def bound_gap(kind, acc, q, judge, seed):
    """eval/bench_pool_bound.py's bound on this instance: the oracle's best 0.7x rule's SRCC minus the
    real fixed pool's (over the non-reference items), what no reference-choosing rule can beat."""
    import bench_pool_bound as pb  # it imports this module's instances: imported when first needed

    values = {key: np.array([v]) for key, v in pb.instance_row(kind, acc, q, judge, seed).items()}
    return float(pb.best(values)[1][0] - values["real fixed 16"][0])


def sweep(seeds):
    """Per judge kind and accuracy, per seed: the fixed pool (k = SWEEP_K), a fixed pool with k = BOUND_K,
    the bound's SRCC gap ("oracle") and every variant: a list of (kind, accuracy, {name: [per-seed result]})."""
    rows = []
    for kind in ("constant", "graded"):
        for acc in ACCURACIES:
            runs = {"fixed": [], "bound": [], "oracle": []} | {name: [] for name, _ in VARIANTS}
            for q, judge, s in instances(kind, SWEEP_N, seeds, acc):
                runs["oracle"].append({"srcc": bound_gap(kind, acc, q, judge, s)})
                runs["fixed"].append(pool(q, judge, ReferencePoolConfig(k=SWEEP_K, strategy="fixed", seed=s)))
                runs["bound"].append(pool(q, judge, ReferencePoolConfig(k=BOUND_K, strategy="fixed", seed=s)))
                for name, extra in VARIANTS:
                    runs[name].append(pool(q, judge, ReferencePoolConfig(k=SWEEP_K, seed=s, **extra)))
            rows.append((kind, acc, runs))
            f = runs["fixed"]
            print(f"{kind} {acc:.2f}: fixed SRCC {np.mean([r['srcc'] for r in f]):.3f}; "
                  + "; ".join(f"{name}: calls x{_ratio(runs[name], f):.2f}, SRCC {_diff(runs[name], f)[0]:+.3f}, "
                              f"ECE {np.mean([r['ece'] for r in runs[name]]):.3f}" for name, _ in VARIANTS), flush=True)
    return rows


def _ratio(runs, fixed):
    return float(np.mean([r["calls"] / f["calls"] for r, f in zip(runs, fixed)]))


def _diff(runs, fixed, key="srcc"):
    """Mean and sd over seeds of the paired difference runs - fixed (same quality, judge, references)."""
    d = [r[key] - f[key] for r, f in zip(runs, fixed)]
    return float(np.mean(d)), float(np.std(d))


def _mean_sd(runs, key):
    v = [r[key] for r in runs]
    return f"{np.mean(v):.3f} ± {np.std(v):.3f}"


def sweep_lines(rows, n_seeds):
    lines = ["## Across judges: the pools at their defaults", "",
             f"N = {SWEEP_N}, k = {SWEEP_K}, position bias +{BIAS}, {n_seeds} seeds (quality, judge noise and "
             "references redrawn): mean ± sd over seeds; SRCC differences are paired (the same instance). "
             "Targets, per judge (issue 25): calls <= 0.7x the fixed pool's; SRCC >= fixed - 0.02 (mean) at every "
             "constant judge and graded >= 0.75, and at graded 0.60-0.70, where no rule can (eval/results/pool_bound.md), "
             "within 0.01 of the bound: the oracle's best 0.7x rule (eval/bench_pool_bound.py, on the same instances; "
             "column \"bound\", its SRCC minus the fixed pool's); ECE <= the fixed pool's (means). "
             "Excess ECE: the ECE minus the ECE a calibrated posterior with the same (mu, var) shows on the same "
             "pairs (`ece_floor`: truths drawn from the pool's own posterior, 20 draws), a pool's miscalibration "
             "without the share that only its information sets; ECE FLOOR below.", "",
             f"### Fixed pool, and what 30% fewer calls spread evenly cost (k = {BOUND_K})", "",
             f"| judge | accuracy | calls/item | SRCC | ECE | k={BOUND_K}: calls ratio | k={BOUND_K}: SRCC diff |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for kind, acc, runs in rows:
        f, b = runs["fixed"], runs["bound"]
        lines.append(f"| {kind} | {acc:.2f} | {np.mean([r['calls'] for r in f]):.1f} | {_mean_sd(f, 'srcc')} | "
                     f"{_mean_sd(f, 'ece')} | {_ratio(b, f):.2f} | {_diff(b, f)[0]:+.3f} ± {_diff(b, f)[1]:.3f} |")
    for name, _ in VARIANTS:
        lines += ["", f"### {name}", "",
                  "| judge | accuracy | calls/item | calls ratio | SRCC | SRCC diff | bound | ECE | fixed ECE | "
                  "excess ECE | fixed excess | targets |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        met = 0
        for kind, acc, runs in rows:
            missed = targets_missed(kind, acc, runs, name)
            met += not missed
            a, f = runs[name], runs["fixed"]
            ratio, (diff, sd) = _ratio(a, f), _diff(a, f)
            lines.append(f"| {kind} | {acc:.2f} | {np.mean([r['calls'] for r in a]):.1f} | {ratio:.2f} | "
                         f"{_mean_sd(a, 'srcc')} | {diff:+.3f} ± {sd:.3f} | "
                         f"{np.mean([r['srcc'] for r in runs['oracle']]):+.3f} | {_mean_sd(a, 'ece')} | "
                         f"{np.mean([r['ece'] for r in f]):.3f} | {np.mean([r['excess'] for r in a]):+.4f} | "
                         f"{np.mean([r['excess'] for r in f]):+.4f} | "
                         + ("met" if not missed else "missed: " + ", ".join(missed)) + " |")
        lines += ["", f"All three targets met at {met} of {len(rows)} judges."]
    return lines + ["", plugin_reading(rows), "", SWEEP_WHY, ""]


def targets_missed(kind, acc, runs, name):
    """The targets (calls, SRCC, ECE) that variant ``name`` misses at this judge."""
    a, f = runs[name], runs["fixed"]
    diff = _diff(a, f)[0]
    if kind == "graded" and acc < 0.75:  # out of any rule's reach: the bound instead
        srcc_ok = diff >= np.mean([r["srcc"] for r in runs["oracle"]]) - BOUND_MARGIN
    else:
        srcc_ok = diff >= -SRCC_MARGIN
    ece_ok = np.mean([r["ece"] for r in a]) <= np.mean([r["ece"] for r in f])
    return [n for n, ok in (("calls", _ratio(a, f) <= 0.7), ("SRCC", srcc_ok), ("ECE", ece_ok)) if not ok]


PLUGIN_WHY = (
    "Its SRCC above the fixed pool's at constant judges >= 0.65 is the step likelihood's: the fixed "
    "pool's logistic model misfits a judge that is right with one probability however far apart the items"
    " are (eval/results/pool_bound.md: the plug-in rule on all 16 references beats the real fixed pool "
    "too). Calibration, two changes since the previous run (which missed the ECE target at 9 judges): "
    "the step model's variances are those whose pair confidences best reproduce its exact bin posterior's "
    "(`pool_plugin.summary_variances`; the bins' own variance was under-confident), and a graded judge's "
    "final scores are the Gaussian model of its logits with its noise and the items' spread fitted by EM "
    "(`pool_fit.logit_gaussian_posterior`; the logistic posterior with 0.69x the pairs was over-confident, "
    "excess ECE +0.026 against the fixed pool's +0.013 at graded 0.60). Tried on seeds 0-2 while "
    "designing them and dropped: an empirical-Bayes prior variance for the logistic posterior (EM "
    "over-shrank: under-confident at 0.60-0.65), a sandwich variance and a logistic-normal link with the "
    "true noise (both more over-confident), a uniform prior over the bins, and fitting the step model's "
    "means with its variances (ECE alike, the demo student's SRCC lower by 0.03 on seeds 0-2). A third: a "
    "graded judge's items are compared with their least used references, not their most informative ones "
    "under the logistic posterior. That choice put a weak judge's items on the same few central references "
    "and left others unmet; at graded 0.65, seeds 5, 7 and 9 then scored ECE 0.023-0.027, far above their own "
    "floors (0.011), with the items' fitted spread 35% above the truth (excess ECE over 10 seeds +0.004 at "
    "0.65 and 0.70, the fixed pool's -0.001); spread over the references, -0.000 and +0.001 at the same "
    "SRCC. Where the ECE column still puts the plugin pool above the fixed pool (graded 0.65-0.80), its excess "
    "ECE is within 0.001 of the fixed pool's and the z-scores above are 1 within 0.02: what is left is the "
    "floor (next section), the price of wider posteriors from 0.69x the pairs, which no calibration removes: "
    "a calibrated posterior with the plugin pool's variances scores about the fixed pool's ECE or more there.")

FLOOR_WHY = """Reading: the ECE of a perfectly calibrated posterior on 20,000 random pairs of N = 600 items is no 0:
the pairs share items (each item is in about 67), so one item's error moves many pairs together,
and the more so the wider the posterior. A pool with fewer calls per item has wider posteriors and a
higher floor, whatever its calibration; the excess ECE columns above subtract each run's own floor."""


def floor_lines(seeds=30, n=SWEEP_N):
    """The ECE of exactly calibrated posteriors: q ~ N(0, 1), one observation x = q + N(0, w) per
    item, posterior N(x / (1 + w), w / (1 + w)); per w, SRCC and ECE on 20,000 random pairs."""
    lines = ["## ECE floor: what a calibrated posterior scores", "",
             f"N = {n}, {seeds} seeds: q ~ N(0, 1), x = q + N(0, w), the exact posterior N(x / (1 + w), w / (1 + w)).", "",
             "| w | SRCC | ECE (mean ± sd) |", "|---:|---:|---:|"]
    for w in (0.01, 0.03, 0.1, 0.2, 0.3, 0.5, 1.0):
        srcc, e = [], []
        for s in range(seeds):
            rng = np.random.default_rng(s)
            q = rng.normal(size=n)
            x = q + np.sqrt(w) * rng.normal(size=n)
            srcc.append(spearmanr(x, q)[0])
            e.append(ece(x / (1 + w), np.full(n, w / (1 + w)), q, s))
        lines.append(f"| {w} | {np.mean(srcc):.3f} | {np.mean(e):.4f} ± {np.std(e):.4f} |")
    return lines + ["", FLOOR_WHY, ""]


def plugin_reading(rows):
    """What the plugin pool meets, from the table's figures."""
    name = "plugin pool"
    missed = {(kind, acc): targets_missed(kind, acc, runs, name) for kind, acc, runs in rows}

    def where(target):
        hits = [f"{kind} {acc:.2f}" for (kind, acc), m in missed.items() if target in m]
        return ", ".join(hits) if hits else "no judge"

    graded = [(acc, np.concatenate([r["z"] for r in runs[name]])) for kind, acc, runs in rows if kind == "graded"]
    z = ", ".join(f"{acc:.2f}: {np.std(v):.3f}" for acc, v in graded)
    return (f"Plugin pool (`pool.strategy=plugin`): all three targets met at {sum(not m for m in missed.values())} "
            f"of {len(rows)} judges. Calls missed at {where('calls')}; SRCC missed at {where('SRCC')}; ECE above the "
            f"fixed pool's at {where('ECE')}; excess ECE above the fixed pool's excess (+0.001 allowed) at "
            f"{excess_above(rows, name)}. Its graded model's items are calibrated on the judge's own latent scale "
            f"(the simulated judge's perceived gap, origin at the references' mean): sd of (truth - mu) / sd at "
            f"graded {z} (1 if calibrated). " + PLUGIN_WHY)


def excess_above(rows, name, margin=0.001):
    """The judges where variant ``name``'s mean excess ECE is above the fixed pool's by more than ``margin``."""
    hits = [f"{kind} {acc:.2f}" for kind, acc, runs in rows
            if np.mean([r["excess"] for r in runs[name]]) > np.mean([r["excess"] for r in runs["fixed"]]) + margin]
    return ", ".join(hits) if hits else "no judge"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=1000)
    ap.add_argument("--seeds", type=int, default=3, help="seeds of the cost/accuracy frontier")
    ap.add_argument("--sweep-seeds", type=int, default=10, help="seeds of the across-judges tables")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "judge_budget"))
    args = ap.parse_args(argv)
    seeds = range(args.seeds)
    t0 = time.perf_counter()
    swept = sweep(range(args.sweep_seeds))
    all_results = {}
    for kind in ("constant", "graded"):
        all_results[kind] = run(kind, args.items, seeds)
        print(f"{kind}: done in {time.perf_counter() - t0:.0f} s", flush=True)

    lines = ["# Judge budget: SRCC and calibration against judge calls per item", "",
             f"`python eval/bench_judge_budget.py`: q ~ N(0, 1), SIMULATED judges with position bias +{BIAS} "
             f"(see the script's docstring), every pair judged in both orders unless said; cost/accuracy frontier: means over {args.seeds} seeds "
             "(quality, judge noise and references redrawn). "
             "Calls per item = judged (ordered) pairs / N, reference round-robin included. "
             "ECE: expected calibration error of P(s_i > s_j) on 20,000 random item pairs. "
             f"{os.cpu_count()} cores shared with other jobs, 1-minute load average {os.getloadavg()[0]:.1f} "
             f"at the end of the run ({time.perf_counter() - t0:.0f} s).", ""]
    lines += sweep_lines(swept, args.sweep_seeds)
    lines += floor_lines()
    lines += reliability_lines(range(args.sweep_seeds))
    lines += [f"## Cost/accuracy frontier at accuracy {ACCURACY}, N = {args.items}", ""]
    summary = []
    for kind, results in all_results.items():
        reach = {m: calls_to_reach(pts) for m, pts in results.items()}
        ratio = reach["adaptive pool"] / reach["fixed pool"]
        near = min(frontier(results["adaptive pool"]), key=lambda p: (p["srcc"] < TARGET, p["calls"]))
        pairs = [(b["srcc"], e["srcc"]) for b, e in zip(results["random-pair BT"], results["online Elo"])]
        summary.append((kind, reach, ratio, near, pairs))
        lines += [f"### {kind} judge", "", "| method | setting | calls/item | SRCC | SRCC sd | ECE |",
                  "|---|---|---:|---:|---:|---:|"]
        for method, pts in results.items():
            for p in sorted(pts, key=lambda p: p["calls"]):
                lines.append(f"| {method} | {p['setting']} | {p['calls']:.1f} | {p['srcc']:.3f} | {p['srcc_sd']:.3f} | "
                             + ("n/a" if np.isnan(p["ece"]) else f"{p['ece']:.3f}") + " |")
        lines += ["", f"Calls per item to reach SRCC {TARGET:.2f} (interpolated on each method's frontier): "
                  + ", ".join(f"{m} {c:.1f}" for m, c in reach.items()) + ".", ""]

    lines += ["### Frontier targets (an earlier issue's)", "", "| judge | adaptive / fixed calls at SRCC 0.90 (target <= 0.6) | "
              "adaptive-pool ECE at its cheapest config with SRCC >= 0.90 (target <= 0.03) | "
              "fixed-pool ECE range | BT > Elo at equal calls |", "|---|---:|---:|---:|---|"]
    for kind, reach, ratio, near, pairs in summary:
        fixed_ece = [p["ece"] for p in all_results[kind]["fixed pool"]]
        wins = sum(b > e for b, e in pairs)
        lines.append(f"| {kind} | {ratio:.2f} ({reach['adaptive pool']:.1f} vs {reach['fixed pool']:.1f}) | "
                     f"{near['ece']:.3f} ({near['setting']}, SRCC {near['srcc']:.3f}) | "
                     f"{min(fixed_ece):.3f}-{max(fixed_ece):.3f} | {wins}/{len(pairs)} budgets |")
    lines += ["", "### Reading", ""]
    for kind, reach, ratio, near, pairs in summary:
        losses = [b for b, (bt, elo) in zip(RANDOM_BUDGETS, pairs) if bt <= elo]
        lines.append(f"- {kind} judge: adaptive/fixed = {ratio:.2f} "
                     + ("(target met)" if ratio <= 0.6 else f"(target 0.6 missed by {ratio - 0.6:.2f})")
                     + f"; adaptive-pool ECE {near['ece']:.3f} "
                     + ("(target met)" if near["ece"] <= 0.03 else f"(target 0.03 missed by {near['ece'] - 0.03:.3f})")
                     + "; BT beats Elo at " + ("every budget" if not losses else
                                               f"every budget but {', '.join(map(str, losses))} calls/item") + ".")
    lines += ["", WHY]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".md").write_text("\n".join(lines) + "\n")

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, (kind, results) in zip(axes, all_results.items()):
        for method, pts in results.items():
            pts = frontier(pts) if method == "adaptive pool" else sorted(pts, key=lambda p: p["calls"])
            ax.plot([p["calls"] for p in pts], [p["srcc"] for p in pts], "o-", ms=3, label=method)
        ax.axhline(TARGET, color="grey", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_xticks([2, 4, 8, 16, 32, 64], labels=["2", "4", "8", "16", "32", "64"])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(f"{kind} judge (accuracy {ACCURACY}, bias +{BIAS})")
        ax.set_xlabel("judge calls per item")
    axes[0].set_ylabel("SRCC to true quality")
    axes[0].set_ylim(0.5, 1.0)
    axes[0].legend(loc="lower right")
    fig.suptitle(f"SIMULATED judges, N = {args.items}; adaptive pool: its cost/accuracy frontier")
    fig.tight_layout()
    fig.savefig(args.out + ".png", dpi=120)
    print("\n".join(lines))
    print(f"wrote {args.out}.md and .png in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
