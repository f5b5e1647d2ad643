"""The one record type every loader produces and every stage consumes."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

# [low, high] of the scale ground truth, pseudo-scores and scorers report on, unless the data says
# otherwise (`data.rating_scale`); the one default every stage reads.
DEFAULT_RATING_SCALE = (1.0, 10.0)


@dataclass
class ImageRecord:
    """One image and what is known about it.

    `scores` maps a dimension name (e.g. "overall", "composition") to a ground-truth score on the
    data set's rating scale; it is empty for unlabeled images. `series` groups images that are
    variants of one scene (FGAesthetics series, demo degradation ladders); `rank` is the position
    inside the series when known (0 = best).
    """

    id: str
    path: str
    category: str = ""
    scores: dict[str, float] = field(default_factory=dict)
    series: str = ""
    rank: Optional[int] = None
    comment: str = ""

    def score(self, dimension: str) -> float:
        """Ground-truth score for `dimension`, NaN when absent."""
        return self.scores.get(dimension, math.nan)
