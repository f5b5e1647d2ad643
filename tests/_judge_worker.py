"""A judging process for the kill-and-resume test (test_judge_vlm.py): the tiny VLM judges all
ordered pairs of the images in a folder.

    python tests/_judge_worker.py STORE IMAGE_DIR [--batch-size 2] [--start-when FILE]

Prints {"hits": ..., "computed": ..., "known": ...} as JSON when it finishes. The tests kill it
mid-run and resume on its store. `--start-when` makes it load everything, then wait
for FILE to exist before judging, so a test can start it early (imports take most of its time).
"""
import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from psdistill.data.records import ImageRecord  # noqa: E402
from psdistill.judge.cached import CachedJudge  # noqa: E402
from psdistill.judge.store import JudgmentStore  # noqa: E402


def make_judge():
    import torch

    from psdistill.judge.vlm import VLMJudge, VLMJudgeConfig
    from psdistill.models.loading import ModelConfig
    from psdistill.models.tiny import tiny_qwen3_vl

    torch.set_num_threads(1)  # the test machine's cores are shared
    model, processor = tiny_qwen3_vl(seed=0)
    return VLMJudge(model, processor, VLMJudgeConfig(batch_size=2), model_id=ModelConfig().model_id)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("store")
    ap.add_argument("images")
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--start-when", default=None)
    args = ap.parse_args()
    files = sorted(Path(args.images).iterdir())
    records = [ImageRecord(id=f.stem, path=str(f), scores={"overall": float(n)}) for n, f in enumerate(files)]
    pairs = [(a, b) for a in records for b in records if a is not b]
    judge = make_judge()
    while args.start_when and not Path(args.start_when).exists():
        time.sleep(0.01)
    judge = CachedJudge(judge, JudgmentStore(args.store), chunk_size=args.batch_size, progress=False)
    p = judge.prefer(pairs, "overall")
    print(json.dumps({"hits": judge.hits, "computed": judge.computed, "known": int(np.isfinite(p).sum())}))


if __name__ == "__main__":
    main()
