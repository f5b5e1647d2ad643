"""The headline a run prints last: one table a person reads at 100 columns, the training category first.

    overall: SRCC (PLCC)  trained on      held-out        all images [95% CI]     pair Acc      n
                          objects         3 categories
    student               0.816 (0.801)   0.129 (0.179)   0.281 [0.124, 0.430]       0.616    160

The full figures (every metric, category and interval) are in the report's files; this is what a
run says in a glance: how well each scorer matches the ground truth on the categories it was trained
on (the teacher's own ground), on the held-out ones (transfer), and on all images. With several
dimensions a second table gives each scorer's SRCC per dimension (trained on / held-out).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from psdistill.evaluation.report import EvalResult, format_number, quiet_nanmean

WIDTH = 100
SCORER = 20  # the scorer column; longer names are cut


def _pair(cell: dict) -> str:
    """'SRCC (PLCC)' of a cell, or '-' where it has none."""
    if not cell or cell.get("srcc") is None and cell.get("plcc") is None:
        return "-"
    return f"{format_number(cell.get('srcc'))} ({format_number(cell.get('plcc'))})"


def _trained(result: EvalResult, groups: dict) -> dict:
    """The training categories' cell: the category itself, or the mean over several (each weighs the same)."""
    trained = [c for c in result.categories if c not in result.held_out]
    cells = [groups.get("categories", {}).get(c, {}) for c in trained]
    cells = [c for c in cells if c]
    if len(cells) == 1:
        return cells[0]
    return {m: float(quiet_nanmean(np.array([np.nan if c.get(m) is None else c[m] for c in cells], float), 0))
            for m in ("srcc", "plcc")} if cells else {}


def _all_images(cell: dict) -> str:
    ci = cell.get("srcc_ci")
    interval = f" [{format_number(ci[0])}, {format_number(ci[1])}]" if ci and ci[0] is not None else ""
    return format_number(cell.get("srcc")) + interval if cell else "-"


def headline(result: EvalResult, dimensions: Optional[Sequence[str]] = None) -> list[str]:
    """The lines of the table(s), each at most WIDTH characters."""
    dims = [d for d in (dimensions or result.dimensions) if d in result.dimensions]
    if not dims:
        return []
    dim = dims[0]
    trained = [c for c in result.categories if c not in result.held_out]
    label = trained[0] if len(trained) == 1 else f"{len(trained)} categories" if trained else "-"
    held = f"{len(result.held_out)} categories" if len(result.held_out) != 1 else result.held_out[0]
    lines = [f"{dim + ': SRCC (PLCC)':<{SCORER}}  {'trained on':<14}  {'held-out':<14}  {'all images [95% CI]':<22}  "
             f"{'pair Acc':>8}  {'n':>5}",
             f"{'':<{SCORER}}  {label[:14]:<14}  {held[:14]:<14}"]
    for scorer in result.scorers:
        groups = result.metrics[scorer].get(dim)
        if not groups:
            continue
        every = groups.get("all", {})
        pair = format_number(every["pair_acc"]) if every.get("pair_acc") is not None else "-"
        lines.append(f"{scorer[:SCORER]:<{SCORER}}  {_pair(_trained(result, groups)):<14}  "
                     f"{_pair(groups.get('held_out', {})):<14}  {_all_images(every):<22}  {pair:>8}  "
                     f"{every.get('n', 0):>5}")
    if len(dims) > 1:
        lines += _by_dimension(result, dims)
    return [line.rstrip() for line in lines]


def _by_dimension(result: EvalResult, dims: Sequence[str]) -> list[str]:
    """SRCC per dimension, trained on / held-out, as many dimensions a table as fit in WIDTH."""
    per_table = max(1, (WIDTH - SCORER) // 14)
    lines = []
    for start in range(0, len(dims), per_table):
        chunk = dims[start:start + per_table]
        lines += ["", f"{'SRCC trained/held-out':<{SCORER}}" + "".join(f"  {d[:12]:>12}" for d in chunk)]
        for scorer in result.scorers:
            cells = [result.metrics[scorer].get(d) for d in chunk]
            if not any(cells):
                continue
            lines.append(f"{scorer[:SCORER]:<{SCORER}}" + "".join(
                f"  {'-':>12}" if not g else
                f"  {format_number(_trained(result, g).get('srcc')) + '/' + format_number(g.get('held_out', {}).get('srcc')):>12}"
                for g in cells))
    return lines
