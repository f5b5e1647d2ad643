"""`psdistill fuse` on a simulated PPaint-sized panel: time, memory, and how close each ground truth gets.

    python eval/bench_fuse.py              # ~1 min on 2 CPU cores; writes eval/results/fuse_ppaint_sim.md

The panel has PPaint's shape (docs/method.md sec. 1): 3 categories of 50 images, 5 experts per
category, 5 dimensions, 612 locally dense pairs per expert and dimension (45,900 judgments). Per
category and dimension the images have a true quality q ~ N(0, 1); an expert prefers by Thurstone
on 1.5 q and rates round(5.5 + 1.5 q + their bias + noise) on 1-10 (bias ~ N(0, 0.5^2), noise sd
`--rating-sd`), each image with probability `--coverage` (missing ratings). The CSVs are written,
then read and fused as the command does (`load_expert_files`, `fuse_ground_truth`). Per coverage:
seconds (best of `--repeats`), peak RSS, and means over the 15 groups of the SRCC against q of each
construction and of the plain mean rating, the two constructions' agreement, and Kendall's W
(over the images every expert rated, and from the experts' pairwise SRCCs).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench_common import command_line, peak_rss_mb, timed, write_report  # noqa: E402

from psdistill.data.loaders.expert_files import load_expert_files  # noqa: E402
from psdistill.data.records import ImageRecord  # noqa: E402
from psdistill.evaluation.ground_truth import FuseOptions, fuse_ground_truth  # noqa: E402
from pair_designs import locally_dense_pairs, simulate_comparisons  # noqa: E402

CATEGORIES, DIMENSIONS, IMAGES, EXPERTS, PAIRS = 3, 5, 50, 5, 612


def panel(folder: Path, coverage: float, rating_sd: float, seed: int):
    """(records, ratings.csv, preferences.csv, {(category, dimension): q}) of one simulated panel."""
    rng = np.random.default_rng(seed)
    records = [ImageRecord(id=f"c{c}_{k:02d}", path=f"c{c}_{k:02d}.png", category=f"c{c}")
               for c in range(CATEGORIES) for k in range(IMAGES)]
    ratings, prefs, truth = ["expert,image_id,dimension,score"], ["expert,dimension,first_id,second_id,winner"], {}
    for c in range(CATEGORIES):
        ids = [f"c{c}_{k:02d}" for k in range(IMAGES)]
        bias = rng.normal(scale=0.5, size=EXPERTS)
        for d in range(DIMENSIONS):
            q = truth[f"c{c}", f"d{d}"] = rng.normal(size=IMAGES)
            for u in range(EXPERTS):
                score = np.clip(np.round(5.5 + 1.5 * q + bias[u] + rng.normal(scale=rating_sd, size=IMAGES)), 1, 10)
                ratings += [f"c{c}e{u},{ids[k]},d{d},{score[k]:g}" for k in range(IMAGES) if rng.random() < coverage]
                # the design's neighbours come from a noisy prior order, as a real design's would
                pairs = locally_dense_pairs(np.zeros(IMAGES, int), PAIRS, order=q + rng.normal(scale=0.5, size=IMAGES),
                                            seed=int(rng.integers(1 << 30)))
                won = simulate_comparisons(1.5 * q, pairs, "thurstone", seed=int(rng.integers(1 << 30)))
                prefs += [f"c{c}e{u},d{d},{ids[a]},{ids[b]},{'first' if w else 'second'}"
                          for (a, b), w in zip(pairs, won)]
    (folder / "ratings.csv").write_text("\n".join(ratings) + "\n", encoding="utf-8")
    (folder / "preferences.csv").write_text("\n".join(prefs) + "\n", encoding="utf-8")
    return records, folder / "ratings.csv", folder / "preferences.csv", truth


def measure(coverage: float, args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        records, ratings, prefs, truth = panel(Path(tmp), coverage, args.rating_sd, args.seed)

        def run():
            return fuse_ground_truth(load_expert_files(records, ratings, prefs), FuseOptions(alpha=args.alpha))

        cpu = time.process_time()
        fused, seconds = timed(run, args.repeats)
        cpu = (time.process_time() - cpu) / args.repeats
    rows = []
    for g in fused.groups:
        q = truth[g.category, g.dimension][[int(i.split("_")[1]) for i in g.image_ids]]
        rated = ~np.isnan(g.mean_rating)
        rows.append([spearmanr(g.anchored.scores, q)[0], spearmanr(g.unified.scores, q)[0],
                     spearmanr(g.mean_rating[rated], q[rated])[0], g.agreement.srcc, g.agreement.mad,
                     g.w_ratings.w, g.w_ratings.n_items, g.w_ratings.w_pairwise, g.w_preferences.w])
    return {"seconds": seconds, "cpu": cpu, "rss": peak_rss_mb(), "means": np.nanmean(np.array(rows, dtype=float), axis=0),
            "groups": len(fused.groups)}


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--coverage", type=float, nargs="+", default=[1.0, 0.8, 0.5],
                    help="probability that an expert rates an image")
    ap.add_argument("--rating-sd", type=float, default=1.0, help="sd of an expert's rating noise (1-10 scale)")
    ap.add_argument("--alpha", type=float, default=0.1, help="FuseOptions.alpha (0: ML, absent if an image never loses)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="eval/results/fuse_ppaint_sim.md")
    args = ap.parse_args(argv)
    load = os.getloadavg()[0]  # the machine is shared: timings under load are noisy
    lines = ["# psdistill fuse on a simulated PPaint-sized panel (eval/bench_fuse.py)", "",
             command_line("eval/bench_fuse.py", argv),
             f"- {CATEGORIES} categories x {DIMENSIONS} dimensions x {IMAGES} images, {EXPERTS} experts per category, "
             f"{PAIRS} locally dense pairs per expert and dimension ({CATEGORIES * DIMENSIONS * EXPERTS * PAIRS} "
             f"judgments); rating noise sd {args.rating_sd}, expert bias sd 0.5; alpha {args.alpha}; seed {args.seed}",
             "- seconds: reading the CSVs and fusing every group (both constructions, W, leave-one-out refits), "
             f"best of {args.repeats} (load average {load:.1f} at the start: wall time is noisy on a shared machine), "
             "and the process's CPU seconds per repeat; peak RSS of the process so far "
             "(torch is imported by the bench helpers); the rest: means over the groups", "",
             "| coverage | seconds | CPU s | peak RSS MiB | SRCC anchored | SRCC unified | SRCC mean rating | "
             "anchored vs unified SRCC | MAD | W ratings (n) | W ratings pairwise | W preferences |", "|---:|" + "---:|" * 11]
    for coverage in args.coverage:
        m = measure(coverage, args)
        a, u, mr, agree, mad, w_r, n_w, w_rp, w_p = m["means"]
        lines.append(f"| {coverage:g} | {m['seconds']:.1f} | {m['cpu']:.1f} | {m['rss']:.0f} | {a:.3f} | {u:.3f} | {mr:.3f} | "
                     f"{agree:.4f} | {mad:.3f} | {w_r:.3f} ({n_w:.0f}) | {w_rp:.3f} | {w_p:.3f} |")
    lines += ["", "Reading: both constructions order the images better than the mean rating (they add the "
              "preferences) and agree with each other to SRCC ~0.999; W of ratings counts only the images every "
              "expert rated, so it rests on fewer images as coverage falls, while the pairwise W keeps every "
              "co-rated image and stays near the complete-data value."]
    return write_report(lines, args.out)


if __name__ == "__main__":
    main()
