"""What the stages of a run share: its config, its directory, the images, the processes of the launch."""
from __future__ import annotations

from functools import cached_property
from pathlib import Path

from psdistill.core.errors import ConfigError
from psdistill.data.manifest import read_manifest
from psdistill.data.records import ImageRecord
from psdistill.pipeline.config import PipelineConfig


class RunContext:
    """What the stages share: the config, the run directory, lazily loaded records, and under a
    multi-process launch the process `state` (accelerate's PartialState; None in one process)."""

    def __init__(self, cfg: PipelineConfig, log=print, state=None):
        self.cfg = cfg
        self.run_dir = Path(cfg.run_dir)
        self.log = log
        self.state = state

    @property
    def is_main(self) -> bool:
        return self.state is None or self.state.is_main_process

    def path(self, name: str) -> Path:
        return self.run_dir / name

    @cached_property
    def records(self) -> list[ImageRecord]:
        return read_manifest(self.path("data/manifest.csv"))  # written by the data stage, in UTF-8

    @cached_property
    def train_categories(self) -> tuple[str, ...]:
        cats = sorted({r.category for r in self.records})
        chosen = self.cfg.data.train_categories or cats[:1]
        unknown = [c for c in chosen if c not in cats]
        if unknown:
            raise ConfigError(f"data.train_categories: {unknown} not in the data's categories {cats}")
        return tuple(chosen)

    @property
    def train_records(self) -> list[ImageRecord]:
        return [r for r in self.records if r.category in self.train_categories]
