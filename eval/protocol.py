"""Evaluation protocols on the data sets' own files, one subcommand each (`psdistill.evaluation.protocols`).

    python eval/protocol.py ppaint-cross --root PPAINT --runs landscape=runs/l figure=runs/f \\
        bird-and-flower=runs/b --out runs/eval_ppaint
    python eval/protocol.py apdd-transfer --csv APDDv2-10023.csv --images APDDv2image \\
        --scorer psdistill --model runs/x/student --out runs/eval_apdd
    python eval/protocol.py apdd-transfer --csv APDDv2-10023.csv --split csvfiles/test.csv \\
        --predictions psdistill=runs/eval_apdd/predictions/psdistill.csv fgaesq=fg.csv \\
        --scale psdistill=10 fgaesq=10 --out runs/cmp
    python eval/protocol.py apdd-transfer --csv APDDv2-10023.csv --images APDDv2image --scorer psdistill \\
        --model runs/multi/student --dimension-map psdistill/evaluation/apdd_dimensions.yaml --out runs/eval_apdd_md
    python eval/protocol.py fg-series --members members.csv --pairs pairs.csv --predictions fgaesq=fg.csv \\
        --out runs/eval_fg
    python eval/protocol.py ava --ava AVA.txt --images AVA/images --split test.jpgl \\
        --scorer psdistill --model runs/x --out runs/eval_ava

Scorers, side by side in one table: `--predictions NAME=CSV` (repeatable) reads a predictions file
(id,path,<dimension>...), no model needed; `--scorer NAME --model PATH` scores the images with a
registered scorer (`psdistill list-scorers`) into `<out>/predictions/<NAME>.csv`, with a progress
bar, and a rerun scores only the images that file lacks. ppaint-cross takes one model per training
category: `--runs CAT=RUN` reads RUN/predictions/student.csv when it covers the PPaint images, else
scores them with RUN/student; `--predictions CAT=CSV` reads a file.

APDDv2 error metrics (RMSE, MAE, and the authors' MSE and ACC@5) need each scorer's scale:
`--scale NAME=TOP` says its predictions are on 0..TOP (10 for a 1-10 scorer); a --scorer's default
is the top of its score_range; a predictions column named after a ground-truth dimension ("total",
"mood") is taken to be on that dimension's scale; any other scorer gets rank and linear correlations
only.

Each writes JSON, markdown and plots into --out and prints the markdown table; `<out>/inputs.json`
records what it read (paths, sha256, options). The generated files of an earlier run in the same
--out are replaced (plots/ and chinese_painting/ emptied first); `<out>/predictions/<NAME>.csv`, the
scores of --scorer NAME, is kept and resumed only for the same scorer and model. A bad input (a
missing file, an unknown category) prints one line naming the file or field and exits with status 2.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Callable, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from psdistill.data import loaders  # noqa: E402
from psdistill.data.predictions import read_predictions, write_predictions  # noqa: E402
from psdistill.data.records import ImageRecord  # noqa: E402
from psdistill.core.errors import DataError, PsdistillError  # noqa: E402
from psdistill.evaluation import protocols, write_report  # noqa: E402
from psdistill.evaluation.files import file_record  # noqa: E402
from psdistill.scoring.api import by_dimension  # noqa: E402

SCORE_CHUNK = 64  # images scored between two rewrites of the predictions file: what a killed run loses
MODEL_KEYWORD = {"teacher-pointwise": "model"}  # the registry factory's keyword for --model; the others take path=


def scored_predictions(make_scorer: Callable, name: str, records: Sequence[ImageRecord], out_dir: Path,
                       source: Optional[dict] = None) -> dict[str, dict[str, float]]:
    """Scores of `records` kept in `<out_dir>/predictions/<name>.csv`: images already there are reused,
    the rest scored by `make_scorer()` (built only when something is left to score). `source` (scorer and
    model) and the scorer's score_range are kept beside, in <name>.source.json: the file of another
    source is not reused."""
    from tqdm.auto import tqdm

    path = out_dir / "predictions" / f"{name}.csv"
    source_path = path.with_suffix(".source.json")
    same = source_path.is_file() and json.loads(source_path.read_text()).get("source") == source
    scores = read_predictions(path) if path.is_file() and same else {}  # {dimension: {id: score}}
    todo = [r for r in records if not scores or any(r.id not in column for column in scores.values())]
    if todo:
        scorer = make_scorer()
        if list(scores) != list(scorer.dimensions):  # no file yet, or another scorer's: start over
            scores, todo = {d: {} for d in scorer.dimensions}, list(records)
        source_path.parent.mkdir(parents=True, exist_ok=True)
        score_range = getattr(scorer, "score_range", None)
        source_path.write_text(json.dumps({"source": source, "score_range": list(score_range) if score_range
                                           else None}) + "\n")
        with tqdm(total=len(records), initial=len(records) - len(todo), desc=f"scoring ({name})", unit="img") as bar:
            for start in range(0, len(todo), SCORE_CHUNK):
                chunk = todo[start:start + SCORE_CHUNK]
                for dim, column in by_dimension(scorer, scorer.score([r.path for r in chunk])).items():
                    scores[dim].update(zip([r.id for r in chunk], map(float, column)))
                done = [r for r in records if all(r.id in column for column in scores.values())]
                write_predictions(path, done, {d: [column[r.id] for r in done] for d, column in scores.items()})
                bar.update(len(chunk))
    return {d: {r.id: column[r.id] for r in records} for d, column in scores.items()}


def make_scorer(name: str, model: Optional[str]) -> Callable:
    """A function building the registered scorer `name` from --model."""
    from psdistill.scoring.registry import create_scorer

    if model is None:
        raise DataError(f"--scorer {name}: give --model (a student or run directory, a checkpoint or a model name)")
    return lambda: create_scorer(name, **{MODEL_KEYWORD.get(name, "path"): model})


def named_paths(values: Sequence[str], flag: str) -> dict[str, Path]:
    """NAME=PATH arguments as {name: path}."""
    out = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise DataError(f"{flag}: expected NAME=PATH, got {value!r}")
        if name in out:
            raise DataError(f"{flag}: {name!r} is given twice")
        out[name] = Path(path)
    return out


def read_checked(path: Path, records: Sequence[ImageRecord]) -> dict[str, dict[str, float]]:
    """A predictions file that scores at least one of `records` (else it belongs to other images)."""
    preds = read_predictions(path)
    ids = {i for scores in preds.values() for i in scores}
    if ids and not ids & {r.id for r in records}:
        raise DataError(f"{path}: none of its {len(ids)} image ids is one of the {len(records)} images evaluated")
    return preds


def scorer_predictions(args, records: Sequence[ImageRecord]) -> dict[str, dict]:
    """{scorer: predictions} from --predictions and --scorer."""
    preds = {name: read_checked(p, records) for name, p in named_paths(args.predictions, "--predictions").items()}
    if args.scorer:
        name = args.name or args.scorer
        preds[name] = scored_predictions(make_scorer(args.scorer, args.model), name, records, args.out,
                                         {"scorer": args.scorer, "model": args.model})
    if not preds:
        raise DataError("no scorer: give --predictions NAME=CSV or --scorer NAME --model PATH")
    return preds


def run_predictions(category: str, run: Path, records: Sequence[ImageRecord], args) -> dict[str, dict[str, float]]:
    """A pipeline run's predictions file when it covers `records`, else its student's scores."""
    if not run.is_dir():
        raise DataError(f"--runs {category}={run}: run directory not found")
    path = run / "predictions" / f"{args.prediction_name}.csv"
    if path.is_file():
        preds = read_predictions(path)
        if all(any(r.id in scores for scores in preds.values()) for r in records):
            return preds
    if not (run / "student").is_dir():
        raise DataError(f"--runs {category}={run}: {path} does not score every PPaint image and there is no "
                        f"{run / 'student'} to score them with")
    return scored_predictions(make_scorer("psdistill", str(run)), category, records, args.out,
                              {"scorer": "psdistill", "model": str(run)})


INPUT_FILES = ("root", "manifest", "csv", "split", "members", "pairs", "ava")  # arguments naming data files


def _described(path) -> dict:
    path = Path(path)
    return file_record(path) if path.is_file() else {"path": str(path.resolve()), "kind": "folder"}


def record_inputs(args, argv: Sequence[str]) -> dict:
    """What a run read: data and predictions files with their sha256, the scored models, and the options."""
    inputs = {"command": ["eval/protocol.py", *argv], "protocol": args.command}
    for key in INPUT_FILES:
        value = getattr(args, key, None)
        if value:
            inputs[key] = [_described(v) for v in value] if isinstance(value, list) else _described(value)
    if getattr(args, "images", None):
        inputs["images"] = str(Path(args.images).resolve())
    inputs["predictions"] = {n: file_record(p) for n, p in named_paths(args.predictions, "--predictions").items()}
    scored = {args.name or args.scorer: args.model} if getattr(args, "scorer", None) else {}
    scored.update({c: str(r) for c, r in named_paths(getattr(args, "runs", []), "--runs").items()})
    for name, model in scored.items():
        path = args.out / "predictions" / f"{name}.csv"
        inputs.setdefault("scored", {})[name] = {"model": model, "predictions": file_record(path)
                                                 if path.is_file() else None}
    inputs["options"] = {k: v for k, v in vars(args).items() if k in ("bootstrap", "seed", "scale", "chinese_styles",
                                                                      "threshold", "dimensions")}
    return inputs


# ---- subcommands ---------------------------------------------------------------------------------

def ppaint_cross(args) -> str:
    records = (loaders.load_ppaint(args.root) if args.root else loaders.load_manifest(args.manifest)).records
    by_category = {c: read_checked(p, records) for c, p in named_paths(args.predictions, "--predictions").items()}
    for category, run in named_paths(args.runs, "--runs").items():
        if category in by_category:
            raise DataError(f"--runs: training category {category!r} is also given by --predictions")
        by_category[category] = run_predictions(category, run, records, args)
    if not by_category:
        raise DataError("no model: give --runs CATEGORY=RUN_DIR or --predictions CATEGORY=CSV per training category")
    result = protocols.ppaint_cross_category(records, by_category, args.dimensions, n_bootstrap=args.bootstrap,
                                             seed=args.seed)
    result.write(args.out)
    return result.to_markdown()


def scales(args) -> dict[str, float]:
    """{name: top}: --scale NAME=TOP, and for --scorer the top of its score_range unless --scale says otherwise."""
    out = {}
    if args.scorer:
        name = args.name or args.scorer
        saved = json.loads((args.out / "predictions" / f"{name}.source.json").read_text())
        if saved.get("score_range"):
            out[name] = float(saved["score_range"][1])
    values = args.scale
    for name, top in named_paths(values, "--scale").items():
        try:
            out[name] = float(str(top))
        except ValueError:
            raise DataError(f"--scale {name}={top}: TOP must be a number (the top of the predictions' 0..TOP scale)")
    return out


def apdd_transfer(args) -> str:
    records = loaders.load_apddv2(args.csv, args.images, split=args.split, check_files=bool(args.scorer)).records
    predictions = scorer_predictions(args, records)
    dimension_map = protocols.read_dimension_map(args.dimension_map) if args.dimension_map else None
    result = protocols.apdd_transfer(records, predictions, scales=scales(args), dimension_map=dimension_map,
                                     split=f"the images of {Path(*Path(args.split).parts[-2:])}" if args.split
                                     else None,  # e.g. csvfiles/test.csv; the full path is in inputs.json
                                     chinese_styles=args.chinese_styles, n_bootstrap=args.bootstrap, seed=args.seed)
    result.inputs = args.inputs()
    result.write(args.out)
    return result.to_markdown()


def fg_series(args) -> str:
    records = loaders.load_fg_series(args.members, args.pairs, image_root=args.images,
                                     check_files=bool(args.scorer)).records
    result = protocols.fg_series(records, scorer_predictions(args, records), n_bootstrap=args.bootstrap,
                                 seed=args.seed)
    write_report(result, args.out)
    return result.to_markdown()


def ava(args) -> str:
    images = args.images or Path(args.ava).parent
    records = loaders.load_ava(args.ava, images, split=args.split, check_files=bool(args.scorer)).records
    result = protocols.ava(records, scorer_predictions(args, records), threshold=args.threshold,
                           n_bootstrap=args.bootstrap, seed=args.seed)
    write_report(result, args.out)
    return result.to_markdown()


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, run, help: str, scorers: bool = True) -> argparse.ArgumentParser:
        p = commands.add_parser(name, help=help, description=help)
        p.set_defaults(run=run)
        p.add_argument("--out", type=Path, required=True, help="folder for the reports (and scored predictions)")
        p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the CIs; 0: none")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--predictions", action="extend", nargs="+", default=[], metavar="NAME=CSV",
                       help="a predictions file (id,path,<dimension>...) to evaluate; repeatable"
                            + ("; NAME is the training category" if not scorers else ""))
        if scorers:
            p.add_argument("--scorer", help="score the images with this registered scorer (psdistill list-scorers)")
            p.add_argument("--model", help="its model: a student or run directory, a checkpoint, or a model name")
            p.add_argument("--name", help="the scorer's name in the tables (default: --scorer)")
        return p

    p = command("ppaint-cross", ppaint_cross, "PPaint: train on one category, test on all (SRCC per dimension)",
                scorers=False)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--root", help="PPaint folder: images/<category>/, ratings.csv, pairs.csv")
    source.add_argument("--manifest", help="or any CSV/JSONL manifest with categories (e.g. a run's data/manifest.csv)")
    p.add_argument("--runs", action="extend", nargs="+", default=[], metavar="CATEGORY=RUN_DIR",
                   help="the pipeline run trained on each category")
    p.add_argument("--prediction-name", default="student", help="the run's predictions/<NAME>.csv to read")
    p.add_argument("--dimensions", nargs="+", help="default: every ground-truth dimension predicted")

    p = command("apdd-transfer", apdd_transfer,
                "APDDv2: SRCC per category, total and attributes; Chinese painting apart")
    p.add_argument("--csv", required=True, help="APDDv2-10023.csv (or a split file)")
    p.add_argument("--images", help="image folder (default: the CSV's folder)")
    p.add_argument("--split", help="an official split file (e.g. csvfiles/test.csv) restricting the images")
    p.add_argument("--chinese-styles", nargs="+", default=list(protocols.CHINESE_PAINTING_STYLES),
                   help="category style fields (before the first '*') that are Chinese painting")
    p.add_argument("--scale", action="extend", nargs="+", default=[], metavar="NAME=TOP",
                   help="scorer NAME's predictions are on 0..TOP (e.g. 10): converted onto each ground-truth "
                        "scale for RMSE, MAE, MSE and ACC@5; without it, only columns named after a dimension get them")
    p.add_argument("--dimension-map", metavar="YAML",
                   help="{predicted dimension: APDDv2 column} renaming every scorer's columns (a multi-dimension "
                        f"student's); the bundled {protocols.APDD_DIMENSION_MAP.relative_to(ROOT)} maps the prompt "
                        "sets' dimensions; give a 1-10 student's --scale NAME=10, as its total column is not on 0-100")

    p = command("fg-series", fg_series, "FGAesthetics series: pair Acc, F1, s-Acc, s-SRCC per subset")
    p.add_argument("--members", required=True, help="members.csv: series,image_id,path[,category][,rank]")
    p.add_argument("--pairs", help="pairs.csv: series,first_id,second_id,p_first (ranks from these when given)")
    p.add_argument("--images", help="image root of the members' paths (default: the members file's folder)")

    p = command("ava", ava, "AVA: SRCC, PLCC and acc@5 of the mean vote")
    p.add_argument("--ava", required=True, help="AVA.txt")
    p.add_argument("--images", help="folder of <image_id>.jpg (default: the AVA.txt folder)")
    p.add_argument("--split", nargs="+", help="split list(s), e.g. the test list; default: every image")
    p.add_argument("--threshold", type=float, default=protocols.AVA_THRESHOLD, help="acc@ threshold (mean vote)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = make_parser().parse_args(argv)
    args.inputs = lambda: record_inputs(args, argv)  # after scoring: the scored predictions files exist by then
    # Category names are Chinese (APDDv2, PPaint) and matplotlib's default font has no CJK glyphs: the plots'
    # labels lose them (the JSON and markdown keep them); one warning per glyph and plot would bury the output.
    warnings.filterwarnings("ignore", "Glyph .* missing from font")
    try:
        print(args.run(args))
        (args.out / "inputs.json").write_text(json.dumps(args.inputs(), indent=2, ensure_ascii=False) + "\n",
                                              encoding="utf-8")
        print(f"reports in {args.out}")
    except PsdistillError as e:
        print(f"protocol {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
