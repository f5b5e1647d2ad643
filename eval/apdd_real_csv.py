"""The APDDv2 protocol on the real release, with synthetic predictions, beside the authors' eval.py metrics.

    python eval/apdd_real_csv.py --apdd /work/.mirror/BestiVictory+APDDv2/repo \
        --out eval/results/apdd_transfer_real_csv.md

--apdd: a checkout of github.com/BestiVictory/APDDv2, or the bare git directory `fetch` leaves
(its APDDv2-10023.csv and csvfiles/test.csv are read from HEAD). The release is CC BY-NC-ND: it is
read where it lies, never copied into this repository; the report keeps its sha256 only.

Predictions (seeded; no model): "near", one score per image on 0-10, Score + N(0, 0.6) (stated:
--scale near=10); "half", a "total" column on 0-100 for every other image, blank for the rest,
total + N(0, 12). Checked: the loader's categories against a plain pandas read of the CSV (24
categories, 6 of them Chinese painting), and the protocol's authors' table against
`eval/apdd_authors_eval.py` (the authors' code transcribed) on the same predictions, in float64
(must agree to 1e-12) and in float32 as they run it.
"""
from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import protocol  # noqa: E402
from _bench_common import command_line, write_report  # noqa: E402
from apdd_authors_eval import authors_eval  # noqa: E402

from psdistill.data.loaders import load_apddv2  # noqa: E402
from psdistill.data.predictions import read_predictions  # noqa: E402
from psdistill.evaluation.files import file_record  # noqa: E402
from psdistill.evaluation.protocols import CHINESE_PAINTING_STYLES, chinese_painting_categories  # noqa: E402

FILES = ("APDDv2-10023.csv", "csvfiles/test.csv")
METRICS = ("srcc", "plcc", "mse", "mae", "acc")


def release(apdd: Path, work: Path) -> tuple[Path, str]:
    """The folder holding FILES, and the release's commit (extracted from a bare git directory if need be)."""
    if (apdd / FILES[0]).is_file():
        folder = apdd
    else:
        folder = work / "apdd"
        for name in FILES:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(subprocess.run(["git", f"--git-dir={apdd}", "show", f"HEAD:{name}"],
                                                       check=True, capture_output=True).stdout)
    git = ["git", f"--git-dir={apdd}"] if not (apdd / ".git").exists() else ["git", "-C", str(apdd)]
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    return folder, commit or "unknown"


def synthetic_predictions(csv_path: Path, work: Path, seed: int) -> dict[str, Path]:
    df = pd.read_csv(csv_path, encoding="gbk")
    rng = np.random.default_rng(seed)
    ids = df["filename"].map(lambda f: Path(f).stem)
    total = df["Total aesthetic score"].to_numpy(float)
    near = pd.DataFrame({"id": ids, "path": df["filename"], "score": total / 10 + rng.normal(0, 0.6, len(df))})
    half = pd.DataFrame({"id": ids, "path": df["filename"], "total": total + rng.normal(0, 12, len(df))})
    half.loc[half.index % 2 == 1, "total"] = np.nan  # written as blank cells
    paths = {"near": work / "near.csv", "half": work / "half.csv"}
    near.to_csv(paths["near"], index=False, float_format="%.6f")
    half.to_csv(paths["half"], index=False, float_format="%.6f")
    return paths


def check_categories(csv_path: Path) -> list[str]:
    records = load_apddv2(csv_path, check_files=False).records
    expected = pd.read_csv(csv_path, encoding="gbk")["Artistic Categories"].value_counts().to_dict()
    ours = pd.Series([r.category for r in records]).value_counts().to_dict()
    assert ours == expected and len(ours) == 24, "loader categories differ from pandas"
    chinese = chinese_painting_categories(records)
    assert len(chinese) == 6 and all(c.startswith("traditional Chinese painting*") for c in chinese)
    return [f"- loader categories = pandas' `Artistic Categories` counts: {len(ours)} categories, "
            f"{len(records)} records; Chinese painting (style {' / '.join(CHINESE_PAINTING_STYLES)}): "
            f"{len(chinese)} categories, {sum(expected[c] for c in chinese)} images: {', '.join(chinese)}"]


def run_protocol(args: list[str]) -> tuple[str, float]:
    start = time.perf_counter()
    out = io.StringIO()
    stdout, sys.stdout = sys.stdout, out
    try:
        rc = protocol.main(args)
    finally:
        sys.stdout = stdout
    assert rc == 0, f"protocol failed: {args}"
    return out.getvalue(), time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--apdd", type=Path, required=True, help="APDDv2 checkout or bare git directory")
    parser.add_argument("--out", help="markdown report (default: print only)")
    parser.add_argument("--work", type=Path, help="folder for predictions and protocol outputs (default: a temp one)")
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="apdd_real_"))
    work.mkdir(parents=True, exist_ok=True)
    folder, commit = release(args.apdd.resolve(), work)
    csv_path, split = folder / FILES[0], folder / FILES[1]
    preds = synthetic_predictions(csv_path, work, args.seed)
    common = ["--csv", str(csv_path), "--predictions", *(f"{n}={p}" for n, p in preds.items()),
              "--scale", "near=10", "--bootstrap", str(args.bootstrap), "--seed", str(args.seed)]
    split_md, split_s = run_protocol(["apdd-transfer", *common, "--split", str(split), "--out", str(work / "test")])
    all_md, all_s = run_protocol(["apdd-transfer", *common, "--out", str(work / "all")])

    # the authors' table of the test-split run against their formulas on the same predictions
    ours = json.loads((work / "test" / "summary.json").read_text())["authors_eval"]["scorers"]
    on_score = {"near": read_predictions(preds["near"])["score"],
                "half": {i: v / 10 for i, v in read_predictions(preds["half"])["total"].items()}}
    lines = ["# APDDv2 protocol on the real release (synthetic predictions), beside the authors' eval.py", "",
             command_line("eval/apdd_real_csv.py", argv), f"- release: github.com/BestiVictory/APDDv2 at {commit}"]
    lines += [f"- `{name}`: {file_record(folder / name)['bytes']} bytes, sha256 {file_record(folder / name)['sha256']}"
              for name in FILES]
    lines += check_categories(csv_path)
    lines += [f"- protocol wall time: test split {split_s:.1f} s, all images {all_s:.1f} s "
              f"({args.bootstrap} bootstrap resamples, 2 scorers, 11 dimensions; "
              f"load {open('/proc/loadavg').read().split()[0]} on 2 cores)", "",
              "## Authors' metrics: ours vs their eval.py transcribed (eval/apdd_authors_eval.py)", "",
              "On csvfiles/test.csv (1002 images); theirs read its `Score` column, ours total / 10 of the main CSV.", "",
              "| scorer | source | n | SRCC | PLCC | MSE | MAE | ACC@5 |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    worst = 0.0
    for name, values in on_score.items():
        theirs64 = authors_eval(split, values, dtype=np.float64)
        theirs32 = authors_eval(split, values)
        worst = max([worst] + [abs(ours[name][m] - theirs64[m]) for m in METRICS])
        for source, row in (("psdistill protocol", ours[name]), ("their formulas, float64", theirs64),
                            ("their formulas, float32 (as eval.py)", theirs32)):
            lines.append(f"| {name} | {source} | {row['n']} | " + " | ".join(f"{row[m]:.6f}" for m in METRICS) + " |")
    assert worst < 1e-12, f"protocol and the authors' formulas differ by {worst}"
    lines += ["", f"Max |ours - theirs (float64)| over the table: {worst:.2e}.", "",
              "## The protocol's output, test split (`summary.md`)", "", split_md.split("## Inputs")[0].rstrip(), "",
              "## The protocol's output, all 10,023 images (headline lines and the authors' table)", "",
              all_md.split("## SRCC per dimension")[0].rstrip(), ""]
    write_report(lines, args.out)
    print(f"protocol outputs in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
