"""The data stage: build the demo or read the user's manifest, and check that every image can be used."""
from __future__ import annotations

from pathlib import Path

from psdistill.core.errors import DataError
from psdistill.data.demo import build_demo
from psdistill.data.images import check_processable, load_image
from psdistill.data.manifest import read_manifest, write_manifest
from psdistill.data.sources import resolve_manifest
from psdistill.pipeline.context import RunContext
from psdistill.pipeline.runner import Stage, file_digest


def run(run: RunContext) -> dict:
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


def _data_identity(cfg) -> dict:
    """The data set: a manifest by its path and its content (either agreeing is the same data), or the demo."""
    if not cfg.data.manifest:
        return {"data set": "the embedded demo"}
    path = Path(cfg.data.manifest).resolve()
    return {"manifest": str(path), "sha256": file_digest(path)[:16]}


STAGE = Stage("data", ("data",), run, "checking images",
              input_files=lambda cfg: [cfg.data.manifest] if cfg.data.manifest else [], identity=_data_identity)
