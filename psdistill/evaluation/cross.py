"""PPaint's transfer protocol: train on one category, test on every category (a train x test SRCC matrix).

    m = cross_category_matrix(records, {"landscape": preds_a, "figure": preds_b, "bird-and-flower": preds_c})
    m.write("runs/cross")    # cross_category_<dim>.json / .md / .png

Each value of `predictions` holds the scores of the model trained on that category, as
{image id: score} or {dimension: {image id: score}}. Row means over all test categories are the
PSDistill paper's headline figure (mean SRCC over the 3 categories when training on one); the
diagonal is in-domain, the rest cross-category.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

import psdistill.evaluation.metrics as M
from psdistill.evaluation.bootstrap import bootstrap_ci
from psdistill.data.records import ImageRecord
from psdistill.core.errors import DataError
from psdistill.evaluation.files import write_json_markdown
from psdistill.evaluation.report import format_number, quiet_nanmean


@dataclass
class CrossCategoryMatrix:
    dimension: str
    train: list[str]
    test: list[str]
    srcc: np.ndarray  # (len(train), len(test)); NaN where undefined
    n: np.ndarray  # (len(train), len(test)) images scored
    ci: Optional[np.ndarray] = None  # (len(train), len(test), 2) when bootstrapped

    def row_means(self) -> np.ndarray:
        """Mean SRCC per training category over the test categories where it is defined (NaN: none is)."""
        return quiet_nanmean(self.srcc, axis=1)

    def _diagonal(self) -> np.ndarray:
        return np.array([[a == b for b in self.test] for a in self.train], dtype=bool)

    def in_domain(self) -> float:
        """Mean SRCC where the test category is the training category."""
        values = self.srcc[self._diagonal()]
        return float(np.nanmean(values)) if np.isfinite(values).any() else math.nan

    def cross_domain(self) -> float:
        """Mean SRCC where the test category differs from the training category."""
        values = self.srcc[~self._diagonal()]
        return float(np.nanmean(values)) if np.isfinite(values).any() else math.nan

    def to_dict(self) -> dict:
        def num(v):
            return None if not np.isfinite(v) else float(v)

        return {"dimension": self.dimension, "train": self.train, "test": self.test,
                "srcc": [[num(v) for v in row] for row in self.srcc], "n": self.n.astype(int).tolist(),
                "srcc_ci": None if self.ci is None else [[[num(v) for v in c] for c in row] for row in self.ci],
                "row_mean": [num(v) for v in self.row_means()],
                "in_domain": num(self.in_domain()), "cross_domain": num(self.cross_domain())}

    def to_markdown(self) -> str:
        lines = [f"SRCC ({self.dimension}), rows: training category, columns: test category", "",
                 "| train \\ test | " + " | ".join(self.test) + " | mean |",
                 "|---|" + "---:|" * (len(self.test) + 1)]
        for i, t in enumerate(self.train):
            cells = []
            for j in range(len(self.test)):
                v = self.srcc[i, j]
                text = format_number(v)
                if self.ci is not None and np.isfinite(self.ci[i, j]).all():
                    text += f" [{self.ci[i, j, 0]:.3f}, {self.ci[i, j, 1]:.3f}]"
                cells.append(f"**{text}**" if t == self.test[j] else text)
            mean = self.row_means()[i]
            lines.append(f"| {t} | " + " | ".join(cells) + f" | {format_number(mean)} |")
        lines += ["", f"In-domain mean (bold): {self.in_domain():.3f}; "
                      f"cross-category mean: {self.cross_domain():.3f}.", ""]
        return "\n".join(lines)

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """cross_category_<dimension>.json, .md and .png under `out_dir`."""
        from psdistill.evaluation.plots import font_context, safe_name

        stem = f"cross_category_{safe_name(self.dimension)}"
        paths = write_json_markdown(out_dir, stem, self.to_dict(), self.to_markdown())
        paths["plot"] = Path(out_dir) / f"{stem}.png"
        with font_context():
            self._plot(paths["plot"])
        return paths

    def _plot(self, path: Path) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        from psdistill.evaluation.plots import SRCC_CMAP

        fig = Figure(figsize=(1.3 * len(self.test) + 2.5, 0.6 * len(self.train) + 1.8))
        FigureCanvasAgg(fig)
        ax = fig.subplots()
        image = ax.imshow(self.srcc, vmin=-1, vmax=1, cmap=SRCC_CMAP, aspect="auto")
        for (i, j), v in np.ndenumerate(self.srcc):
            ax.text(j, i, "n/a" if np.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=9)
        ax.set_xticks(range(len(self.test)), self.test, rotation=30, ha="right")
        ax.set_yticks(range(len(self.train)), self.train)
        ax.set_xlabel("test category")
        ax.set_ylabel("training category")
        fig.colorbar(image, ax=ax)
        fig.savefig(path, dpi=100, bbox_inches="tight")


def cross_category_matrix(records: Sequence[ImageRecord], predictions: Mapping[str, Mapping],
                          dimension: str = "overall", test_categories: Optional[Sequence[str]] = None, *, n_bootstrap: int = 0,
                          confidence: float = 0.95, seed: int = 0) -> CrossCategoryMatrix:
    """SRCC of each training category's model on each test category's images with ground truth."""
    cats = sorted({r.category for r in records})
    test = list(test_categories) if test_categories is not None else cats
    missing = [c for c in test if c not in cats]
    if missing:
        raise DataError(f"test categories {missing} are not in the records (they have {cats})")
    train = list(predictions)
    srcc = np.full((len(train), len(test)), np.nan)
    n = np.zeros((len(train), len(test)), dtype=int)
    ci = np.full((len(train), len(test), 2), np.nan) if n_bootstrap else None
    for i, t in enumerate(train):
        preds = predictions[t]
        if preds and all(isinstance(v, Mapping) for v in preds.values()):
            if dimension not in preds:
                raise DataError(f"predictions of the {t!r} model have no dimension {dimension!r} "
                                f"(they have {sorted(preds)})")
            preds = preds[dimension]
        for j, c in enumerate(test):
            scored = [r for r in records if r.category == c and not math.isnan(r.score(dimension))
                      and math.isfinite(preds.get(r.id, math.nan))]
            n[i, j] = len(scored)
            p = np.array([preds[r.id] for r in scored], dtype=float)
            g = np.array([r.score(dimension) for r in scored])
            srcc[i, j] = M.srcc(p, g)
            if ci is not None:
                ci[i, j] = bootstrap_ci(M.srcc, p, g, n_resamples=n_bootstrap, confidence=confidence, seed=seed)
    return CrossCategoryMatrix(dimension, train, test, srcc, n, ci)
