"""Report figures, drawn with matplotlib's object API (Figure + Agg canvas): no pyplot, no global backend.

    scatter_<dimension>.png           predicted vs ground truth, one panel per scorer, coloured by category
    srcc_by_category_<dimension>.png  SRCC per category, scorers side by side, CI whiskers
    srcc_heatmap_<scorer>.png         SRCC per dimension x category
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def safe_name(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name).strip("_") or "_"


def _has_points(result, scorer: str, dim: str) -> bool:
    return dim in result.points.get(scorer, {}) and len(result.points[scorer][dim][0]) > 0


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def _srcc(cell: dict) -> tuple[float, list]:
    value = cell.get("srcc")
    return (math.nan if value is None else value), cell.get("srcc_ci") or [math.nan, math.nan]


def write_plots(result, out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for dim in result.dimensions:
        with_points = [s for s in result.scorers if _has_points(result, s, dim)]
        if with_points:
            paths[f"scatter:{dim}"] = _save(_scatter(result, dim, with_points),
                                            out_dir / f"scatter_{safe_name(dim)}.png")
        if len(result.categories) > 1 and with_points:
            paths[f"srcc_by_category:{dim}"] = _save(_bars(result, dim, with_points),
                                                     out_dir / f"srcc_by_category_{safe_name(dim)}.png")
    for scorer in result.scorers:
        dims = [d for d in result.dimensions if _has_points(result, scorer, d)]
        if dims and (len(dims) > 1 or len(result.categories) > 1):
            paths[f"srcc_heatmap:{scorer}"] = _save(_heatmap(result, scorer, dims),
                                                    out_dir / f"srcc_heatmap_{safe_name(scorer)}.png")
    return paths


def _scatter(result, dim: str, scorers: list[str]) -> Figure:
    fig = Figure(figsize=(3.6 * len(scorers), 3.4), layout="constrained")
    axes = fig.subplots(1, len(scorers), squeeze=False)[0]
    for ax, scorer in zip(axes, scorers):
        pred, gt, cats = result.points[scorer][dim]
        cats = np.asarray(cats)
        for k, c in enumerate(result.categories):
            sel = cats == c
            if sel.any():
                ax.scatter(gt[sel], pred[sel], s=10, alpha=0.7, color=f"C{k % 10}", label=c or "(none)")
        value, _ = _srcc(result.metrics[scorer][dim]["all"])
        ax.set_title(f"{scorer}\nSRCC {value:.3f}", fontsize=9)
        ax.set_xlabel(f"ground truth ({dim})")
        ax.set_ylabel("prediction")
    if len(result.categories) > 1:
        axes[-1].legend(fontsize=7, loc="best")
    return fig


def _bars(result, dim: str, scorers: list[str]) -> Figure:
    cats = result.categories
    fig = Figure(figsize=(max(4.0, 1.2 * len(cats) * max(1, len(scorers)) / 2), 3.4))
    ax = fig.subplots()
    width = 0.8 / len(scorers)
    x = np.arange(len(cats))
    for k, scorer in enumerate(scorers):
        cells = [result.metrics[scorer][dim].get("categories", {}).get(c, {}) for c in cats]
        values, cis = zip(*(_srcc(c) for c in cells))
        values, cis = np.array(values, dtype=float), np.array(cis, dtype=float)
        err = np.abs(np.stack([values - cis[:, 0], cis[:, 1] - values]))
        ax.bar(x + (k - (len(scorers) - 1) / 2) * width, np.nan_to_num(values), width, label=scorer,
               yerr=np.nan_to_num(err), capsize=2)
    ax.set_xticks(x, [c or "(none)" for c in cats], rotation=30, ha="right")
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_ylabel(f"SRCC ({dim})")
    ax.legend(fontsize=7)
    return fig


def _heatmap(result, scorer: str, dims: list[str]) -> Figure:
    cats = result.categories if len(result.categories) > 1 else []
    columns = cats + ["all"]
    grid = np.full((len(dims), len(columns)), np.nan)
    for i, d in enumerate(dims):
        groups = result.metrics[scorer][d]
        for j, c in enumerate(columns):
            grid[i, j] = _srcc(groups["all"] if c == "all" else groups.get("categories", {}).get(c, {}))[0]
    fig = Figure(figsize=(1.1 * len(columns) + 2.5, 0.5 * len(dims) + 1.8))
    ax = fig.subplots()
    image = ax.imshow(grid, vmin=-1, vmax=1, cmap="RdBu_r", aspect="auto")
    for (i, j), v in np.ndenumerate(grid):
        ax.text(j, i, "n/a" if np.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(columns)), [c or "(none)" for c in columns], rotation=30, ha="right")
    ax.set_yticks(range(len(dims)), dims)
    ax.set_title(f"SRCC of {scorer}", fontsize=10)
    fig.colorbar(image, ax=ax)
    return fig
