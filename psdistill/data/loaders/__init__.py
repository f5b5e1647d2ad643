"""Loaders from the data sets' own files into `ImageRecord`s, with a report of everything skipped.

    load_manifest(path)                     image folder + CSV or JSONL manifest (psdistill.data.manifest)
    from_hf_dataset(dataset, out_dir)       a Hugging Face `datasets.Dataset` with an Image column
    load_ppaint(root)                       PPaint: images by category, expert ratings and pairs
    load_apddv2(csv_path, image_dir)        APDDv2 annotations or an official split file
    load_ava(ava_txt, image_dir)            AVA.txt vote histograms, optional split lists
    load_fg_series(members_csv, pairs_csv)  FGAesthetics-style series ranked from pairwise labels
    load_expert_files(records, ratings, preferences)   expert ratings and preferences (file or per-expert folder)

Each returns a `LoadResult` (records + `LoadReport`), some with extra arrays. Every loader takes
`strict=True` to raise `DataError` at the first bad row instead of reporting it.
"""
from psdistill.data.loaders.apdd import load_apddv2
from psdistill.data.loaders.ava import AVAData, load_ava
from psdistill.data.loaders.expert_files import image_records, load_expert_files
from psdistill.data.loaders.fgaesthetics import load_fg_series
from psdistill.data.loaders.hf_dataset import from_hf_dataset
from psdistill.data.loaders.ppaint import Pairs, PPaintData, Ratings, load_ppaint
from psdistill.data.manifest import load_manifest
from psdistill.data.reading import DataWarning, LoadReport, LoadResult, read_text

__all__ = ["AVAData", "DataWarning", "LoadReport", "LoadResult", "PPaintData", "Pairs", "Ratings",
           "from_hf_dataset", "image_records", "load_apddv2", "load_ava", "load_expert_files", "load_fg_series",
           "load_manifest", "load_ppaint", "read_text"]
