r"""Fine-tune an image generator with a psdistill scorer as the reward (DRaFT-K / AlignProp): the reward's
gradient flows back through the last K DDIM steps into a LoRA adapter on the UNet (peft).

    .venv/bin/python recipes/reward_finetune.py                                   # the CPU demo, minutes
    .venv/bin/python recipes/reward_finetune.py scorer=runs/demo train.max_steps=60 run_dir=runs/draft60
    .venv/bin/python recipes/reward_finetune.py --config my.yaml generator.model=google/ddpm-celebahq-256 \
        scorer=runs/paintings device=cuda train.gradient_checkpointing=true
    .venv/bin/python recipes/reward_finetune.py generator.model=tiny-sd generator.guidance_scale=3 \
        "train.prompts=[a red barn at dusk, a calm blue lake]" run_dir=runs/draft_t2i   # text-to-image
    .venv/bin/python recipes/reward_finetune.py generator.model=stable-diffusion-v1-5/stable-diffusion-v1-5 \
        train.prompts_file=prompts.txt eval.prompts_file=heldout.txt generator.guidance_scale=7.5 \
        scorer=runs/paintings device=cuda train.gradient_checkpointing=true

Needs the `generate` extra (diffusers): pip install 'psdistill[generate]' (setup.sh installs it).
With no scorer it first trains the demo's student into <run_dir>/demo (the distill demo up to its distill
stage, ~1 minute on a laptop) and uses it. The default generator is "tiny", a random UNet2DModel built
locally (64 px, 8 DDIM steps); "tiny-sd" is a random Stable-Diffusion-style text-to-image one. With
weights, generator.model takes an unconditional pixel-space pipeline (hub id or folder with unet/ and
scheduler/, e.g. google/ddpm-cifar10-32) or a Stable-Diffusion-style latent one (unet/, vae/,
text_encoder/, tokenizer/, scheduler/); a text-to-image model needs training prompts (train.prompts or
train.prompts_file, one a line) and takes held-out ones (eval.prompts*) and generator.guidance_scale
(classifier-free guidance, 1: none). Outputs in run_dir: lora/ (the adapter, peft format), metrics.jsonl
(per step: the training reward and loss; on held-out steps the reward on fixed (prompt,) seed pairs, the
second scorer's score, the diversity), reward_curve.png, checkpoints/. Rerun the same command to resume.
Over-optimisation (a scorer is easy to game) shows as the reward rising while the second scorer falls or
the diversity collapses: train.kl_weight / train.image_weight penalise it, train.early_stop_* stop on it.
"""
import dataclasses
import sys
from pathlib import Path

from psdistill.core.logs import get_logger, progress_bars_as_asked, report_printer, run_logging, split_verbosity

progress_bars_as_asked(sys.argv[1:])  # before the imports below bring tqdm in

from psdistill.cli.launch import exit_status  # noqa: E402
from psdistill.core.config import parse_config  # noqa: E402
from psdistill.core.config_help import config_help, wants_help  # noqa: E402
from psdistill.generation import RewardFinetuneConfig, finetune  # noqa: E402


def demo_scorer(run_dir: Path, log) -> str:
    """The distill demo (psdistill/pipeline/configs/demo.yaml) up to its student, in <run_dir>/demo."""
    from psdistill.cli import DEMO_CONFIG
    from psdistill.pipeline import PipelineConfig, run_pipeline

    demo = run_dir / "demo"
    log(f"no scorer given: training the demo's student in {demo}")
    run_pipeline(parse_config(PipelineConfig, ["--config", DEMO_CONFIG, f"run_dir={demo}"]), stop_after="distill",
                 log=log)
    return str(demo)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if wants_help(argv):
        print(config_help(RewardFinetuneConfig, __doc__))
        return 0
    verbosity, argv = split_verbosity(argv)

    def run() -> int:
        cfg = parse_config(RewardFinetuneConfig, argv)
        log = get_logger("reward_finetune")
        with run_logging(cfg.run_dir, verbosity):
            if cfg.scorer is None:
                cfg = dataclasses.replace(cfg, scorer=demo_scorer(Path(cfg.run_dir), log.info))
            result = finetune(cfg, log=log.info)
            out = report_printer(log)
            for line in result["summary"] + [f"LoRA: {result['lora']}", f"metrics: {result['metrics']}", f"plot: {result['plot']}"]:
                out(line)
        return 0

    return exit_status(run, prog="reward_finetune")


if __name__ == "__main__":
    sys.exit(main())
