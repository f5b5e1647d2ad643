"""A run's config: one typed dataclass per section, each next to the code it configures, gathered here.

Every key of a YAML `--config` or a `key=value` override is a field of `PipelineConfig` or of a
dataclass it holds; an unknown or ill-typed key is an error naming it (psdistill.core.config).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from psdistill.core.errors import ConfigError
from psdistill.data.config import DataConfig
from psdistill.distill import DistillConfig
from psdistill.judge.registry import JudgeConfig, judge_entry, judge_section
from psdistill.models.loading import ModelConfig
from psdistill.ranking import ReferencePoolConfig
from psdistill.scoring.conformal import CalibrationConfig


@dataclass
class FitConfig:
    anchor: Literal["none", "labels", "teacher"] = field(default="none", metadata={
        "help": "what fixes the pseudo-scores' scale: 'none': the pool's lowest and highest score map to "
                "data.rating_scale's ends; 'labels': the manifest's ground truth of labels_per_category "
                "training images per category (semi-supervised); 'teacher': the VLM's own zero-shot ratings of "
                "the references (no labels; the simulated judge's noisy ratings under judge.kind=simulated)"})
    labels_per_category: int = field(default=5, metadata={
        "help": "anchor=labels: how many training images per category give their rating, spread over the pool's order"})
    teacher_rates: Literal["references", "all"] = field(default="references", metadata={
        "help": "anchor=teacher: rate the pool's references (k zero-shot passes) or every training image "
                "(more anchors against the ratings' noise, one pass per image)"})
    match: Literal["least_squares", "mean_sd"] = field(default="least_squares", metadata={
        "help": "how the anchors fix the affine map: least-squares line of rating on score, or matching the "
                "anchored items' mean and sd"})

    def __post_init__(self):
        if self.labels_per_category < 2:
            raise ConfigError(f"fit.labels_per_category: need >= 2 (a line needs two points), got {self.labels_per_category}")


@dataclass
class PipelineConfig:
    run_dir: str = field(default="", metadata={
        "help": "where every output goes; empty: runs/<the manifest's folder name>, or runs/demo for the demo"})
    overwrite_run_dir: bool = field(default=False, metadata={
        "help": "let run_dir's data set or judge be replaced by this config's (as HF Trainer's overwrite_output_dir)"})
    keep_replaced: bool = field(default=True, metadata={
        "help": "keep the finished outputs a changed config replaces in <run_dir>/replaced/<time>/; false: delete"})
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    pool: ReferencePoolConfig = field(default_factory=ReferencePoolConfig)
    fit: FitConfig = field(default_factory=FitConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    teacher_pointwise: bool = field(default=True, metadata={"help": "also score zero-shot with the base VLM"})
    compare_predictions: tuple[str, ...] = field(default=(), metadata={
        "help": "predictions CSVs of other scorers (e.g. <fgaesq run>/predictions/fgaesq.csv) to put in the "
                "same evaluation table; named by file stem"})
    validation_images: int = field(default=40, metadata={
        "help": "held-out images scored during training to log eval_srcc (monitoring only: no checkpoint "
                "is selected on it), and with ground truth the calibration split of the student's intervals "
                "(calibration.target); 0: none"})
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)

    def __post_init__(self):
        dims = list(self.data.dimensions)
        judge_entry(self.judge).check_dimensions(judge_section(self.judge), dims)
        self.distill.rendered_prompts(dims)  # several dimensions need prompts that differ
        if not self.run_dir:  # a user's data set never lands in (and replaces) the demo's run
            manifest = self.data.manifest
            self.run_dir = f"runs/{_source_name(manifest)}" if manifest else "runs/demo"


def _source_name(source: str) -> str:
    """The default run directory's name for a data source: a manifest's folder, a folder's own name, a hub id's name."""
    path = Path(source)
    if path.is_file() or path.suffix.lower() in (".csv", ".jsonl", ".ndjson"):
        return path.resolve().parent.name or "data"
    return path.name or "data"
