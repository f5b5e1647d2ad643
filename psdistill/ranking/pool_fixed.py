"""Pool strategy "fixed" (PSDistill's pool): every item meets every reference, all in one round."""
from __future__ import annotations

import numpy as np

from psdistill.ranking.pool_fit import Placement


def next_references(state: Placement, cfg) -> tuple[np.ndarray, np.ndarray]:
    """(items, references): every pair in the first round, none after."""
    return np.nonzero(~state.used)
