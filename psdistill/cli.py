"""`psdistill` command line: one subcommand per pipeline stage, plus `run`, `demo` and `score`.

    psdistill demo                                   # the whole pipeline on the embedded demo
    psdistill run --config recipes/configs/qwen3vl8b.yaml data.manifest=/data/paintings/manifest.csv
    psdistill judge --config my.yaml                 # runs data + judge (reusing what is done)
    psdistill eval --config my.yaml                  # `evaluate` (every stage up to it)
    psdistill score --model runs/demo/student a.jpg b.jpg -o scores.csv
    psdistill list-scorers

User errors (bad config value, missing image, malformed CSV row) print one line naming the key,
file or row and exit with status 2; finished stages stay finished.
"""
from __future__ import annotations

import argparse
import os
import sys

from psdistill.errors import PsdistillError

DEMO_CONFIG = os.path.join(os.path.dirname(__file__), "configs", "demo.yaml")
ALIASES = {"eval": "evaluate"}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        return _dispatch(argv)
    except PsdistillError as e:
        print(f"psdistill: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("psdistill: interrupted; finished work is kept, rerun the same command to resume", file=sys.stderr)
        return 130


def _dispatch(argv) -> int:
    from psdistill.pipeline import STAGE_NAMES

    commands = ("run", "demo", *STAGE_NAMES, *ALIASES, "score", "list-scorers")
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        print(__doc__.strip())
        print("\ncommands: " + ", ".join(commands))
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    command, rest = ALIASES.get(argv[0], argv[0]), argv[1:]
    if command == "score":
        return _score(rest)
    if command == "list-scorers":
        from psdistill.registry import list_scorers

        for name, desc in list_scorers().items():
            print(f"{name:20s} {desc}")
        return 0
    from psdistill.config import parse_config
    from psdistill.pipeline import PipelineConfig, print_report, run_pipeline

    if command == "demo" and not any(a in ("--config", "-c") or a.startswith("--config=") for a in rest):
        rest = ["--config", DEMO_CONFIG] + rest
    cfg = parse_config(PipelineConfig, rest)
    results = run_pipeline(cfg, stop_after=None if command in ("run", "demo") else command)
    if os.environ.get("RANK", "0") == "0":
        print_report(cfg, results)
    return 0


def _score(argv) -> int:
    parser = argparse.ArgumentParser(prog="psdistill score", description="Score images with a trained scorer.")
    parser.add_argument("--model", required=True, help="a run directory or a student directory")
    parser.add_argument("images", nargs="+")
    parser.add_argument("-o", "--output", default="scores.csv")
    parser.add_argument("--batch-size", type=int, default=None, help="images per forward pass (default: 16)")
    args = parser.parse_args(argv)
    from psdistill.distill import StudentScorer, score_images
    from psdistill.distill.scorer import SCORE_BATCH_SIZE

    scorer = StudentScorer.from_pretrained(args.model)
    out = score_images(scorer, args.images, args.output, batch_size=args.batch_size or SCORE_BATCH_SIZE)
    print(f"wrote {len(out)} scores to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
