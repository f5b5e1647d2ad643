"""The evaluate stage: every scorer against ground truth per dimension, or what needs none without it."""
from __future__ import annotations

from pathlib import Path

from psdistill.data.predictions import read_predictions
from psdistill.data.run_files import read_comparisons, read_pool
from psdistill.pipeline.context import RunContext
from psdistill.pipeline.runner import Stage, marker_path, read_marker
from psdistill.pipeline.stages.distill import pool_holdout, pool_records
from psdistill.pipeline.stages.score import SPREAD_FILE


def run(run: RunContext) -> dict:
    """Metrics of every scorer against ground truth per dimension, overall and per category; report files.
    Without ground truth of any of the dimensions: what needs none (score distributions, judge consistency, the pool)."""
    from psdistill.evaluation import evaluate, write_report
    from psdistill.evaluation.headline import headline
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
        written = {**write_label_free_report(result, run.path("report")), **_intervals(run)}
        return {"files": {k: str(v) for k, v in written.items()}, "headline": result.headline()}
    result = evaluate(run.records, predictions, held_out=[c for c in sorted({r.category for r in run.records})
                                                        if c not in run.train_categories])
    result.notes += notes
    written = {**write_report(result, run.path("report")), **_intervals(run)}
    return {"files": {k: str(v) for k, v in written.items()}, "headline": headline(result, run.cfg.data.dimensions)}


def _intervals(run: RunContext) -> dict:
    """The student's intervals checked (psdistill/evaluation/intervals.py), where the score stage calibrated it."""
    from psdistill.data.run_files import read_pseudo_scores
    from psdistill.evaluation.intervals import interval_report, write_interval_report
    from psdistill.scoring.conformal import CALIBRATION_FILE, Calibration

    if not run.path(f"student/{CALIBRATION_FILE}").is_file():
        return {}
    pseudo = read_pseudo_scores(run.path("pseudo_scores.csv"))
    kept = {r.id for r in pool_holdout(run, pseudo)}
    trained = {r.id for r in pool_records(run, pseudo)} - kept
    report = interval_report(run.records, read_predictions(run.path("predictions/student.csv")),
                             read_predictions(run.path(SPREAD_FILE)), Calibration.load(run.path("student")),
                             run.cfg.calibration.coverage, trained)
    return write_interval_report(report, run.path("report"))


STAGE = Stage("evaluate", ("compare_predictions", "calibration.coverage"), run, "evaluating against ground truth", replaces=("report",))
