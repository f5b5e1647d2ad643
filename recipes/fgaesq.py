"""FGAesQ baseline (Yang et al., "Fine-grained Image Aesthetic Assessment: Learning Discriminative
Scores from Relative Ranks"): train, then score every image and compute the paper's metrics.

    accelerate launch recipes/fgaesq.py                                              # the demo, CPU, minutes
    accelerate launch recipes/fgaesq.py --config recipes/configs/fgaesq_demo.yaml loss.ctalign=false
    accelerate launch --config_file launch/ddp.yaml recipes/fgaesq.py --config recipes/configs/fgaesq.yaml \
        data.manifest=<manifest.csv> data.train_categories=[...]

With no --config it runs recipes/configs/fgaesq_demo.yaml: the embedded demo (scikit-image photos
under degradation ladders, built under <run_dir>/demo) with a tiny random-weight CLIP. It runs
`psdistill.pipeline.fgaesq.run_fgaesq` on the stage runner: data, train, score, evaluate. Output in run_dir:
checkpoint/ (config.json + model.safetensors), config.yaml, predictions/fgaesq*.csv, report/
(metrics.json, report.md, plots; the test split is the held-out group), stages/<stage>.json.
Rerunning reuses every finished stage with the same config; a killed run resumes from its last
finished epoch; a checkpoint trained with another config or data is kept unless overwrite=true.
Under 2 CPU processes (`--config_file launch/cpu_ddp.yaml`) training is data-parallel over gloo.
Messages go to the console (-q/--quiet: warnings only; -v/--verbose: everything) and to
<run_dir>/logs/run.log; the report is printed last. Ablations (paper Tab. 5): difftoken.enabled=false, loss.ctalign=false, loss.rank=direct (w/o
RankReg) or none, loss.emd=false (w/o Coarse).
"""
import sys
from pathlib import Path

from psdistill.core.logs import get_logger, progress_bars_as_asked, report_printer, run_logging, split_verbosity

progress_bars_as_asked(sys.argv[1:])  # before the imports below bring tqdm in

from psdistill.baselines.fgaesq.config import FGAesQConfig  # noqa: E402
from psdistill.core.config import parse_config  # noqa: E402
from psdistill.core.config_help import config_help, wants_help  # noqa: E402
from psdistill.cli.launch import exit_status  # noqa: E402
from psdistill.pipeline.fgaesq import run_fgaesq  # noqa: E402

DEMO_CONFIG = Path(__file__).resolve().parent / "configs" / "fgaesq_demo.yaml"


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if wants_help(argv):
        print(config_help(FGAesQConfig, __doc__))
        return 0
    verbosity, argv = split_verbosity(argv)
    if not any(a in ("--config", "-c") or a.startswith("--config=") for a in argv):
        argv = ["--config", str(DEMO_CONFIG)] + argv

    def run() -> int:
        cfg = parse_config(FGAesQConfig, argv)
        log = get_logger("fgaesq")
        with run_logging(cfg.run_dir, verbosity):
            run_fgaesq(cfg, log=log.info, report=report_printer(log))
        return 0

    return exit_status(run, prog="fgaesq")


if __name__ == "__main__":
    sys.exit(main())
