"""Pieces shared by the eval/bench_*.py scripts: model and runtime arguments, random test images,
a random-weight Qwen3-VL of a given architecture, timing, peak memory, and the markdown report
(environment header lines, the command, printing and writing).

The scripts put this folder and the repository root on sys.path, so `import _bench_common` works
both when a script runs as `python eval/bench_judge.py` and when it is imported from elsewhere.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def add_model_args(ap: argparse.ArgumentParser) -> None:
    """--model and --config-json: the model under test."""
    from psdistill.models.loading import TINY

    ap.add_argument("--model", default=TINY, help="hub id, local folder, or 'tiny' (random-weight Qwen3-VL)")
    ap.add_argument("--config-json", default=None, help="build this architecture with random weights instead")


def add_runtime_args(ap: argparse.ArgumentParser) -> None:
    """--dtype, --device and --threads (applied by `parse_args`)."""
    from psdistill.models.device import DTYPE_NAMES

    ap.add_argument("--dtype", default="float32", choices=list(DTYPE_NAMES))
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")


def parse_args(ap: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """ap.parse_args(argv), then torch's CPU threads set to --threads when that is given."""
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def random_qwen3_vl(config_json: str, image_size: int, dtype, device: str | None = None, seed: int | None = None):
    """(model, processor): `config_json`'s architecture with random weights, and the tiny model's
    processor for `image_size` (its special-token ids patched into the config). `seed`: torch's
    seed before the weights are drawn; `device`: where they are created (default: torch's)."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    from psdistill.models.tiny import tiny_qwen3_vl_processor

    processor = tiny_qwen3_vl_processor(image_size)
    data = json.loads(Path(config_json).read_text())
    data.pop("_comment", None)
    tok = processor.tokenizer
    for key, token in [("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
                       ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>")]:
        data[key] = tok.convert_tokens_to_ids(token)
    if seed is not None:
        torch.manual_seed(seed)
    with torch.device(device) if device is not None else contextlib.nullcontext():
        model = Qwen3VLForConditionalGeneration._from_config(Qwen3VLConfig.from_dict(data), dtype=dtype)
    return model, processor


def random_image_records(folder: Path, n: int, image_size: int, rng: np.random.Generator) -> list:
    """`n` random-noise PNGs in `folder`, sides drawn over 0.6-1.4x `image_size`, as ImageRecords."""
    from psdistill.data.records import ImageRecord

    records = []
    for k in range(n):
        w, h = (image_size * rng.uniform(0.6, 1.4, 2)).astype(int)
        path = Path(folder) / f"img{k:03d}.png"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
        records.append(ImageRecord(id=path.stem, path=str(path)))
    return records


def timed(fn, repeats: int, setup=None):
    """(result, best seconds) over `repeats` calls of fn(); the minimum is the least disturbed run.
    With `setup`, each call is fn(setup()), setup() run before the clock starts."""
    best = float("inf")
    for _ in range(repeats):
        arg = setup() if setup is not None else None
        start = time.perf_counter()
        result = fn(arg) if setup is not None else fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return result, best


def peak_rss_mb() -> float:
    """The process's peak resident set size so far, in MiB (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def device_name(device: str) -> str:
    """The GPU's name for a CUDA device, else the CPU model from /proc/cpuinfo."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "cpu"


def package_version(name: str) -> str:
    """The imported module's __version__, else the installed distribution's, else 'not installed'."""
    from importlib.metadata import PackageNotFoundError, version

    module = sys.modules.get(name)
    if getattr(module, "__version__", None):
        return module.__version__
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def environment_lines(device: str, packages=("transformers",)) -> list[str]:
    """The report's bullet lines on when and where it ran: date, device, torch threads; versions."""
    return [
        f"- date: {datetime.date.today().isoformat()}; device: {device} ({device_name(device)}), "
        f"torch threads: {torch.get_num_threads()}",
        ", ".join([f"- python {platform.python_version()}", f"torch {torch.__version__}",
                   *(f"{p} {package_version(p)}" for p in packages)]),
    ]


def command_line(script: str, argv=None) -> str:
    """The report's line with the command that produced it (`argv` None: this process's arguments)."""
    return f"- command: `{' '.join(['python', script, *(sys.argv[1:] if argv is None else argv)])}`"


def write_report(lines: list[str], out: str | None, append: bool = False) -> str:
    """Print the report (lines joined, newline-terminated) and write it to `out` when given (its
    folder created; `append`: added to the end of the file, followed by a blank line). Returns the text."""
    text = "\n".join(lines) + "\n"
    print(text)
    if out:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        if append:
            with open(out, "a") as f:
                f.write(text + "\n")
        else:
            out.write_text(text)
    return text
