"""Fitting speed: Bradley-Terry on 10,000 items from 1,000,000 comparisons (target: under 10 s).

    python eval/bench_fit.py            # writes eval/results/fit_speed.md

Comparisons are uniform random pairs in random order with hard outcomes drawn from a BT model
with N(0, 1) scores. Each fit is timed end to end (input checks, connectivity, L-BFGS-B), without
standard errors (a dense 10,000 x 10,000 inverse is a separate O(n^3) cost). The machine is
shared, so every fit runs `--repeats` times and the median and the slowest are reported.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from psdistill.ranking import fit_bradley_terry, fit_thurstone, simulate_comparisons


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--comparisons", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "fit_speed.md"))
    args = ap.parse_args(argv)

    rng = np.random.default_rng(0)
    theta = rng.normal(size=args.items)
    pairs = rng.integers(0, args.items, (args.comparisons, 2))
    pairs[:, 1] = (pairs[:, 0] + 1 + rng.integers(0, args.items - 1, args.comparisons)) % args.items  # no self-pairs
    y = simulate_comparisons(theta, pairs, "bt", position_bias=0.2, seed=1)

    rows = []
    for name, fit, kwargs in [
        ("Bradley-Terry", fit_bradley_terry, {}),
        ("Bradley-Terry + position bias", fit_bradley_terry, {"position_bias": True}),
        ("Thurstone Case V", fit_thurstone, {}),
    ]:
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            res = fit(args.items, pairs, y, se=False, **kwargs)
            times.append(time.perf_counter() - t0)
        srcc = spearmanr(res.params, theta)[0]
        rows.append((name, np.median(times), max(times), res.n_iter, srcc, res.position_bias))
        print(f"{name:32s} median {np.median(times):6.2f} s  slowest {max(times):6.2f} s  "
              f"iterations {res.n_iter:3d}  SRCC to truth {srcc:.4f}  bias {res.position_bias:+.3f}", flush=True)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        "# Fitting speed",
        "",
        f"`python eval/bench_fit.py`: {args.items:,} items, {args.comparisons:,} comparisons (random pairs, hard BT "
        f"outcomes, true position bias +0.2), {args.repeats} runs each, `se=False`, default `tol=1e-6`. "
        f"Machine: {platform.machine()}, {os.cpu_count()} cores shared with other jobs (1-minute load "
        f"average {load:.1f} at the end of the run), numpy {np.__version__}.",
        "",
        "| model | median (s) | slowest (s) | L-BFGS-B iterations | SRCC to truth | fitted bias |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {n} | {m:.2f} | {s:.2f} | {it} | {r:.4f} | {b:+.3f} |" for n, m, s, it, r, b in rows]
    target = rows[0][2] < 10
    lines += ["", f"Target: Bradley-Terry under 10 s. Slowest run {rows[0][2]:.2f} s: "
              + ("met." if target else "**missed**."),
              "",
              "One evaluation of the objective and gradient is two sparse products with the signed "
              "incidence matrix (m x n) and a few vectorised passes over the m comparisons; L-BFGS-B runs "
              "on variables scaled by the square root of each parameter's comparison weight, which keeps "
              "the position-bias fit from needing several times more iterations."]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
