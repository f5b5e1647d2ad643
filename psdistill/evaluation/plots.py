"""Report figures, drawn with matplotlib's object API (Figure + Agg canvas): no pyplot, no global backend.

    scatter_<dimension>.png           predicted vs ground truth, one panel per scorer, coloured by category
    srcc_by_category_<dimension>.png  SRCC per category (one row each), scorers side by side, CI whiskers
    srcc_heatmap_<scorer>.png         SRCC per category x dimension

Legible with APDDv2's 24 categories: the legend sits outside the panels, every category has its own
(colour, marker) pair, and a category without ground truth for a dimension (a blank attribute) is
written "n/a" instead of drawn as SRCC 0. Category names in Chinese (PPaint) need a CJK font: the
first of `CJK_FONTS` that is installed is used (Debian: fonts-noto-cjk or fonts-wqy-zenhei), else
matplotlib's default, which draws boxes for those glyphs.
"""
from __future__ import annotations

import contextlib
import logging
import math
import re
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Optional

import matplotlib
import numpy as np
from matplotlib import font_manager
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Zen Hei",
             "WenQuanYi Micro Hei", "SimHei", "Microsoft YaHei", "PingFang SC")
MARKERS = ("o", "s", "^", "D")
_FONT_LOG = logging.getLogger("matplotlib.font_manager")
# SRCC from -1 to 1, white at 0; an undefined or absent cell in grey, so that it cannot pass for a 0
SRCC_CMAP = matplotlib.colormaps["RdBu_r"].with_extremes(bad="0.85")


def safe_name(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name).strip("_") or "_"


@lru_cache(maxsize=1)
def cjk_font() -> Optional[str]:
    """The first installed font of `CJK_FONTS`, or None."""
    installed = {f.name for f in font_manager.fontManager.ttflist}
    return next((name for name in CJK_FONTS if name in installed), None)


def font_context():
    """rc settings for the figures: the default font, then the CJK one for the glyphs the default lacks
    (matplotlib falls back glyph by glyph along the family list; CJK fonts may lack e.g. the minus sign)."""
    font = cjk_font()
    stack = contextlib.ExitStack()
    if font is None:
        # matplotlib warns once per missing glyph per figure (hundreds of lines for PPaint's Chinese labels);
        # write_plots says it once instead.
        stack.enter_context(warnings.catch_warnings())
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from font", category=UserWarning)
    else:
        stack.enter_context(matplotlib.rc_context({"font.family": ["sans-serif", font]}))
        # WenQuanYi Zen Hei has weight 500 only: font_manager would log that it uses 500 for "normal", per figure
        stack.callback(_FONT_LOG.setLevel, _FONT_LOG.level)
        _FONT_LOG.setLevel(logging.ERROR)
    return stack


def category_styles(n: int) -> list[tuple[tuple, str]]:
    """n distinct (colour, marker) pairs: tab10 colours, then tab20's, each with a marker of its own
    past 10 or 20 categories, so no two categories look the same."""
    colours = matplotlib.colormaps["tab10" if n <= 10 else "tab20"].colors
    return [(colours[k % len(colours)], MARKERS[(k // len(colours)) % len(MARKERS)]) for k in range(n)]


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
    if cjk_font() is None and any(not c.isascii() for c in result.categories):
        logging.getLogger(__name__).warning(
            "no CJK font installed: the plots draw the category names %s as boxes (Debian: apt-get install "
            "fonts-noto-cjk)", [c for c in result.categories if not c.isascii()][:3])
    with font_context():
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


def _label(category: str) -> str:
    return category or "(none)"


def _scatter(result, dim: str, scorers: list[str]) -> Figure:
    many = len(result.categories) > 1
    fig = Figure(figsize=(3.6 * len(scorers) + (3.5 if many else 0), max(3.4, 0.17 * len(result.categories) + 0.8)),
                 layout="constrained")
    axes = fig.subplots(1, len(scorers), squeeze=False)[0]
    styles = category_styles(len(result.categories))
    for ax, scorer in zip(axes, scorers):
        pred, gt, cats = result.points[scorer][dim]
        cats = np.asarray(cats)
        for c, (colour, marker) in zip(result.categories, styles):
            sel = cats == c
            ax.scatter(gt[sel], pred[sel], s=9, alpha=0.7, color=colour, marker=marker, label=_label(c))
        cell = result.metrics[scorer][dim]["all"]
        value, _ = _srcc(cell)
        ax.set_title(f"{scorer}\nSRCC {value:.3f} (n={cell.get('n', len(pred))})", fontsize=9)
        ax.set_xlabel(f"ground truth ({dim})")
        ax.set_ylabel("prediction")
    if many:  # one legend for all panels, outside them: 24 entries would cover a panel
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right upper", fontsize=7, markerscale=1.5,
                   frameon=False)
    return fig


def _bars(result, dim: str, scorers: list[str]) -> Figure:
    cats = result.categories
    fig = Figure(figsize=(7.5, 0.22 * len(cats) * max(1, len(scorers)) ** 0.5 + 1.2), layout="constrained")
    ax = fig.subplots()
    height = 0.8 / len(scorers)
    y = np.arange(len(cats))
    for k, scorer in enumerate(scorers):
        cells = [result.metrics[scorer][dim].get("categories", {}).get(c, {}) for c in cats]
        values, cis = zip(*(_srcc(c) for c in cells))
        values, cis = np.array(values, dtype=float), np.array(cis, dtype=float)
        err = np.abs(np.stack([values - cis[:, 0], cis[:, 1] - values]))
        offset = y + (k - (len(scorers) - 1) / 2) * height
        bars = ax.barh(offset, np.nan_to_num(values), height, label=scorer, xerr=np.nan_to_num(err), capsize=1.5,
                       error_kw={"linewidth": 0.6})
        for pos, value, cell in zip(offset, values, cells):
            if math.isnan(value):  # no ground truth there (blank attribute) or undefined: no bar, not a zero
                ax.text(0.02, pos, "undefined" if "n_ground_truth" in cell else "n/a (blank)", va="center",
                        fontsize=6, color=bars.patches[0].get_facecolor())
    ax.set_yticks(y, [_label(c) for c in cats], fontsize=7)
    ax.invert_yaxis()  # the first category on top, as in the tables
    ax.set_xlim(-1, 1)
    ax.axvline(0, color="black", linewidth=0.5)
    ax.set_xlabel(f"SRCC ({dim})")
    fig.legend(loc="outside upper center", ncols=len(scorers), fontsize=7, frameon=False)
    return fig


def _heatmap(result, scorer: str, dims: list[str]) -> Figure:
    rows = (result.categories if len(result.categories) > 1 else []) + ["all"]
    grid = np.full((len(rows), len(dims)), np.nan)
    for j, d in enumerate(dims):
        groups = result.metrics[scorer][d]
        for i, c in enumerate(rows):
            grid[i, j] = _srcc(groups["all"] if c == "all" else groups.get("categories", {}).get(c, {}))[0]
    fig = Figure(figsize=(0.75 * len(dims) + 4.5, 0.3 * len(rows) + 1.8), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(grid, vmin=-1, vmax=1, cmap=SRCC_CMAP, aspect="auto")
    for (i, j), v in np.ndenumerate(grid):
        ax.text(j, i, "n/a" if np.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=7,
                color="0.5" if np.isnan(v) else "black")
    ax.set_yticks(range(len(rows)), [_label(c) for c in rows], fontsize=7)
    ax.set_xticks(range(len(dims)), dims, rotation=35, ha="right", fontsize=7)
    ax.set_title(f"SRCC of {scorer}", fontsize=10)
    fig.colorbar(image, ax=ax, shrink=0.6)
    return fig
