"""The PSDistill pipeline: data -> judge -> fit -> distill -> score -> evaluate, in one run directory.

    <run>/config.yaml              the resolved config
    <run>/data/manifest.csv        the images (the demo is built here when no manifest is given)
    <run>/judgments.sqlite         every judgment, keyed by judge, prompt, dimension, image hashes, order
    <run>/comparisons.csv          every judgment the reference pool asked for, in presentation order
    <run>/pseudo_scores.csv        posterior mean and variance per training image, on the rating scale
    <run>/student/                 the distilled scorer (adapter or weights + scorer_config.json)
    <run>/predictions/<scorer>.csv scores of every image by every scorer
    <run>/report/                  metrics JSON, markdown table, plots
    <run>/stages/<stage>.json      what finished, with which config (see psdistill.stages)

Training uses only the images of `data.train_categories` and no labels: ground truth is read by
the evaluation stage, and by the judge only when `judge.kind=simulated` (labelled as such).
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Literal, Optional

import numpy as np

from psdistill.config import save_config
from psdistill.data.demo import DemoConfig, build_demo
from psdistill.data.images import load_image
from psdistill.data.manifest import read_manifest, write_manifest
from psdistill.data.predictions import read_predictions, write_predictions
from psdistill.data.records import ImageRecord
from psdistill.distill import DistillConfig
from psdistill.errors import ConfigError, DataError
from psdistill.judge.simulated import SimulatedJudgeConfig
from psdistill.judge.vlm import VLMJudgeConfig
from psdistill.models.loading import ModelConfig
from psdistill.ranking import ReferencePoolConfig
from psdistill.stages import Stage, run_stages


@dataclass
class DataConfig:
    manifest: Optional[str] = field(default=None, metadata={"help": "CSV manifest; empty: build the demo"})
    demo: DemoConfig = field(default_factory=DemoConfig)
    train_categories: tuple[str, ...] = field(
        default=(), metadata={"help": "categories whose images train the student (unlabeled); empty: the first"})
    dimension: str = "overall"
    rating_scale: tuple[float, float] = (1.0, 10.0)
    on_bad_image: Literal["error", "skip"] = "error"

    def __post_init__(self):
        lo, hi = (self.rating_scale + (None, None))[:2]
        if len(self.rating_scale) != 2 or not lo < hi:
            raise ConfigError(f"data.rating_scale: need [low, high] with low < high, got {list(self.rating_scale)}")


@dataclass
class JudgeConfig:
    kind: Literal["simulated", "vlm"] = "simulated"
    simulated: SimulatedJudgeConfig = field(default_factory=SimulatedJudgeConfig)
    vlm: VLMJudgeConfig = field(default_factory=VLMJudgeConfig)
    batch_size: int = 16

    def __post_init__(self):
        if self.batch_size < 1:
            raise ConfigError(f"judge.batch_size: must be >= 1, got {self.batch_size}")


@dataclass
class PipelineConfig:
    run_dir: str = "runs/demo"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    pool: ReferencePoolConfig = field(default_factory=ReferencePoolConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    teacher_pointwise: bool = field(default=True, metadata={"help": "also score zero-shot with the base VLM"})
    compare_predictions: tuple[str, ...] = field(default=(), metadata={
        "help": "predictions CSVs of other scorers (e.g. <fgaesq run>/predictions/fgaesq.csv) to put in the "
                "same evaluation table; named by file stem"})
    validate_on_held_out: int = field(default=40, metadata={
        "help": "held-out images scored during training to log eval_srcc (monitoring only: no checkpoint "
                "is selected on it); 0: none"})

    def __post_init__(self):
        # The rating scale belongs to the data; the student's output scale follows it.
        default = DistillConfig().rating_scale
        if list(self.distill.rating_scale) not in (list(default), list(self.data.rating_scale)):
            raise ConfigError(f"distill.rating_scale: set data.rating_scale instead (got {self.distill.rating_scale}"
                              f" and data.rating_scale {list(self.data.rating_scale)})")
        self.distill.rating_scale = list(self.data.rating_scale)


class Run:
    """What the stages share: the config, the run directory and lazily loaded records."""

    def __init__(self, cfg: PipelineConfig, log=print):
        self.cfg = cfg
        self.run_dir = Path(cfg.run_dir)
        self.log = log

    def path(self, name: str) -> Path:
        return self.run_dir / name

    @cached_property
    def records(self) -> list[ImageRecord]:
        return read_manifest(self.path("data/manifest.csv"))

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


# ---- stages ---------------------------------------------------------------------------------

def stage_data(run: Run) -> dict:
    """Resolve the images: build the demo or read the user's manifest, and check every image opens."""
    cfg = run.cfg.data
    if cfg.manifest:
        records = read_manifest(cfg.manifest)
    else:
        records = read_manifest(build_demo(run.path("demo"), cfg.demo))
    bad = []
    for r in records:
        try:
            load_image(r.path)
        except DataError as e:
            bad.append(str(e))
    if bad and cfg.on_bad_image == "error":
        raise DataError(f"{len(bad)} image(s) cannot be read (set data.on_bad_image=skip to leave them out):\n  "
                        + "\n  ".join(bad[:20]))
    bad_paths = {b.split(":")[0] for b in bad}
    kept = [r for r in records if r.path not in bad_paths]
    write_manifest(kept, run.path("data/manifest.csv"))
    run.__dict__.pop("records", None)  # re-read what was just written
    cats = sorted({r.category for r in kept})
    return {"images": len(kept), "skipped": bad, "categories": cats, "train_categories": list(run.train_categories)}


def stage_judge(run: Run) -> dict:
    """Judge the training images against an Elo reference pool (both orders, cached)."""
    from psdistill.judge.cached import CachedJudge
    from psdistill.judge.store import JudgmentStore
    from psdistill.ranking import run_reference_pool

    records = run.train_records
    dim = run.cfg.data.dimension
    judge = CachedJudge(make_judge(run.cfg), JudgmentStore(run.path("judgments.sqlite")),
                        batch_size=run.cfg.judge.batch_size)

    def judge_indices(pairs: np.ndarray) -> np.ndarray:
        # In presentation order: the pool schedules both orders itself and measures the bias.
        return judge.prefer([(records[i], records[j]) for i, j in pairs], dim)

    result = run_reference_pool(len(records), judge_indices, run.cfg.pool)
    comparisons = np.asarray(result.comparisons, dtype=float)
    with open(run.path("comparisons.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["first_id", "second_id", "p_first_preferred"])
        for i, j, p in comparisons:
            w.writerow([records[int(i)].id, records[int(j)].id, repr(float(p))])
    (run.path("pool.json")).write_text(json.dumps({
        "reference_ids": [records[i].id for i in result.reference_ids],
        "mu": list(map(float, result.mu)), "var": list(map(float, result.var)),
        "ids": [r.id for r in records], "judge_id": judge.judge_id, "simulated": judge.simulated,
    }))
    return {"judge": judge.judge_id, "simulated": judge.simulated, "images": len(records),
            "references": len(result.reference_ids), "pair_judgments": int(len(comparisons)),
            "judgments_per_image": round(len(comparisons) / max(len(records), 1), 2),
            "position_bias": round(float(result.position_bias), 3),
            "computed": judge.computed, "from_store": judge.hits}


def make_judge(cfg: PipelineConfig):
    if cfg.judge.kind == "simulated":
        from psdistill.judge.simulated import SimulatedJudge

        return SimulatedJudge(cfg.judge.simulated)
    from psdistill.judge.vlm import VLMJudge
    from psdistill.models.loading import load_vlm

    model, processor = load_vlm(cfg.model)
    return VLMJudge(model, processor, cfg.judge.vlm, model_id=cfg.model.model_id)


def stage_fit(run: Run) -> dict:
    """Posterior mean/variance of every training image, mapped to the rating scale."""
    from psdistill.ranking import to_rating_scale

    pool = json.loads(run.path("pool.json").read_text())
    lo, hi = run.cfg.data.rating_scale
    score, var = to_rating_scale(np.asarray(pool["mu"]), np.asarray(pool["var"]), lo, hi)
    refs = set(pool["reference_ids"])
    with open(run.path("pseudo_scores.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "score", "variance", "is_reference"])
        for i, rid in enumerate(pool["ids"]):
            w.writerow([rid, repr(float(score[i])), repr(float(var[i])), int(rid in refs)])
    return {"images": len(pool["ids"]), "score_range": [float(score.min()), float(score.max())],
            "mean_sd": float(np.sqrt(var).mean())}


def read_pseudo_scores(path: Path) -> dict[str, tuple[float, float]]:
    with open(path, newline="") as f:
        return {row["id"]: (float(row["score"]), float(row["variance"])) for row in csv.DictReader(f)}


def stage_distill(run: Run) -> dict:
    """Train the student on the pseudo-scores (resumes from its last checkpoint)."""
    from psdistill.distill import train_student

    pseudo = read_pseudo_scores(run.path("pseudo_scores.csv"))
    train = [r for r in run.train_records if r.id in pseudo]
    held_out = [r for r in run.records if r.category not in run.train_categories]
    n_val = run.cfg.validate_on_held_out
    val = [held_out[i] for i in np.linspace(0, len(held_out) - 1, n_val).astype(int)] if n_val and held_out else None
    out = train_student(train, pseudo, run.cfg.model, run.cfg.distill, run.path("student"),
                        val_records=val, dimension=run.cfg.data.dimension)
    return {"student": str(out), "train_images": len(train), "validation_images": len(val or [])}


def stage_score(run: Run) -> dict:
    """Score every image in one pass with the student (and zero-shot with the base model)."""
    from psdistill.distill import StudentScorer

    dim = run.cfg.data.dimension
    scorers = {"student": lambda: StudentScorer.from_pretrained(run.path("student"))}
    if run.cfg.teacher_pointwise:
        scorers["teacher-pointwise"] = lambda: StudentScorer.from_model_config(run.cfg.model, run.cfg.distill, dim)
    paths = {}
    for name, make in scorers.items():
        scores = make().score([r.path for r in run.records])
        paths[name] = str(write_predictions(run.path(f"predictions/{name}.csv"), run.records, {dim: scores}))
    # The teacher's pairwise pseudo-scores exist only for the training images.
    pseudo = read_pseudo_scores(run.path("pseudo_scores.csv"))
    trained = [r for r in run.records if r.id in pseudo]
    paths["teacher-pairwise"] = str(write_predictions(
        run.path("predictions/teacher-pairwise.csv"), trained, {dim: [pseudo[r.id][0] for r in trained]}))
    return {"predictions": paths}


def stage_evaluate(run: Run) -> dict:
    """Metrics of every scorer against ground truth, overall and per category; report files."""
    from psdistill.evaluation import evaluate, write_report

    files = sorted(run.path("predictions").glob("*.csv")) + [Path(p) for p in run.cfg.compare_predictions]
    predictions = {p.stem: read_predictions(p) for p in files}
    result = evaluate(run.records, predictions, held_out=[c for c in sorted({r.category for r in run.records})
                                                        if c not in run.train_categories])
    written = write_report(result, run.path("report"))
    return {"files": {k: str(v) for k, v in written.items()}, "headline": result.headline()}


STAGES = (
    Stage("data", ("data",), stage_data, "checking images",
          input_files=lambda cfg: [cfg.data.manifest] if cfg.data.manifest else []),
    Stage("judge", ("data.dimension", "model", "judge", "pool"), stage_judge, "judging against the reference pool"),
    Stage("fit", ("data.rating_scale",), stage_fit, "fitting pseudo-scores"),
    Stage("distill", ("model", "distill"), stage_distill, "distilling the single-pass scorer", all_ranks=True),
    Stage("score", ("teacher_pointwise",), stage_score, "scoring every image in one pass"),
    Stage("evaluate", ("compare_predictions",), stage_evaluate, "evaluating against ground truth"),
)
STAGE_NAMES = tuple(s.name for s in STAGES)


def run_pipeline(cfg: PipelineConfig, stop_after: str | None = None, log=print) -> dict:
    """Run the stages (all, or up to `stop_after`); under `accelerate launch` with several processes
    the training runs data-parallel and the other stages on the main process."""
    import os

    state = None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        state = PartialState()
    run = Run(cfg, log if state is None or state.is_main_process else (lambda *a, **k: None))
    if state is None or state.is_main_process:
        run.run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run.path("config.yaml"))
    try:
        return run_stages(run, STAGES, stop_after=stop_after, log=run.log, state=state)
    finally:
        if state is not None:
            state.destroy_process_group()  # gloo may hang on exit otherwise


def print_report(cfg: PipelineConfig, results: dict, out=print) -> None:
    """A short report: what ran or was reused, and the headline figures."""
    out("")
    out(f"psdistill run: {cfg.run_dir}")
    for name, marker in results.items():
        out(f"  {name:9s} {marker['status']:7s} {marker['seconds']:7.1f} s")
    judge = results.get("judge", {}).get("summary")
    if judge:
        label = "  (SIMULATED judge: reads ground truth)" if judge["simulated"] else ""
        out(f"  judge: {judge['judge']}{label}")
        out(f"  {judge['images']} training images, {judge['references']} references, "
            f"{judge['judgments_per_image']} judgments per image, position bias {judge['position_bias']:+.2f} logit")
    evaluation = results.get("evaluate", {}).get("summary")
    if evaluation:
        for line in evaluation["headline"]:
            out("  " + line)
        out(f"  report: {evaluation['files'].get('markdown', '')}")
