"""A saved tiny run in seconds: a 2-step LoRA student on the tiny random-weight Qwen3-VL, in
<out>/student, and the images it was trained on in <out>/images. Used by tests/test_scorer_api.py
and by the no-[dev] install check of .ci/run (so it needs only the core dependencies).

    python tests/make_tiny_run.py /tmp/tiny_run
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _distill_common, when run as a script

from _distill_common import ladder_records, pseudo_scores  # noqa: E402


def make_tiny_run(out) -> Path:
    from psdistill.distill import DistillConfig, train_student
    from psdistill.models.loading import ModelConfig

    out = Path(out)
    records = ladder_records(out / "images", photos=("astronaut", "coffee"), levels=3)
    cfg = DistillConfig(max_steps=2, eval_steps=2, save_steps=2, per_device_train_batch_size=2, learning_rate=5e-3,
                        report_to=["none"], training_args={"disable_tqdm": True})
    train_student(records, pseudo_scores(records), ModelConfig(), cfg, out / "student", rating_scale=(1.0, 5.0))
    return out


if __name__ == "__main__":
    print(make_tiny_run(sys.argv[1]))
