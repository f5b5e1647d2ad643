"""A finished run as `datasets.Dataset`s, to push to the Hub or train other trainers (TRL's included) on.

    <out>/images/     one row per image: image, id, path, category, series, rank, ground truth
                      (`gt_<dimension>`), the teacher's pseudo-score and its variance per dimension
                      (`pseudo_score_<dimension>`, `pseudo_variance_<dimension>`: training images; None
                      elsewhere), and every scorer's predictions (`pred_<scorer>_<dimension>`)
    <out>/judgments/  one row per judgment a dimension's reference pool asked for: dimension, first_id,
                      second_id, p_first_preferred (presentation order, as in comparisons.csv)
    <out>/signal/     the training signal both distill objectives read (psdistill.distill.signal: image,
                      prompt, dimension, pseudo_score, variance, confidence, series), images embedded:
                      what GRPO (or another TRL trainer) trains on, without the run

Both are written with `save_to_disk`; `datasets.load_from_disk(<out>/images)` reads them back, and
`.push_to_hub(repo_id)` publishes them.
"""
from __future__ import annotations

from pathlib import Path

from psdistill.data.manifest import dimensions, read_manifest
from psdistill.data.predictions import read_predictions
from psdistill.data.run_files import read_comparisons, read_pseudo_scores
from psdistill.data.sources import EXPORT_PREDICTION, EXPORT_PSEUDO_SCORE, EXPORT_PSEUDO_VARIANCE, EXPORT_TRUTH
from psdistill.core.errors import DataError


def export_run(run_dir: str | Path, out_dir: str | Path) -> dict[str, Path]:
    """Write `<out_dir>/images` and `<out_dir>/judgments` (see the module docstring); returns their paths."""
    import datasets

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if not (run_dir / "data" / "manifest.csv").is_file():
        raise DataError(f"{run_dir}: not a pipeline run directory (no data/manifest.csv); run the pipeline first")
    records = read_manifest(run_dir / "data" / "manifest.csv")
    columns = {"image": [r.path for r in records], "id": [r.id for r in records], "path": [r.path for r in records],
               "category": [r.category for r in records], "series": [r.series for r in records],
               "rank": [r.rank for r in records]}
    for dim in dimensions(records):
        columns[EXPORT_TRUTH + dim] = [r.scores.get(dim) for r in records]
    pseudo = read_pseudo_scores(run_dir / "pseudo_scores.csv") if (run_dir / "pseudo_scores.csv").is_file() else {}
    for dim, scores in pseudo.items():
        columns[EXPORT_PSEUDO_SCORE + dim] = [scores[r.id][0] if r.id in scores else None for r in records]
        columns[EXPORT_PSEUDO_VARIANCE + dim] = [scores[r.id][1] if r.id in scores else None for r in records]
    for file in sorted((run_dir / "predictions").glob("*.csv")):
        for dim, scores in read_predictions(file).items():
            columns[f"{EXPORT_PREDICTION}{file.stem}_{dim}"] = [scores.get(r.id) for r in records]
    images = datasets.Dataset.from_dict(columns).cast_column("image", datasets.Image())
    written = {"images": out_dir / "images"}
    images.save_to_disk(str(written["images"]))
    if (run_dir / "comparisons.csv").is_file():
        rows = [(dim, *row) for dim, judged in read_comparisons(run_dir / "comparisons.csv").items() for row in judged]
        written["judgments"] = out_dir / "judgments"
        datasets.Dataset.from_dict({"dimension": [d for d, *_ in rows], "first_id": [a for _, a, _, _ in rows],
                                    "second_id": [b for _, _, b, _ in rows],
                                    "p_first_preferred": [p for *_, p in rows]}).save_to_disk(str(written["judgments"]))
    if pseudo and (run_dir / "config.yaml").is_file():
        written["signal"] = export_signal(run_signal(run_dir, records, pseudo), out_dir / "signal")
    return written


def run_signal(run_dir: Path, records, pseudo):
    """The training signal of a run as its distill stage builds it: the training images (those with a
    pseudo-score) in manifest order, each dimension's prompt from the run's config.yaml."""
    from psdistill.core.config import parse_config
    from psdistill.distill.signal import training_signal
    from psdistill.pipeline import PipelineConfig

    cfg = parse_config(PipelineConfig, ["--config", str(run_dir / "config.yaml")])
    dims = list(pseudo)
    trained = set.intersection(*(set(scores) for scores in pseudo.values()))
    return training_signal([r for r in records if r.id in trained], pseudo, cfg.distill.rendered_prompts(dims))


def export_signal(signal, folder) -> Path:
    """Save a training signal with its images decoded (`with_images`); save_to_disk embeds their bytes,
    so the folder is self-contained: `datasets.load_from_disk(folder)`, then `.push_to_hub(...)` or a
    TRL trainer's train_dataset."""
    from psdistill.distill.signal import with_images

    with_images(signal).save_to_disk(str(folder))
    return Path(folder)
