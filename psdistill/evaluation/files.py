"""Report files: a JSON + markdown pair, a folder emptied of an earlier run's files, inputs with their hashes."""
from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np


def json_safe(obj):
    """NaN -> null, numpy scalars -> Python, so the JSON is strict and exact."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return None if math.isnan(obj) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json_markdown(out_dir: str | Path, stem: str, data: dict, markdown: str,
                        markdown_stem: str | None = None) -> dict[str, Path]:
    """`<stem>.json` (strict: NaN as null) and `<markdown_stem or stem>.md` under `out_dir`;
    returns {"json": path, "markdown": path}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / f"{stem}.json", "markdown": out_dir / f"{markdown_stem or stem}.md"}
    paths["json"].write_text(json.dumps(json_safe(data), indent=2, allow_nan=False, ensure_ascii=False) + "\n",
                             encoding="utf-8")
    paths["markdown"].write_text(markdown, encoding="utf-8")
    return paths


def figures_markdown(figures: dict[str, Path], base: str | Path) -> str:
    """A markdown section linking every figure (kind -> path) relative to `base`, the report's folder."""
    if not figures:
        return ""
    lines = [f"- [{kind}]({Path(path).relative_to(base).as_posix()})" for kind, path in figures.items()]
    return "\n## Figures\n\n" + "\n".join(lines) + "\n"


def fresh_dir(path: str | Path) -> Path:
    """`path` as an empty folder: a folder of generated files (plots) must not keep those of an earlier run,
    whose dimensions, scorers or categories may have been others."""
    path = Path(path)
    if path.is_dir():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def file_record(path: str | Path) -> dict:
    """{"path": absolute path, "bytes": size, "sha256": hex digest} of an input file."""
    path = Path(path).resolve()
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": digest.hexdigest()}
