"""What `data.manifest` may name, resolved to a manifest the pipeline reads (one loader for all).

- a `.csv` or `.jsonl` manifest (`psdistill.data.manifest`)
- a folder saved by `datasets.Dataset.save_to_disk` with an Image column (`from_hf_dataset`)
- an image folder: every image below it, its category the name of its first sub-folder (as
  `datasets`' imagefolder labels them), no ground truth
- a Hugging Face Hub data set id (`owner/name`), loaded with `datasets.load_dataset`; with the hub
  unreachable (HF_HUB_OFFLINE, no network) that is one clear error

Folders and hub data sets are written as images + `manifest.csv` under `out_dir`, so every stage
after the data stage works on files, as it does for a CSV manifest.
"""
from __future__ import annotations

import re
from pathlib import Path

from psdistill.data.reading import IMAGE_SUFFIXES
from psdistill.data.manifest import write_manifest
from psdistill.data.records import ImageRecord
from psdistill.core.errors import DataError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_manifest(source: str, out_dir: str | Path) -> Path:
    """The manifest file for `source` (see the module docstring); folders and hub ids write one in `out_dir`."""
    path, out_dir = Path(source), Path(out_dir)
    if path.is_file():
        return path
    if path.is_dir():
        if (path / "dataset_info.json").is_file() or (path / "state.json").is_file():
            import datasets

            return _from_dataset(datasets.load_from_disk(str(path)), out_dir)
        return _from_image_folder(path, out_dir)
    if _HUB_ID.match(source):
        import datasets

        try:
            dataset = datasets.load_dataset(source, split="train")
        except Exception as e:  # datasets raises several types for "not reachable" and "not found"
            raise DataError(f"data.manifest: cannot load the hub data set {source!r} ({type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''}); offline, save it with "
                            "datasets' save_to_disk on a machine with access and point data.manifest at that folder"
                            ) from None
        return _from_dataset(dataset, out_dir)
    raise DataError(f"data.manifest: {source} is neither a manifest file, a folder nor a hub data set id")


# The column prefixes of `psdistill export`'s images set (psdistill/pipeline/export.py): read back, what we write.
EXPORT_TRUTH, EXPORT_PSEUDO_SCORE, EXPORT_PSEUDO_VARIANCE, EXPORT_PREDICTION = "gt_", "pseudo_score_", "pseudo_variance_", "pred_"
EXPORT_DERIVED = (EXPORT_PSEUDO_SCORE, EXPORT_PSEUDO_VARIANCE, EXPORT_PREDICTION)


def _from_dataset(dataset, out_dir: Path) -> Path:
    from psdistill.data.loaders.hf_dataset import from_hf_dataset

    if hasattr(dataset, "keys") and not hasattr(dataset, "features"):  # a DatasetDict: its train split
        if "train" not in dataset:
            raise DataError(f"data.manifest: the saved data set has splits {list(dataset)}, none named 'train'")
        dataset = dataset["train"]
    columns = set(dataset.features)
    if any(c.startswith(EXPORT_TRUTH) for c in columns):
        # `psdistill export`'s images set: ground truth is gt_<dimension>; pseudo-scores and predictions are no data.
        dataset = dataset.remove_columns([c for c in columns if c.startswith(EXPORT_DERIVED)])
        dataset = dataset.rename_columns({c: c[len(EXPORT_TRUTH):] for c in columns if c.startswith(EXPORT_TRUTH)})
    result = from_hf_dataset(dataset, out_dir, id_column="id" if "id" in columns else None,
                             category_column="category" if "category" in columns else None,
                             series_column="series" if "series" in columns else None,
                             rank_column="rank" if "rank" in columns else None, strict=True)
    return write_manifest(result.records, out_dir / "manifest.csv")


def _from_image_folder(root: Path, out_dir: Path) -> Path:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"data.manifest: the folder {root} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    records = []
    for p in files:
        rel = p.relative_to(root)
        records.append(ImageRecord(id=rel.with_suffix("").as_posix(), path=str(p.resolve()),
                                   category=rel.parts[0] if len(rel.parts) > 1 else ""))
    return write_manifest(records, out_dir / "manifest.csv")
