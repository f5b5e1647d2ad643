"""`psdistill` command line: one subcommand per pipeline stage, plus `run`, `demo` and `score`.

    psdistill demo                                   # the whole pipeline on the embedded demo
    psdistill run --config recipes/configs/qwen3vl8b.yaml data.manifest=/data/paintings/manifest.csv
    psdistill judge --config my.yaml                 # runs data + judge (reusing what is done)
    psdistill eval --config my.yaml                  # `evaluate` (every stage up to it)
    psdistill score --model runs/demo/student a.jpg b.jpg -o scores.csv
    psdistill fuse --ratings ratings.csv --preferences prefs/ --images PPAINT/images --out runs/ppaint_gt
    psdistill list-scorers
    psdistill --version
    psdistill plan --config recipes/configs/qwen3vl8b_1x80gb_lora.yaml --gpu H100-80GB --gpus 1
    psdistill launch --config_file launch/cpu_ddp.yaml recipes/distill.py     # accelerate launch, errors last

Stage messages go to the console (-v/--verbose: also the Trainer's metric lines; -q/--quiet: warnings
only) and, all of them, to <run_dir>/logs/run.log; the run's report is printed last.
User errors (bad config value, missing image, malformed CSV row, full or read-only disk) print one
line naming the key, file or row and exit with status 2; finished stages stay finished.
"""
from __future__ import annotations

import argparse
import difflib
import os
import sys

from psdistill.cli.launch import exit_status, launch
from psdistill.core.logs import progress_bars_as_asked

DEMO_CONFIG = os.path.join(os.path.dirname(os.path.dirname(__file__)), "pipeline", "configs", "demo.yaml")
ALIASES = {"eval": "evaluate"}
STAGE_HELP = {"data": "the data stage (the demo is built, or the manifest is read)",
              "judge": "data + judge: pairwise judgments against the reference pool",
              "fit": "... + fit: pseudo-scores from the judgments",
              "distill": "... + distill: train the single-pass student",
              "evaluate": "... + evaluate (alias: eval): metrics and the report"}
COMMANDS = {"run": "every stage (--config FILE, key=value overrides)",
            "demo": "every stage on the embedded demo (CPU, minutes); its --help shows the demo's values",
            **STAGE_HELP,
            "score": "--model RUN IMAGES|FOLDERS -o scores.csv: score images; without --model, the stages up to score",
            "push": "RUN REPO_ID [--private] [--dry-run]: upload the run's student to the Hugging Face Hub",
            "export": "RUN -o OUT: the run's images, pseudo-scores, predictions, judgments and training signal as datasets.Dataset folders",
            "fuse": "--ratings CSV|DIR --preferences CSV|DIR --images DIR -o OUT: fused expert ground truth",
            "launch": "[accelerate launch options] SCRIPT [ARGS]: accelerate launch, a recipe's error printed last",
            "list-scorers": "the registered scorers (psdistill.load_scorer names)",
            "plan": "--config FILE [--gpu NAME --gpus N --gpu-memory GB --zero-stage Z]: memory and time per stage"}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    progress_bars_as_asked(argv)
    return exit_status(lambda: _dispatch(argv))


def _dispatch(argv) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip() + "\n\ncommands (each takes --help):")
        for name, desc in COMMANDS.items():
            print(f"  {name:13s} {desc}")
        return 0
    if argv[0] in ("-V", "--version"):
        from importlib.metadata import version  # the installed distribution's: what pip reports

        print(f"psdistill {version('psdistill')}")
        return 0
    command, rest = ALIASES.get(argv[0], argv[0]), argv[1:]
    if command not in COMMANDS:
        from psdistill.core.errors import ConfigError

        hint = difflib.get_close_matches(command, [*COMMANDS, *ALIASES], n=1)
        raise ConfigError(f"unknown command {command!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")
                          + " (psdistill --help lists them)")
    if command == "score" and _has_option(rest, "--model"):
        return _score(rest)
    if command in OWN_PARSERS:
        return OWN_PARSERS[command](rest)
    from psdistill.core.config_help import config_help, wants_help
    from psdistill.pipeline import PipelineConfig

    if wants_help(rest):
        if command == "score":  # the config keys are listed once, by the run command's help
            _score_parser().print_help()
            print("\nWithout --model: `psdistill score [--config FILE.yaml] [key=value ...]` runs the stages up to "
                  "score; the keys are those of `psdistill run`, listed by its --help.")
            return 0
        usage = f"usage: psdistill {argv[0]} [-v|-q] [--config FILE.yaml] [key=value ...]\n\n{COMMANDS[command]}"
        print(demo_help(usage) if command == "demo" else config_help(PipelineConfig, usage))
        return 0
    from psdistill.core.config import parse_config
    from psdistill.core.logs import get_logger, report_printer, run_logging, split_verbosity
    from psdistill.pipeline import print_report, run_pipeline

    verbosity, rest = split_verbosity(rest)
    if command == "demo" and not _has_option(rest, "--config", "-c"):
        rest = ["--config", DEMO_CONFIG] + rest
    cfg = parse_config(PipelineConfig, rest)
    log = get_logger("pipeline")
    with run_logging(cfg.run_dir, verbosity):
        results = run_pipeline(cfg, stop_after=None if command in ("run", "demo") else command, log=log.info)
        if os.environ.get("RANK", "0") == "0":
            print_report(cfg, results, out=report_printer(log))
    return 0


def demo_help(usage: str) -> str:
    """The config's fields with the values the demo runs with (DEMO_CONFIG), beside the defaults."""
    from psdistill.core.config import parse_config
    from psdistill.core.config_help import config_help
    from psdistill.pipeline import PipelineConfig

    return config_help(PipelineConfig, usage, parse_config(PipelineConfig, ["--config", DEMO_CONFIG]),
                       values_from=os.path.basename(DEMO_CONFIG))


def _list_scorers(argv) -> int:
    from psdistill.scoring.registry import list_scorers

    for name, desc in list_scorers().items():
        print(f"{name:20s} {desc}")
    return 0


def _has_option(argv, *names) -> bool:
    return any(a in names or a.split("=", 1)[0] in names for a in argv)


def _score_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="psdistill score", description="Score images with a trained scorer.")
    parser.add_argument("--model", required=True,
                        help="a run directory, a student/ or FGAesQ checkpoint/ folder, or a registered scorer name")
    parser.add_argument("images", nargs="+", help="image files, folders (their image files, sorted) or globs ('photos/*.jpg')")
    parser.add_argument("-o", "--output", default="scores.csv", help="predictions CSV: id,path,<dimension>")
    parser.add_argument("--batch-size", type=int, default=None, help="images per forward pass (default: 16; --engine vllm: 64 per generate call)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an output CSV that another scorer wrote (by default that stops the command; "
                             "the same scorer's CSV is resumed: only missing or NaN rows are scored)")
    parser.add_argument("--on-bad-image", choices=("error", "skip"), default="error",
                        help="skip: an unreadable image gets no score (named in a warning) instead of stopping")
    parser.add_argument("--coverage", type=float, default=None,
                        help="e.g. 0.9: also <dimension>_lo and <dimension>_hi columns, an interval that covers the "
                             "target with this probability (a calibrated student: its folder's calibration.json)")
    parser.add_argument("--engine", choices=("transformers", "vllm"), default="transformers",
                        help="vllm: a levels-head student through vLLM (pip install 'psdistill[vllm]'), merged into "
                             "its base once (<student>/merged/); under accelerate launch one engine per rank")
    return parser


def _score(argv) -> int:
    args = _score_parser().parse_args(argv)
    from pathlib import Path

    from psdistill.data.reading import IMAGE_SUFFIXES
    from psdistill.scoring.api import SCORE_BATCH_SIZE
    from psdistill.scoring.batch import score_images
    from psdistill.scoring.registry import load_scorer

    import glob

    images = []
    for arg in args.images:
        # A pattern the shell did not expand (quoted, or on Windows) is expanded here.
        paths = [Path(p) for p in sorted(glob.glob(arg))] if any(c in arg for c in "*?[") and not Path(arg).exists() else [Path(arg)]
        for path in paths:
            images += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if path.is_dir() else [path]
    if args.engine == "vllm":
        from psdistill.scoring.vllm import score_with_vllm

        out = score_with_vllm(args.model, images, args.output, batch_size=args.batch_size,
                              on_bad_image=args.on_bad_image, overwrite=args.overwrite, coverage=args.coverage)
        if out is None:  # a serving rank of a multi-process launch: the main process writes the file
            return 0
    else:
        out = score_images(load_scorer(args.model), images, args.output, batch_size=args.batch_size or SCORE_BATCH_SIZE,
                           on_bad_image=args.on_bad_image, overwrite=args.overwrite, coverage=args.coverage)
    n = len(out.score if args.coverage else out)  # with coverage: Intervals(score, lo, hi)
    print(f"wrote {n} scores to {args.output}" + (f" with {args.coverage:g} intervals" if args.coverage else ""))
    return 0


def _plan(argv) -> int:
    from psdistill.models.budget import GPUS

    parser = argparse.ArgumentParser(prog="psdistill plan", description=(
        "Peak memory per device and time of the judge, distill and score stages of a config (no model is "
        "loaded); what would fit where a stage does not. Other arguments: --config and key=value overrides. "
        "Hardware not given: the config's '# hardware:' line, else 1 x H100-80GB. Exit status 1: a stage does not fit."))
    parser.add_argument("--gpu", default=None, help=f"one of {', '.join(GPUS)}")
    parser.add_argument("--gpus", type=int, default=None, help="GPUs (data-parallel ranks)")
    parser.add_argument("--gpu-memory", type=float, default=None, help="GB per GPU, overriding --gpu's")
    parser.add_argument("--zero-stage", type=int, default=None, help="DeepSpeed ZeRO stage of the launch (0: none)")
    args, rest = parser.parse_known_args(argv)
    from psdistill.core.config import parse_config
    from psdistill.pipeline import PipelineConfig
    from psdistill.pipeline.planner import HARDWARE, format_plan, plan, recipe_hardware

    config = next((rest[i + 1] for i, a in enumerate(rest[:-1]) if a in ("--config", "-c")), None)
    named = recipe_hardware(config) if config and os.path.isfile(config) and HARDWARE.search(open(config).read()) else {}
    hardware = {k: v if v is not None else named.get(k, default) for k, v, default in (
        ("gpu", args.gpu, "H100-80GB"), ("gpus", args.gpus, 1), ("zero_stage", args.zero_stage, 0))}
    stages = plan(parse_config(PipelineConfig, rest), gpu_memory=args.gpu_memory, **hardware)
    print(format_plan(stages, hardware["gpu"], hardware["gpus"]))
    return 0 if all(s.fits for s in stages) else 1


def _push(argv) -> int:
    parser = argparse.ArgumentParser(prog="psdistill push", description=(
        "Upload RUN/student (weights or adapter, processor, scorer_config.json, model card with the run's "
        "evaluation) to the Hub; checkpoints and trainer state stay local."))
    parser.add_argument("run", help="a pipeline run directory (or its student/)")
    parser.add_argument("repo_id", help="e.g. your-name/psdistill-paintings")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--dry-run", action="store_true", help="list what would be uploaded; contact nothing")
    args = parser.parse_args(argv)
    from psdistill.distill.push import push_student

    paths = push_student(args.run, args.repo_id, private=args.private, dry_run=args.dry_run)
    print(("would upload" if args.dry_run else f"uploaded to {args.repo_id}:") + " " + ", ".join(paths))
    return 0


def _export(argv) -> int:
    parser = argparse.ArgumentParser(prog="psdistill export", description=(
        "A finished run as datasets.Dataset folders (save_to_disk): OUT/images, one row per image with its "
        "pseudo-score and every scorer's predictions, and OUT/judgments; load_from_disk reads them, "
        "push_to_hub publishes them."))
    parser.add_argument("run", help="a pipeline run directory")
    parser.add_argument("-o", "--output", required=True, help="folder for images/ and judgments/")
    args = parser.parse_args(argv)
    from psdistill.pipeline.export import export_run

    for name, path in export_run(args.run, args.output).items():
        print(f"wrote {name}: {path}")
    return 0


FUSE_EPILOG = """\
ratings (one long CSV, or a folder of one CSV per expert, whose expert column may be left out: the
file name is then the expert):
    expert,image_id,dimension,score
preferences (the same choice of file or folder):
    expert,dimension,first_id,second_id,<outcome>
    <outcome> is one column: winner (first|second|tie), preferred (the preferred image's id, or tie)
    or p_first (P(first preferred) in [0, 1])
Missing ratings are absent rows or blank scores: no expert has to rate every image. An image is
placed by its preferences (within its category: preferences across categories are left out) and
put on the rating scale by the line fitted on the rated images; one without preferences gets no
fused score.

writes into OUT:
    ground_truth_anchored.csv  Bradley-Terry + line to the mean ratings, per category and dimension
    ground_truth_unified.csv   Thurstone scores and ratings in one likelihood
        (manifests: eval/protocol.py ppaint-cross --manifest OUT/ground_truth_unified.csv reads either)
    fused_scores.csv           category,dimension,image_id,anchored,unified,mean_rating,n_ratings,n_comparisons
    fuse_report.md/.json       agreement of the two (SRCC, PLCC, MAD), Kendall's W of the experts'
                               ratings and preferences, and per expert: rating SRCC with the
                               leave-one-out fused score, agreement with the other experts' majority
"""


def _fuse(argv) -> int:
    parser = argparse.ArgumentParser(
        prog="psdistill fuse", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=FUSE_EPILOG,
        description="Fuse expert ratings and preferences into PPaint-style ground truth (docs/method.md sec. 2).")
    parser.add_argument("--ratings", required=True, help="ratings CSV, or a folder of one CSV per expert")
    parser.add_argument("--preferences", required=True, help="preferences CSV, or a folder of one CSV per expert")
    images = parser.add_mutually_exclusive_group(required=True)
    images.add_argument("--images", help="PPaint image folder: <category>/<image_id>.<ext>")
    images.add_argument("--manifest", help="or a manifest CSV/JSONL naming each image's path, id and category")
    parser.add_argument("-o", "--out", required=True, help="output folder")
    parser.add_argument("--anchor", default="least_squares", help="the anchored construction's line: "
                        "least_squares (mean rating on score) or moments (mean and sd matched)")
    parser.add_argument("--alpha", type=float, default=0.0,
                        help="prior precision of the pooled fits (0: maximum likelihood, which does not exist when an "
                             "image never loses or never wins: then e.g. 0.1)")
    parser.add_argument("--expert-alpha", type=float, default=0.1,
                        help="prior precision of each expert's own fit, for Kendall's W of preferences")
    parser.add_argument("--rating-scale", type=float, nargs=2, metavar=("LOW", "HIGH"),
                        help="reject ratings outside [LOW, HIGH]")
    args = parser.parse_args(argv)
    from psdistill.data.loaders.expert_files import image_records, load_expert_files
    from psdistill.evaluation.ground_truth import FuseOptions, fuse_ground_truth

    options = FuseOptions(anchor=args.anchor, alpha=args.alpha, expert_alpha=args.expert_alpha)
    records = image_records(args.images, args.manifest)
    data = load_expert_files(records, args.ratings, args.preferences,
                             rating_scale=tuple(args.rating_scale) if args.rating_scale else None)
    fused = fuse_ground_truth(data, options)
    paths = fused.write(args.out)
    print(fused.to_markdown())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


# The commands with arguments of their own (the others take the pipeline's config).
OWN_PARSERS = {"export": _export, "launch": launch, "push": _push, "fuse": _fuse, "plan": _plan,
               "list-scorers": _list_scorers}


if __name__ == "__main__":
    sys.exit(main())
