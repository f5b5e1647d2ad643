"""The PSDistill pipeline: data -> judge -> fit -> distill -> score -> evaluate, in one run directory.

    <run>/config.yaml              the resolved config
    <run>/data/manifest.csv        the images (the demo is built here when no manifest is given)
    <run>/judgments.sqlite         every judgment, keyed by judge, prompt, dimension, image hashes, order
    <run>/comparisons.csv          every judgment each dimension's reference pool asked for, in presentation order
    <run>/pool.json                each pool's references and posterior per training image (data/run_files.py)
    <run>/pseudo_scores.csv        posterior mean and variance per training image and dimension, on the rating scale
    <run>/student/                 the distilled scorer (adapter or weights + scorer_config.json)
    <run>/predictions/<scorer>.csv scores of every image by every scorer, one column per dimension
    <run>/report/                  metrics JSON, markdown table, plots
    <run>/stages/<stage>.json      what finished, with which config (see psdistill.pipeline.runner)
    <run>/replaced/<time>/         finished outputs a changed config replaced (keep_replaced=false: deleted)
    <run>/.lock                    held while a run is in progress (psdistill.core.run_lock)

A run directory holds one data set and one judge: a config naming others is refused
(overwrite_run_dir=true to replace them); changed later settings redo the later stages only.

Every dimension of `data.dimensions` is judged into the same store and gets a pool of its own, run
exactly as a one-dimension run would run it (the same references: `pool.seed` draws them, no prior),
so a dimension's pseudo-scores do not depend on which other dimensions share the run; one student
then scores all of them in one pass per image (psdistill/scoring/readout.py says how).

Training uses only the images of `data.train_categories` and no labels: ground truth is read by
the evaluation stage, and by the judge only when `judge.kind=simulated` (labelled as such). Without
ground truth the evaluation reports what needs none (`psdistill.evaluation.label_free`).

Under `accelerate launch` with N processes every process has a part: the judge stage splits each
round of the pool's pairs over the ranks (psdistill/judge/parallel.py; the main process runs the
pool and owns the store), the distill stage trains data-parallel, the score stage splits the images;
data, fit and evaluate run once, on the main process, while the others wait.
"""
from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np

from psdistill.core.config import save_config
from psdistill.data.config import DataConfig
from psdistill.data.demo import build_demo
from psdistill.data.images import check_processable, load_image
from psdistill.data.manifest import read_manifest, write_manifest
from psdistill.data.predictions import read_predictions, write_predictions
from psdistill.data.run_files import (
    PoolFile, read_comparisons, read_pool, read_pseudo_scores, write_comparisons, write_pool, write_pseudo_scores,
)
from psdistill.data.sources import resolve_manifest
from psdistill.data.records import ImageRecord
from psdistill.distill import DistillConfig
from psdistill.core.errors import ConfigError, DataError
from psdistill.judge.simulated import SimulatedJudgeConfig
from psdistill.judge.vlm import VLMJudgeConfig
from psdistill.models.device import place_for_inference, process_state
from psdistill.models.loading import ModelConfig
from psdistill.ranking import ReferencePoolConfig
from psdistill.core.run_lock import run_lock
from psdistill.pipeline.runner import (
    Replacing, Stage, file_digest, marker_path, pending, plan, read_marker, run_stages,
)

@dataclass
class JudgeConfig:
    kind: Literal["simulated", "vlm", "vllm"] = field(default="simulated", metadata={
        "help": "'vlm': the model of `model:` through transformers; 'vllm': the same on vLLM (large runs); "
                "'simulated': a noisy oracle reading the ground truth (demo and tests only)"})
    simulated: SimulatedJudgeConfig = field(default_factory=SimulatedJudgeConfig)
    vlm: VLMJudgeConfig = field(default_factory=VLMJudgeConfig)


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
                "is selected on it); 0: none"})

    def __post_init__(self):
        dims = list(self.data.dimensions)
        if self.judge.kind in ("vlm", "vllm"):
            from psdistill.judge.prompts import load_prompt_set

            prompts = load_prompt_set(self.judge.vlm.prompt_set)
            missing = [d for d in dims if d not in prompts.dimensions]
            if missing:
                raise ConfigError(f"data.dimensions: {missing} have no prompt in judge.vlm.prompt_set "
                                  f"{prompts.name!r} (it has {sorted(prompts.dimensions)}); add them to its YAML file")
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


# ---- stages ---------------------------------------------------------------------------------

def stage_data(run: RunContext) -> dict:
    """Resolve the images: build the demo or read the user's manifest, and check that every image opens
    and has a shape the VLM's processor takes."""
    cfg = run.cfg.data
    skip = cfg.on_bad_image == "skip"
    if cfg.manifest:
        manifest = resolve_manifest(cfg.manifest, run.path("data/source"))  # a folder or hub id: written there
        # Skipping: a missing file is one more bad image (below), not the manifest's error.
        records = read_manifest(manifest, check_files=not skip, encoding=cfg.encoding)
    else:
        records = read_manifest(build_demo(run.path("demo"), cfg.demo))
    bad, kept = [], []
    for r in records:
        try:
            check_processable(load_image(r.path), r.path)
            kept.append(r)
        except DataError as e:
            bad.append(str(e))
    if bad and not skip:
        raise DataError(f"{len(bad)} image(s) cannot be used (set data.on_bad_image=skip to leave them out):\n  "
                        + "\n  ".join(bad[:20]))
    if not kept:
        raise DataError(f"{cfg.manifest or 'the demo'}: none of its {len(records)} images can be used:\n  " + "\n  ".join(bad[:20]))
    if bad:
        run.log(f"[data] skipped {len(bad)} image(s) (data.on_bad_image=skip):\n  " + "\n  ".join(bad))
    write_manifest(kept, run.path("data/manifest.csv"))
    run.__dict__.pop("records", None)  # re-read what was just written
    cats = sorted({r.category for r in kept})
    return {"images": len(kept), "skipped": bad, "categories": cats, "train_categories": list(run.train_categories)}


def stage_judge(run: RunContext) -> dict:
    """Judge the training images against an Elo reference pool (both orders, cached), on every rank."""
    from psdistill.judge.cached import CachedJudge
    from psdistill.judge.parallel import DataParallelJudge
    from psdistill.judge.store import JudgmentStore

    _check_pool_size(run)
    judge = make_judge(run.cfg)
    if run.state is None:
        return _judge_pool(run, CachedJudge(judge, JudgmentStore(run.path("judgments.sqlite"))))
    parallel = DataParallelJudge(judge, run.state)
    if not run.is_main:
        parallel.serve()
        return {}
    with parallel.leading():
        summary = _judge_pool(run, CachedJudge(parallel, JudgmentStore(run.path("judgments.sqlite"))))
    return {**summary, "computed_per_rank": parallel.computed_per_rank}


def _check_pool_size(run: RunContext) -> None:
    """Before a judge model is loaded: the pool needs more training images than references."""
    n, k = len(run.train_records), run.cfg.pool.k
    if n <= k:
        fix = f"set pool.k to at most {n - 1} (and at least 3)" if n > 3 else "add training images (at least 4)"
        raise ConfigError(f"pool.k={k}: the pool needs more training images than references, and "
                          f"data.train_categories={list(run.train_categories)} has {n}; {fix}")


def _judge_pool(run: RunContext, judge) -> dict:
    from psdistill.ranking import run_reference_pool

    records = run.train_records
    results = {}
    try:
        for dim in run.cfg.data.dimensions:
            def judge_indices(pairs: np.ndarray, dim=dim) -> np.ndarray:
                # In presentation order: the pool schedules both orders itself and measures the bias.
                return judge.prefer([(records[i], records[j]) for i, j in pairs], dim)

            results[dim] = run_reference_pool(len(records), judge_indices, run.cfg.pool)
    finally:
        judge.close()  # the stage's one progress bar
    ids = [r.id for r in records]
    write_comparisons(run.path("comparisons.csv"), ids, {d: r.comparisons for d, r in results.items()})
    write_pool(run.path("pool.json"), {d: PoolFile(
        ids=ids, reference_ids=[ids[i] for i in r.reference_ids], mu=list(map(float, r.mu)),
        var=list(map(float, r.var)), judge_id=judge.judge_id, simulated=judge.simulated) for d, r in results.items()})
    per = {d: {"pair_judgments": len(r.comparisons), "judge_calls": r.n_judge_calls,
               "judgments_per_image": round(len(r.comparisons) / max(len(records), 1), 2),
               "position_bias": round(float(r.position_bias), 3)} for d, r in results.items()}
    n = sum(p["pair_judgments"] for p in per.values())
    return {"judge": judge.judge_id, "simulated": judge.simulated, "images": len(records),
            "references": len(next(iter(results.values())).reference_ids), "pair_judgments": n,
            "judgments_per_image": round(n / max(len(records), 1), 2),
            # the judge's lean toward the first-shown image, averaged over its dimensions (each: "dimensions")
            "position_bias": round(float(np.mean([r.position_bias for r in results.values()])), 3),
            "computed": judge.computed, "from_store": judge.hits, "dimensions": per}


def make_judge(cfg: PipelineConfig):
    """The configured judge, its model on this process's device (`psdistill.models.device`)."""
    if cfg.judge.kind == "simulated":
        from psdistill.judge.simulated import SimulatedJudge

        return SimulatedJudge(cfg.judge.simulated)
    if cfg.judge.kind == "vllm":
        from psdistill.judge.vlm import VLLMJudge

        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            # Each rank's engine would take the same first GPU: vLLM places itself, from one process.
            raise ConfigError("judge.kind=vllm: judge in one process (`psdistill judge --config ...`), then "
                              "launch the training on all GPUs (the judgments are reused); or judge.kind=vlm")
        m = cfg.model
        return VLLMJudge(m.name_or_path, cfg.judge.vlm, min_pixels=m.min_pixels, max_pixels=m.max_pixels,
                         revision=m.revision)
    from psdistill.judge.vlm import VLMJudge
    from psdistill.models.loading import load_vlm

    model, processor = load_vlm(cfg.model)
    model = place_for_inference(model, cfg.model.dtype, dispatched=bool(cfg.model.device_map))
    return VLMJudge(model, processor, cfg.judge.vlm, model_id=cfg.model.model_id)


def stage_fit(run: RunContext) -> dict:
    """Posterior mean/variance of every training image per dimension, mapped to the rating scale (`fit.anchor`)."""
    from psdistill.ranking import to_rating_scale

    pools = read_pool(run.path("pool.json"))
    lo, hi = run.cfg.data.rating_scale
    rate = _teacher_rater(run) if run.cfg.fit.anchor == "teacher" else None
    scores, per = {}, {}
    for dim, pool in pools.items():
        mu = np.asarray(pool.mu)
        anchors, summary = _fit_anchors(run, dim, pool.ids, mu, pool.reference_ids, rate)
        try:
            score, var = to_rating_scale(mu, np.asarray(pool.var), lo, hi, anchors=anchors, match=run.cfg.fit.match)
        except DataError as e:
            if run.cfg.fit.anchor != "teacher":
                raise
            # a few noisy zero-shot ratings can run against the pool's order by chance
            raise ConfigError(f"fit.anchor=teacher: the teacher's {summary['teacher_ratings']} {dim!r} ratings cannot "
                              f"anchor the pool's scores ({e}); rate more images (fit.teacher_rates=all) or use "
                              "fit.anchor=labels or none") from None
        scores[dim] = (score, var)
        per[dim] = {"score_range": [float(score.min()), float(score.max())], "mean_sd": float(np.sqrt(var).mean()),
                    **summary}
    ids = next(iter(pools.values())).ids
    write_pseudo_scores(run.path("pseudo_scores.csv"), ids, scores, {d: p.reference_ids for d, p in pools.items()})
    # The anchor's kind is the run's; its counts add up over the dimensions.
    overall = {k: v for k, v in next(iter(per.values())).items() if k not in ("score_range", "mean_sd")}
    overall.update({k: sum(p[k] for p in per.values()) for k in ("labels_used", "teacher_ratings") if k in overall})
    return {"images": len(ids), **overall, "dimensions": per}


def _teacher_rater(run: RunContext):
    """rate(records, dimension): the teacher's zero-shot ratings, the simulated judge's noisy ones under
    judge.kind=simulated; else the base VLM's, loaded once on first use and scoring every dimension of
    an image in one pass (each image once)."""
    if run.cfg.judge.kind == "simulated":
        from psdistill.judge.simulated import SimulatedJudge

        return SimulatedJudge(run.cfg.judge.simulated).rate
    from psdistill.scoring.api import by_dimension
    from psdistill.scoring.teacher import teacher_pointwise

    rated: dict[str, dict[str, np.ndarray]] = {}  # path -> {dimension: rating}
    scorer = []

    def rate(records, dim):
        todo = list(dict.fromkeys(r.path for r in records if r.path not in rated))
        if todo:
            if not scorer:
                scorer.append(teacher_pointwise(run.cfg.model, rating_scale=run.cfg.data.rating_scale,
                                                readout=run.cfg.distill.readout_config(run.cfg.data.dimensions)))
            columns = by_dimension(scorer[0], scorer[0].score(todo))
            rated.update({path: {d: c[n] for d, c in columns.items()} for n, path in enumerate(todo)})
        return np.array([rated[r.path][dim] for r in records])

    return rate


def _fit_anchors(run: RunContext, dim: str, ids, mu, reference_ids, rate):
    """The ratings (NaN where unrated) of dimension `dim` that anchor its scale, or None for min-max; and
    what they were. `rate`: the teacher's ratings (`_teacher_rater`) for anchor=teacher."""
    cfg = run.cfg.fit
    if cfg.anchor == "none":
        return None, {"anchor": "none"}
    by_id = {r.id: r for r in run.records}
    anchors = np.full(len(ids), np.nan)
    if cfg.anchor == "labels":
        for category in run.train_categories:
            # every n-th labelled image by pool score: the anchors span the scale the pool found
            rows = sorted((i for i, x in enumerate(ids) if by_id[x].category == category
                           and not np.isnan(by_id[x].score(dim))), key=lambda i: mu[i])
            for k in np.unique(np.linspace(0, len(rows) - 1, min(cfg.labels_per_category, len(rows))).astype(int)):
                anchors[rows[k]] = by_id[ids[rows[k]]].score(dim)
        if np.isfinite(anchors).sum() < 2:
            raise ConfigError(f"fit.anchor=labels: the manifest gives ground truth {dim!r} to "
                              f"{int(np.isfinite(anchors).sum())} training image(s); need at least 2 "
                              "(or use fit.anchor=teacher or none)")
        return anchors, {"anchor": "labels", "labels_used": int(np.isfinite(anchors).sum()), "semi_supervised": True}
    row = {x: i for i, x in enumerate(ids)}
    refs = [row[x] for x in reference_ids] if cfg.teacher_rates == "references" else list(range(len(ids)))
    anchors[refs] = rate([by_id[ids[i]] for i in refs], dim)
    return anchors, {"anchor": "teacher", "teacher_ratings": len(refs), "labels_used": 0,
                     "simulated": run.cfg.judge.kind == "simulated"}


def stage_distill(run: RunContext) -> dict:
    """Train the student on the pseudo-scores (resumes from its last checkpoint)."""
    from psdistill.distill import train_student
    from psdistill.distill.card import LabelSource

    pseudo = read_pseudo_scores(run.path("pseudo_scores.csv"))
    train = [r for r in run.train_records if all(r.id in scores for scores in pseudo.values())]
    held_out = [r for r in run.records if r.category not in run.train_categories]
    n_val = run.cfg.validation_images
    val = [held_out[i] for i in np.linspace(0, len(held_out) - 1, n_val).astype(int)] if n_val and held_out else None
    pool = next(iter(read_pool(run.path("pool.json")).values()))  # which judge made the pseudo-scores, for the model card
    out = train_student(train, pseudo, run.cfg.model, run.cfg.distill, run.path("student"),
                        val_records=val, rating_scale=run.cfg.data.rating_scale,
                        labels=LabelSource(pool.judge_id, pool.simulated))
    return {"student": str(out), "train_images": len(train), "validation_images": len(val or [])}


def stage_score(run: RunContext) -> dict:
    """Score every image in one pass with the student (and zero-shot with the base model), the images
    split over the ranks."""
    from psdistill.distill import StudentScorer
    from psdistill.scoring.api import by_dimension
    from psdistill.scoring.teacher import teacher_pointwise

    dims = run.cfg.data.dimensions
    scorers = {"student": lambda: StudentScorer.from_pretrained(run.path("student"))}
    if run.cfg.teacher_pointwise:
        scorers["teacher-pointwise"] = lambda: teacher_pointwise(
            run.cfg.model, rating_scale=run.cfg.data.rating_scale, readout=run.cfg.distill.readout_config(dims))
    rank, world = (0, 1) if run.state is None else (run.state.process_index, run.state.num_processes)
    batch = run.cfg.distill.per_device_eval_batch_size
    paths = {}
    if run.is_main:  # the evaluation reads every predictions file: none from another config may stay
        keep = {f"{name}.csv" for name in [*scorers, "pseudo-scores"]}
        for stale in run.path("predictions").glob("*.csv"):
            if stale.name not in keep:
                stale.unlink()
    for name, make in scorers.items():
        scorer = make()
        mine = scorer.score([r.path for r in run.records[rank::world]], batch_size=batch).reshape(-1, len(scorer.dimensions))
        columns = by_dimension(scorer, _gathered(run, mine))
        if run.is_main:
            paths[name] = str(write_predictions(run.path(f"predictions/{name}.csv"), run.records, columns))
    if not run.is_main:
        return {}
    # The teacher's pairwise pseudo-scores exist only for the training images: a reference, not a scorer.
    pseudo = read_pseudo_scores(run.path("pseudo_scores.csv"))
    trained = [r for r in run.records if all(r.id in scores for scores in pseudo.values())]
    paths["pseudo-scores"] = str(write_predictions(
        run.path("predictions/pseudo-scores.csv"), trained,
        {d: [scores[r.id][0] for r in trained] for d, scores in pseudo.items()}))
    return {"predictions": paths}


def _gathered(run: RunContext, mine: np.ndarray) -> np.ndarray:
    """Every rank's strided share (`records[rank::world]`, (n, D) scores) put back in record order."""
    if run.state is None:
        return mine
    from accelerate.utils import gather_object

    world = run.state.num_processes
    out = np.full((len(run.records), mine.shape[1]), np.nan)
    for rank, scores in gather_object([(run.state.process_index, mine)]):
        out[rank::world] = scores
    return out


def stage_evaluate(run: RunContext) -> dict:
    """Metrics of every scorer against ground truth per dimension, overall and per category; report files.
    Without ground truth of any of the dimensions: what needs none (score distributions, judge consistency, the pool)."""
    from psdistill.evaluation import evaluate, write_report
    from psdistill.evaluation.label_free import describe, has_ground_truth, write_label_free_report

    files = sorted(run.path("predictions").glob("*.csv")) + [Path(p) for p in run.cfg.compare_predictions]
    predictions = {p.stem: read_predictions(p) for p in files}
    data = read_marker(marker_path(run.run_dir, "data"))
    skipped = data["summary"].get("skipped", []) if data else []
    notes = [f"data: left out (data.on_bad_image=skip): {s}" for s in skipped]
    if not any(has_ground_truth(run.records, d) for d in run.cfg.data.dimensions):
        pools = read_pool(run.path("pool.json")) if run.path("pool.json").is_file() else {}
        comparisons = read_comparisons(run.path("comparisons.csv")) if run.path("comparisons.csv").is_file() else {}
        result = describe(run.records, predictions, pools=pools, comparisons=comparisons, notes=notes)
        written = write_label_free_report(result, run.path("report"))
        return {"files": {k: str(v) for k, v in written.items()}, "headline": result.headline()}
    result = evaluate(run.records, predictions, held_out=[c for c in sorted({r.category for r in run.records})
                                                        if c not in run.train_categories])
    result.notes += notes
    written = write_report(result, run.path("report"))
    return {"files": {k: str(v) for k, v in written.items()}, "headline": result.headline(run.cfg.data.dimensions)}


def _data_identity(cfg) -> dict:
    """The data set: a manifest by its path and its content (either agreeing is the same data), or the demo."""
    if not cfg.data.manifest:
        return {"data set": "the embedded demo"}
    path = Path(cfg.data.manifest).resolve()
    return {"manifest": str(path), "sha256": file_digest(path)[:16]}


def _judge_identity(cfg: PipelineConfig) -> dict:
    """The judge, as its judgments are keyed in the store (the prompt and pool settings are settings);
    a VLM judge by its weights, known without loading them."""
    if cfg.judge.kind == "simulated":
        from psdistill.judge.simulated import SimulatedJudge

        return {"judge": SimulatedJudge(cfg.judge.simulated).judge_id}
    revision = f"@{cfg.model.revision}" if cfg.model.revision else ""
    return {"judge": f"{cfg.judge.kind}:{cfg.model.name_or_path}{revision}"}


STAGES = (
    Stage("data", ("data",), stage_data, "checking images",
          input_files=lambda cfg: [cfg.data.manifest] if cfg.data.manifest else [], identity=_data_identity),
    Stage("judge", ("data.dimensions", "model", "judge", "pool"), stage_judge, "judging against the reference pool",
          all_ranks=True, identity=_judge_identity),
    Stage("fit", ("data.rating_scale", "fit"), stage_fit, "fitting pseudo-scores"),
    Stage("distill", ("model", "distill", "validation_images"), stage_distill, "distilling the single-pass scorer",
          all_ranks=True, replaces=("student",)),
    Stage("score", ("teacher_pointwise",), stage_score, "scoring every image in one pass", all_ranks=True,
          replaces=("predictions",)),
    Stage("evaluate", ("compare_predictions",), stage_evaluate, "evaluating against ground truth",
          replaces=("report",)),
)
STAGE_NAMES = tuple(s.name for s in STAGES)


def run_pipeline(cfg: PipelineConfig, stop_after: str | None = None, log=print) -> dict:
    """Run the stages (all, or up to `stop_after`); under `accelerate launch` with several processes
    each stage uses the ranks as the module docstring says."""
    state = process_state() if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None
    run = RunContext(cfg, log if state is None or state.is_main_process else (lambda *a, **k: None), state)
    stages = STAGES[:STAGE_NAMES.index(stop_after) + 1] if stop_after else STAGES
    if run.is_main:
        from psdistill.models.loading import load_vlm_processor
        from psdistill.pipeline.readout_check import check_readout_tokens

        # A word the model cannot read as one token stops the run now, not after hours of judging.
        check_readout_tokens(load_vlm_processor(cfg.model), cfg)
    try:
        with _claim(run, stages):
            # Refused or replaced before config.yaml is: a refused config must not overwrite the run's.
            plan(run, stages, Replacing(overwrite=cfg.overwrite_run_dir, keep_replaced=cfg.keep_replaced),
                 log=run.log, is_main=run.is_main)
            if run.is_main:
                save_config(cfg, run.path("config.yaml"))
            if state is not None:
                state.wait_for_everyone()  # nothing starts before the replaced outputs are set aside
            results = run_stages(run, stages, log=run.log, state=state)
            if state is not None:
                state.wait_for_everyone()  # no rank tears its process group down while another still works
            return results
    finally:
        if state is not None:
            state.destroy_process_group()  # gloo may hang on exit otherwise


def _claim(run: RunContext, stages):
    """The run directory's lock, held by the main process (the other ranks of its launch work under it);
    none for a finished run on a disk it cannot write: reading it writes nothing."""
    if not run.is_main:
        return nullcontext()
    if run.run_dir.is_dir() and not os.access(run.run_dir, os.W_OK) and not pending(run, stages):
        run.log(f"run_dir {run.run_dir}: read-only and finished: reading its results without taking its lock")
        return nullcontext()
    return run_lock(run.run_dir)


def print_report(cfg: PipelineConfig, results: dict, out=print) -> None:
    """A short report: what ran or was reused, and the headline figures."""
    out("")
    out(f"psdistill run: {cfg.run_dir}")
    for name, marker in results.items():
        took = " (when it ran)" if marker["status"] == "reused" else ""  # a reused stage's marker keeps its time
        out(f"  {name:9s} {marker['status']:7s} {marker['seconds']:7.1f} s{took}")
    judge = results.get("judge", {}).get("summary")
    if judge:
        label = "  (SIMULATED judge: reads ground truth)" if judge["simulated"] else ""
        out(f"  judge: {judge['judge']}{label}")
        out(f"  {judge['images']} training images, {judge['references']} references, "
            f"{judge['judgments_per_image']} judgments per image, position bias {judge['position_bias']:+.2f} logit")
        if len(judge["dimensions"]) > 1:
            out("  per dimension: " + ", ".join(f"{d} {p['judgments_per_image']} judgments per image"
                                                 for d, p in judge["dimensions"].items()))
    evaluation = results.get("evaluate", {}).get("summary")
    if evaluation:
        for line in evaluation["headline"]:
            out("  " + line)
        out(f"  report: {evaluation['files'].get('markdown', '')}")
