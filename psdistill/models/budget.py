"""Memory and time of a Qwen3-VL model's three GPU stages, from its config: the planner's numerics (issue 28).

Counted exactly: parameters (from the config; Qwen3-VL-8B: 8,767,123,696), LoRA parameters, their
gradients and AdamW states, the KV cache. Measured: activations, as bytes per token and per decoder layer,
fitted on the real 8B architecture at reduced depth on CPU (eval/bench_plan_8b.py, eval/results/plan_8b.md):
peak(L, T) = a + b T + L (c + d T) per sequence of T tokens, scaled here by the batch's sequences and by
the width relative to the 8B's (hidden + intermediate). Assumed (stated, not measured): bf16 weights and
compute, float32 LoRA matrices (peft's default), DeepSpeed's 12 bytes of fp32 master weights and AdamW
states per trainable parameter of full fine-tuning, and the share of the GPU's dense bf16 peak reached
(`MFU`). Time is FLOPs / (peak x share); data parallel ranks divide it evenly.
"""
from __future__ import annotations

from dataclasses import dataclass

from psdistill.core.errors import ConfigError

GIB = 2 ** 30


@dataclass(frozen=True)
class GPU:
    memory_gib: float  # what torch.cuda.mem_get_info reports as total, not the marketing GB
    bf16_tflops: float  # dense bf16 tensor-core peak (no sparsity), fp32 accumulate


GPUS = {
    "H100-80GB": GPU(79.1, 989.0),    # SXM
    "H200-141GB": GPU(139.8, 989.0),
    "A100-80GB": GPU(79.1, 312.0),
    "A100-40GB": GPU(39.4, 312.0),
    "L40S-48GB": GPU(44.4, 362.0),
    "RTX4090-24GB": GPU(23.6, 165.2),
}
# Not usable by tensors: the CUDA context, cuBLAS/NCCL workspaces (GiB), and the caching allocator's
# fragmentation (share of the rest).
RESERVED_GIB = 1.5
FRAGMENTATION = 0.05
# Share of the dense bf16 peak reached: prefill-heavy inference, LoRA/full training (the usual 35-45%
# for 7-8B models), QLoRA (the 4-bit dequantisation in every matmul).
MFU = {"infer": 0.45, "lora": 0.35, "full": 0.35, "qlora": 0.25}
# Activation fit on Qwen3-VL-8B (hidden 4096 + intermediate 12288), bf16, batch 1; (a, b, c, d) in bytes
# of peak(L, T) = a + b T + L (c + d T): eval/results/plan_8b.json (`fit`), copied by hand after each run
# of eval/bench_plan_8b.py (tests/test_plan.py checks the copy).
ACTIVATION_FIT = {
    "train": (-1.96062e+07, 314795, 1.08126e+07, 349666),
    "train_ckpt": (4.85642e+06, 542057, 5112, 8192),
    "infer": (-1.71929e+06, 329242, -6.12792e-08, 4096),
}
_FIT_WIDTH = 4096 + 12288
# 4-bit NF4 with double quantisation: 4 bits, an 8-bit absmax per 64 weights, a float32 one per 256 of those.
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)
LANGUAGE_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Arch:
    """Parameter counts of a Qwen3-VL config, by what the stages treat differently."""
    layers: int
    hidden: int
    intermediate: int
    kv_heads: int
    head_dim: int
    heads: int
    projections: dict  # language projection name -> (in, out), one layer
    text_linear: int   # language decoder Linear weights (what LoRA adapts and NF4 quantises)
    text_other: int    # decoder norms
    embed: int
    lm_head: int
    vision_linear: int  # vision blocks' and mergers' Linear weights (NF4 quantises them too)
    vision_other: int   # patch/position embeddings, norms, biases
    patch: int          # pixels per merged vision token, per side (patch size x merge size)

    @property
    def total(self) -> int:
        return self.text_linear + self.text_other + self.embed + self.lm_head + self.vision_linear + self.vision_other


def qwen3_vl_arch(config: dict) -> Arch:
    """`Arch` of a Qwen3-VL config.json (as a dict); ConfigError if it is not one."""
    try:
        t, v = config["text_config"], config["vision_config"]
        h, i, layers = t["hidden_size"], t["intermediate_size"], t["num_hidden_layers"]
        hd, nh, kv = t.get("head_dim", h // t["num_attention_heads"]), t["num_attention_heads"], t["num_key_value_heads"]
        vh, vi, depth = v["hidden_size"], v["intermediate_size"], v["depth"]
        merged = vh * v["spatial_merge_size"] ** 2
        mergers, patch, pos = 1 + len(v.get("deepstack_visual_indexes", [])), v["patch_size"], v["num_position_embeddings"]
        vocab, tied = t["vocab_size"], config.get("tie_word_embeddings", t.get("tie_word_embeddings", False))
        inputs = v.get("in_channels", 3) * v.get("temporal_patch_size", 2) * patch ** 2
        out = v["out_hidden_size"]
    except (KeyError, TypeError) as e:
        raise ConfigError(f"model: not a Qwen3-VL config (missing {e}); the planner sizes Qwen3-VL models") from None
    projections = dict(q_proj=(h, nh * hd), k_proj=(h, kv * hd), v_proj=(h, kv * hd), o_proj=(nh * hd, h),
                       gate_proj=(h, i), up_proj=(h, i), down_proj=(i, h))
    block_linear = vh * 3 * vh + vh * vh + 2 * vh * vi
    block_other = 3 * vh + vh + vi + vh + 4 * vh  # qkv, proj, fc1, fc2 biases; two LayerNorms
    # The main merger normalises the 1152-wide patches, the deepstack ones the merged 4608-wide vector.
    merger_linear = merged * merged + merged * out
    merger_other = mergers * (merged + out) + 2 * vh + (mergers - 1) * 2 * merged
    return Arch(
        layers=layers, hidden=h, intermediate=i, kv_heads=kv, head_dim=hd, heads=nh, projections=projections,
        text_linear=layers * sum(a * b for a, b in projections.values()), text_other=layers * (2 * h + 2 * hd) + h,
        embed=vocab * h, lm_head=0 if tied else vocab * h,
        vision_linear=depth * block_linear + mergers * merger_linear,
        vision_other=depth * block_other + merger_other + inputs * vh + vh + pos * vh,
        patch=patch * v["spatial_merge_size"])


def image_tokens(arch: Arch, max_pixels: int) -> int:
    """Merged vision tokens of an image at the processor's pixel bound (the worst case a run sees)."""
    return max(1, max_pixels // arch.patch ** 2)


@dataclass(frozen=True)
class TrainSettings:
    tuning: str = "lora"            # lora | qlora | full
    batch: int = 8                  # images per device per step
    tokens: int = 800               # tokens per image's sequence (image + prompt)
    checkpointing: bool = False
    zero_stage: int = 0             # DeepSpeed ZeRO stage (0: plain DDP / one GPU)
    gpus: int = 1
    lora_r: int = 16
    lora_targets: tuple = LANGUAGE_PROJECTIONS
    tune_vision: bool = False


def lora_params(arch: Arch, s: TrainSettings) -> int:
    per_layer = sum(s.lora_r * (a + b) for name, (a, b) in arch.projections.items() if name in s.lora_targets)
    return arch.layers * per_layer


def weight_bytes(arch: Arch, tuning: str) -> float:
    """The base model's weights: bf16, or NF4 for every Linear but lm_head under QLoRA."""
    linear = arch.text_linear + arch.vision_linear
    return (linear * (NF4_BYTES if tuning == "qlora" else 2.0)) + 2.0 * (arch.total - linear)


def activations(arch: Arch, mode: str, layers: int, sequences: int, tokens: int) -> float:
    """Peak activation bytes of `sequences` sequences of `tokens` tokens through `layers` decoder layers,
    from the measured fit (scaled by width)."""
    a, b, c, d = ACTIVATION_FIT[mode]
    scale = (arch.hidden + arch.intermediate) / _FIT_WIDTH
    return scale * (a + layers * c + sequences * tokens * (b + layers * d))


def kv_cache_bytes(arch: Arch, sequences: int, tokens: int) -> float:
    return 2 * arch.layers * arch.kv_heads * arch.head_dim * 2.0 * sequences * tokens


def train_memory(arch: Arch, s: TrainSettings) -> dict:
    """Peak bytes per device of one training step, by term."""
    n = max(s.gpus, 1)
    weights = weight_bytes(arch, s.tuning)
    if s.tuning == "full":
        trainable = arch.total - arch.lm_head - (0 if s.tune_vision else arch.vision_linear + arch.vision_other)
        grads, states = 2.0 * trainable, 12.0 * trainable  # bf16 gradients; fp32 master + AdamW m, v
        if s.zero_stage >= 1:
            states /= n
        if s.zero_stage >= 2:
            grads /= n
        if s.zero_stage >= 3:
            # Sharded, plus the layers gathered at a time (DeepSpeed prefetches about two).
            weights = weights / n + 2 * 2.0 * arch.text_linear / arch.layers
    else:
        trainable = lora_params(arch, s)
        grads, states = 4.0 * trainable, 12.0 * trainable  # fp32 adapter: gradient; weight copy in optimizer + m, v
    acts = activations(arch, "train_ckpt" if s.checkpointing else "train", arch.layers, s.batch, s.tokens)
    if s.tuning == "qlora":  # one projection dequantised to bf16 at a time
        acts += 2.0 * max(a * b for a, b in arch.projections.values())
    return dict(weights=weights, trainable=float(trainable), optimizer=states, gradients=grads, activations=acts,
                kv_cache=0.0)


def infer_memory(arch: Arch, sequences: int, tokens: int) -> dict:
    """Peak bytes per device of one forward (judge or scorer): bf16 weights, KV cache, activations."""
    total = activations(arch, "infer", arch.layers, sequences, tokens)
    kv = kv_cache_bytes(arch, sequences, tokens)
    return dict(weights=weight_bytes(arch, "lora"), trainable=0.0, optimizer=0.0, gradients=0.0,
                activations=max(total - kv, 0.0), kv_cache=kv)


def peak_bytes(terms: dict) -> float:
    return sum(v for k, v in terms.items() if k != "trainable")


def usable_bytes(memory_gib: float) -> float:
    if not memory_gib > 0:
        raise ConfigError(f"--gpu-memory: must be > 0 GB, got {memory_gib}")
    return max(memory_gib - RESERVED_GIB, 0.0) * (1 - FRAGMENTATION) * GIB


def forward_flops(arch: Arch, tokens: int, vision_tokens: int) -> float:
    """FLOPs of one sequence's forward: 2 per decoder Linear weight and token (not the embedding lookup nor,
    with logits_to_keep=1, lm_head), causal attention, the vision tower (4 patches per merged token through
    every block; the mergers counted at patch rate too, a slight overcount)."""
    attention = 2 * arch.layers * arch.heads * arch.head_dim * tokens ** 2  # QK^T and AV, causal half
    return 2.0 * arch.text_linear * tokens + attention + 2.0 * arch.vision_linear * 4 * vision_tokens


def train_seconds(arch: Arch, s: TrainSettings, images: int, vision_tokens: int, gpu: GPU) -> float:
    """Seconds for one epoch over `images` images on `s.gpus` GPUs."""
    text = 2.0 * arch.text_linear * s.tokens
    # forward; backward through the text layers (input gradients; weight gradients too under full);
    # the checkpointed forward again. The frozen vision tower runs forward only.
    passes = 1 + (2 if s.tuning == "full" else 1) + (1 if s.checkpointing else 0)
    per_image = forward_flops(arch, s.tokens, vision_tokens) + (passes - 1) * text
    return images * per_image / (gpu.bf16_tflops * 1e12 * MFU[s.tuning] * max(s.gpus, 1))


def infer_seconds(arch: Arch, sequences: int, tokens: int, vision_tokens: int, gpu: GPU, gpus: int) -> float:
    return sequences * forward_flops(arch, tokens, vision_tokens) / (gpu.bf16_tflops * 1e12 * MFU["infer"] * max(gpus, 1))


def gpu_spec(name: str) -> GPU:
    key = name.replace(" ", "").upper()
    for known, spec in GPUS.items():
        if known.upper() == key or known.split("-")[0].upper() == key:
            if known.startswith("A100") and key == "A100":
                raise ConfigError("--gpu: 'A100' is two cards; say A100-80GB or A100-40GB")
            return spec
    raise ConfigError(f"--gpu: unknown GPU {name!r}; known: {', '.join(GPUS)} (or give --gpu-memory GB)")
