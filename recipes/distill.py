r"""PSDistill end to end: judge -> pseudo-scores -> distill -> score -> evaluate.

    accelerate launch recipes/distill.py                                   # embedded demo, CPU, minutes
    accelerate launch recipes/distill.py distill.max_steps=100 run_dir=runs/demo100      # the demo, overridden
    accelerate launch --config_file launch/ddp.yaml recipes/distill.py --config recipes/configs/qwen3vl8b.yaml \
        data.manifest=/data/paintings/manifest.csv data.train_categories=[landscape]

With no --config it runs the embedded default (psdistill/pipeline/configs/demo.yaml): the demo data set built from scikit-image's photos,
a tiny random-weight Qwen3-VL, and the SIMULATED judge (a noisy oracle on the demo's known
degradation order), so every stage runs on a laptop without weights. Rerun the same command to
reuse finished stages; a killed run resumes. A user error is one line (exit status 2), which
`accelerate launch` follows with a traceback of its own; `psdistill launch` (the same arguments)
prints it last.
"""
import sys

from psdistill.cli import DEMO_CONFIG, demo_help, main
from psdistill.core.config_help import wants_help

if __name__ == "__main__":
    argv = sys.argv[1:]
    if wants_help(argv):
        print(demo_help(__doc__))  # without --config this recipe runs the demo: its values beside the defaults
        sys.exit(0)
    if not any(a in ("--config", "-c") or a.startswith("--config=") for a in argv):
        argv = ["--config", DEMO_CONFIG] + argv
    sys.exit(main(["run"] + argv))
