"""The PSDistill pipeline: data -> judge -> fit -> distill -> score -> evaluate, in one run directory.

    <run>/config.yaml              the resolved config
    <run>/data/manifest.csv        the images (the demo is built here when no manifest is given)
    <run>/judgments.sqlite         every judgment, keyed by judge, prompt, dimension, image hashes, order
    <run>/comparisons.csv          every judgment each dimension's reference pool asked for, in presentation order
    <run>/pool.json                each pool's references and posterior per training image (data/run_files.py)
    <run>/judge_stats.json         judging per rank: pairs, busy and waiting seconds; the run's utilization
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

The package, in the order a run reads it:
    config.py        PipelineConfig: one section per layer's config (data, model, judge, pool, fit, distill)
    context.py       RunContext: what the stages share
    run.py           run_pipeline: the orchestrator, and STAGES in order
    stages/<name>.py one module per stage: `run(ctx) -> dict` and its `STAGE`
    runner.py        the stage bookkeeping: markers, reuse, replacing, the run directory's identity
    console.py       the report printed last
    readout_check.py, export.py, fgaesq.py: the check before a run, `psdistill export`, the FGAesQ run
"""
from psdistill.pipeline.config import FitConfig, PipelineConfig
from psdistill.pipeline.console import print_report
from psdistill.pipeline.context import RunContext
from psdistill.pipeline.run import STAGE_NAMES, STAGES, run_pipeline

__all__ = ["FitConfig", "PipelineConfig", "RunContext", "STAGES", "STAGE_NAMES", "print_report", "run_pipeline"]
