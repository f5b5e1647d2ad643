"""Where inference models live: the process's accelerator, in the configured dtype.

One rule for every model that only scores or judges (the VLM judge, the pointwise teacher, the
student scorer): each process of an `accelerate launch` uses its own device
(`PartialState().device`: cuda:<local rank>, mps, or cpu), and `dtype: auto` means bfloat16 where
the GPU supports it, float16 on older GPUs and float32 on CPU (where bf16 matmuls are slow). A
model loaded with `device_map` has been dispatched by accelerate already and is left where it is.
Training models are placed by the Trainer instead.
"""
from __future__ import annotations

import os
from typing import Optional

import torch

# The one table of dtype names (model.dtype, CLI flags) to torch dtypes; "auto" is resolved where used.
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_NAMES = ("auto", *DTYPES)


def process_state():
    """accelerate's `PartialState` with the real world size also on CPU.

    Without `cpu=True`, on a machine without an accelerator `PartialState()` reports one process in
    every rank of a multi-process launch (measured: each rank then runs every stage), while with it
    the ranks form one gloo group with one main process.
    """
    from accelerate import PartialState

    return PartialState(cpu=not (torch.cuda.is_available() or _mps()))


def main_process_only(action) -> None:
    """`action()` on the main process only; under a multi-process launch the other ranks wait until it is done."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        action()
        return
    state = process_state()
    if state.is_main_process:
        action()
    state.wait_for_everyone()


def process_device() -> torch.device:
    return process_state().device


def pretrained_dtype(name: str) -> torch.dtype | str:
    """`from_pretrained(dtype=...)` for a dtype name: "auto" (the checkpoint's own dtype) or a torch dtype."""
    return name if name == "auto" else DTYPES[name]


def inference_dtype(name: str, device: torch.device) -> torch.dtype:
    """The dtype for `name` ('auto' or one of DTYPES) on `device`."""
    if name != "auto":
        return DTYPES[name]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def place_for_inference(model, dtype: str = "auto", device: Optional[str | torch.device] = None,
                        dispatched: bool = False):
    """`model` in eval mode on `device` (default: this process's) in `inference_dtype(dtype)`."""
    if dispatched and device is None:
        return model.eval()
    device = torch.device(device) if device is not None else process_device()
    return model.to(device=device, dtype=inference_dtype(dtype, device)).eval()


def _mps() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
