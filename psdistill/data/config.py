"""The data section of a run's config: which images, which dimensions, on which scale."""
from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field
from typing import Literal, Optional

from psdistill.core.errors import ConfigError
from psdistill.data.demo import DemoConfig
from psdistill.data.records import DEFAULT_RATING_SCALE

_DIMENSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


@dataclass
class DataConfig:
    manifest: Optional[str] = field(default=None, metadata={
        "help": "a CSV or JSONL manifest, a saved datasets.Dataset folder, an image folder (categories: its "
                "sub-folders) or a hub data set id (psdistill/data/sources.py); empty: build the demo"})
    encoding: Optional[str] = field(default=None, metadata={
        "help": "the manifest's text encoding (e.g. gbk); empty: UTF-8 (with or without BOM), GBK or GB18030"})
    demo: DemoConfig = field(default_factory=DemoConfig)
    train_categories: tuple[str, ...] = field(
        default=(), metadata={"help": "categories whose images train the student (unlabeled); empty: the first"})
    dimensions: tuple[str, ...] = field(default=("overall",), metadata={
        "help": "the aesthetic dimensions to judge and score (one predictions column each): names in the judge's "
                "prompt set (judge.vlm.prompt_set) or, for the simulated judge, ground-truth columns"})
    rating_scale: tuple[float, float] = field(default=DEFAULT_RATING_SCALE, metadata={
        "help": "[low, high] of the ground truth; pseudo-scores and every scorer report on it"})
    on_bad_image: Literal["error", "skip"] = field(default="error", metadata={
        "help": "an image that is missing, unreadable or of a shape the VLM rejects: stop, or leave it out "
                "(listed on the console and in the report)"})

    def __post_init__(self):
        lo, hi = (self.rating_scale + (None, None))[:2]
        if len(self.rating_scale) != 2 or not lo < hi:
            raise ConfigError(f"data.rating_scale: need [low, high] with low < high, got {list(self.rating_scale)}")
        bad = [d for d in self.dimensions if not _DIMENSION_NAME.fullmatch(d)]
        if not self.dimensions or bad or len(set(self.dimensions)) != len(self.dimensions):
            raise ConfigError(f"data.dimensions: need distinct names of letters, digits, '_' or '-' (a CSV column "
                              f"each), got {list(self.dimensions)}")
        if self.encoding:
            try:
                codecs.lookup(self.encoding)
            except LookupError:
                raise ConfigError(f"data.encoding: unknown encoding {self.encoding!r} (e.g. utf-8, gbk)") from None
