"""Distributed training on CPU: 2-process DDP (gloo) equals one process with the same global batch
(one dimension and two), and a 2-process DeepSpeed ZeRO-2 run completes with the same weights; GRPO runs
complete under both."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from _distill_common import ladder_records, pseudo_scores
from psdistill.data.manifest import read_manifest, write_manifest

REPO = Path(__file__).resolve().parents[1]
WORKER = str(REPO / "tests" / "_ddp_worker.py")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    records = ladder_records(root, photos=("astronaut", "camera", "coffee", "chelsea"), levels=4)
    write_manifest(records, root / "manifest.csv")
    (root / "pseudo.json").write_text(json.dumps(pseudo_scores(records)))
    return root


@pytest.fixture(scope="module")
def single(data, tmp_path_factory):
    # One process, batch 4 accumulated twice: the same 8 images per optimizer step as 2 ranks x 4.
    out = tmp_path_factory.mktemp("single") / "run"
    subprocess.run([sys.executable, WORKER, "--data", str(data), "--out", str(out), "--steps", "3",
                    "--batch", "4", "--accumulation", "2"], check=True, capture_output=True,
                   env={**os.environ, "WORLD_SIZE": "1"})
    return load_file(out / "model.safetensors")


def _launch(config, data, out, port, env=None, extra=()):
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(REPO / "launch" / config),
           "--main_process_port", str(port), WORKER, "--data", str(data), "--out", str(out), "--steps", "3",
           "--batch", "4", *extra]
    try:
        run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=230,
                             env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired as e:  # show where the ranks stopped instead of only the timeout
        raise AssertionError(f"{config} timed out; stderr tail:\n{(e.stderr or b'')[-3000:]!r}") from None
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def _max_diff(a, b):
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_two_process_ddp_matches_one_process_with_the_same_global_batch(data, single, tmp_path, free_port):
    _launch("cpu_ddp.yaml", data, tmp_path / "ddp", free_port)
    ddp = load_file(tmp_path / "ddp" / "model.safetensors")
    history = json.loads((tmp_path / "ddp" / "trainer_state.json").read_text())["log_history"]
    assert [h["step"] for h in history if "loss" in h] == [1, 2, 3]
    from psdistill.models.tiny import tiny_qwen3_vl

    start = {k: v for k, v in tiny_qwen3_vl()[0].state_dict().items() if k in ddp}
    assert _max_diff(single, start) > 1e-3  # the weights moved...
    # ...and the same way in both runs: ranks training alone (batch 4 each, no all-reduce) would not
    # match one process accumulating two batches of 4.
    assert _max_diff(ddp, single) < 1e-5


def test_two_process_deepspeed_zero2_completes(data, single, tmp_path, free_port):
    pytest.importorskip("deepspeed")
    # DeepSpeed JIT-compiles its CPU shared-memory op under a lock file in TORCH_EXTENSIONS_DIR; a build killed
    # midway elsewhere leaves that lock behind and every later run waits on it forever (seen in CI), so this
    # run builds in a directory of its own.
    _launch("cpu_deepspeed_zero2.yaml", data, tmp_path / "ds", free_port,
            env={"TORCH_EXTENSIONS_DIR": str(tmp_path / "torch_extensions")})
    ds = load_file(tmp_path / "ds" / "model.safetensors")
    assert all(torch.isfinite(v).all() for v in ds.values())
    assert _max_diff(ds, single) < 1e-5


@pytest.mark.parametrize("config", ["cpu_ddp.yaml", "cpu_deepspeed_zero2.yaml"])
def test_two_process_grpo_completes_with_a_finite_kl(data, tmp_path, config, free_port):
    # Each rank samples its own answers, so the weights are not compared with one process; the run must
    # finish all steps, log a finite KL, and move the weights.
    if "deepspeed" in config:
        pytest.importorskip("deepspeed")
    _launch(config, data, tmp_path / "run", free_port, env={"TORCH_EXTENSIONS_DIR": str(tmp_path / "torch_extensions")},
            extra=("--objective", "grpo"))
    history = json.loads((tmp_path / "run" / "trainer_state.json").read_text())["log_history"]
    assert [h["step"] for h in history if "kl" in h] == [1, 2, 3]
    assert all(math.isfinite(h["kl"]) for h in history if "kl" in h)
    weights = load_file(tmp_path / "run" / "model.safetensors")
    from psdistill.models.tiny import tiny_qwen3_vl

    start = {k: v for k, v in tiny_qwen3_vl()[0].state_dict().items() if k in weights}
    assert all(torch.isfinite(v).all() for v in weights.values()) and _max_diff(weights, start) > 1e-4
    assert (tmp_path / "run" / "scorer_config.json").is_file()


def test_two_process_ddp_trains_several_dimensions_as_one_process(data, tmp_path, free_port):
    # Two dimensions, the second ordering the images the other way: one student, the image prefix's KV cache
    # shared by both prompts' suffixes, several forward calls before one backward under DDP.
    pseudo = json.loads((data / "pseudo.json").read_text())["overall"]
    both = tmp_path / "data"
    both.mkdir()
    write_manifest(read_manifest(data / "manifest.csv"), both / "manifest.csv")  # its image paths, rewritten
    (both / "pseudo.json").write_text(json.dumps({"overall": pseudo,
                                                  "color": {k: [-m, v] for k, (m, v) in pseudo.items()}}))
    prompt = ["--prompt", "Rate the {dimension} of this image. Answer with one word."]
    subprocess.run([sys.executable, WORKER, "--data", str(both), "--out", str(tmp_path / "one"), "--steps", "3",
                    "--batch", "4", "--accumulation", "2", *prompt], check=True, capture_output=True,
                   env={**os.environ, "WORLD_SIZE": "1"})
    _launch("cpu_ddp.yaml", both, tmp_path / "ddp", free_port, extra=prompt)
    one, ddp = (load_file(tmp_path / d / "model.safetensors") for d in ("one", "ddp"))
    from psdistill.models.tiny import tiny_qwen3_vl

    assert _max_diff(one, {k: v for k, v in tiny_qwen3_vl()[0].state_dict().items() if k in one}) > 1e-3  # trained
    assert _max_diff(ddp, one) < 1e-5
