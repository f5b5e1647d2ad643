"""One distill run in its own process(es), for the distributed and kill-and-resume tests.

    accelerate launch --config_file launch/cpu_ddp.yaml tests/_ddp_worker.py --data DIR --out DIR --steps 3

Reads the manifest and pseudo-scores the test wrote beforehand (no process writes shared inputs) and
trains the tiny student, by default with full fine-tuning (no dropout, so DDP ranks cannot diverge by
RNG); the tests compare the saved weights or the logged losses.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo, when launched as a script

from psdistill.data.manifest import read_manifest  # noqa: E402
from psdistill.distill import DistillConfig, train_student  # noqa: E402
from psdistill.models.loading import ModelConfig  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="folder with manifest.csv and pseudo.json")
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=4, help="per device")
    ap.add_argument("--accumulation", type=int, default=1)
    ap.add_argument("--save-steps", type=int, default=1000)
    ap.add_argument("--resume", default="last", help="distill.resume_from_checkpoint ('none': null)")
    ap.add_argument("--objective", default="ranking", help="distill.objective (grpo: 2 answers per image)")
    ap.add_argument("--prompt", default=DistillConfig.prompt, help="distill.prompt ({dimension} for several)")
    a = ap.parse_args()
    data = Path(a.data)
    records = read_manifest(data / "manifest.csv")
    pseudo = json.loads((data / "pseudo.json").read_text())
    cfg = DistillConfig(tuning="full", tune_vision=True, max_steps=a.steps, learning_rate=1e-3, warmup_ratio=0.0,
                        per_device_train_batch_size=a.batch, gradient_accumulation_steps=a.accumulation,
                        logging_steps=1, save_steps=a.save_steps, save_total_limit=None,
                        resume_from_checkpoint=None if a.resume == "none" else a.resume, report_to=["none"], prompt=a.prompt,
                        training_args={"disable_tqdm": True}, objective=a.objective, grpo={"num_generations": 2})
    try:
        train_student(records, pseudo, ModelConfig(), cfg, a.out)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()  # gloo may hang at interpreter exit otherwise


if __name__ == "__main__":
    main()
