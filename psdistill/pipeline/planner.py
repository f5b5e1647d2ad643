"""`psdistill plan`: peak memory per device and time of the judge, distill and score stages of a config,
before any GPU is rented; what would fit when a stage does not (issue 28). (Not `plan.py`: the package
exports runner's `plan`, which a submodule of that name would shadow.)

    >>> from psdistill.core.config import parse_config
    >>> cfg = parse_config(PipelineConfig, ["--config", "recipes/configs/qwen3vl8b_1x80gb_lora.yaml"])  # doctest: +SKIP
    >>> print(format_plan(plan(cfg, gpu="H100-80GB")))                                                   # doctest: +SKIP

The numbers come from psdistill.models.budget (counted parameters and states, measured activations).
Times are per 1000 units: pair judgments (two orders count two), training images per epoch, scored images.
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from psdistill.core.errors import ConfigError
from psdistill.models import budget
from psdistill.models.budget import GIB, GPU, TrainSettings

CONFIGS = Path(__file__).resolve().parent.parent / "models" / "configs"
# Architectures the planner knows by hub name (a local folder's config.json works for any Qwen3-VL).
KNOWN = {"Qwen/Qwen3-VL-8B-Instruct": "qwen3_vl_8b.json", "Qwen/Qwen3-VL-8B-Thinking": "qwen3_vl_8b.json"}
# Text tokens besides the image: the distill/score prompt in the chat template (23 with the default prompt,
# eval/results/plan_8b.md), and a judging prompt with its criteria and both images' markers (the painting
# prompt set is ~150; rounded up).
PROMPT_TOKENS = 24
JUDGE_TEXT_TOKENS = 200
UNIT = 1000


@dataclass
class StagePlan:
    stage: str
    setting: str
    terms: dict          # bytes per device, by term (budget.train_memory / infer_memory)
    seconds: float       # per UNIT units
    unit: str
    usable: float        # bytes a device can hold
    suggestions: list = dataclasses.field(default_factory=list)

    @property
    def peak(self) -> float:
        return budget.peak_bytes(self.terms)

    @property
    def fits(self) -> bool:
        return self.peak <= self.usable


def arch_of(model_cfg) -> budget.Arch:
    name = model_cfg.name_or_path
    if name in KNOWN:
        return budget.qwen3_vl_arch(json.loads((CONFIGS / KNOWN[name]).read_text()))
    path = Path(name) / "config.json"
    if path.is_file():
        return budget.qwen3_vl_arch(json.loads(path.read_text()))
    if name == "tiny":
        from psdistill.models.tiny import tiny_qwen3_vl_config, tiny_tokenizer

        return budget.qwen3_vl_arch(tiny_qwen3_vl_config(len(tiny_tokenizer())).to_dict())
    raise ConfigError(f"model.name_or_path: the planner cannot size {name!r}: give a local folder with its "
                      f"config.json (known by name: {', '.join(KNOWN)})")


def plan(cfg, gpus: int = 1, gpu: str = "H100-80GB", gpu_memory: Optional[float] = None,
         zero_stage: int = 0) -> list[StagePlan]:
    """The judge, distill and score stages of PipelineConfig `cfg` on `gpus` GPUs of kind `gpu`
    (`gpu_memory` GB overrides its memory; its speed stays `gpu`'s)."""
    if gpus < 1:
        raise ConfigError(f"--gpus: must be >= 1, got {gpus}")
    if zero_stage not in (0, 1, 2, 3):
        raise ConfigError(f"--zero-stage: must be 0, 1, 2 or 3, got {zero_stage}")
    spec = budget.gpu_spec(gpu)
    usable = budget.usable_bytes(spec.memory_gib if gpu_memory is None else gpu_memory * 1e9 / GIB)
    arch = arch_of(cfg.model)
    if cfg.model.max_pixels is None:
        raise ConfigError("model.max_pixels: the planner sizes the largest image a run sees; set it "
                          "(e.g. 200704 for 448 x 448)")
    vision = budget.image_tokens(arch, cfg.model.max_pixels)
    stages = [_judge(arch, cfg, vision, spec, gpus, usable), _distill(arch, cfg, vision, spec, gpus, zero_stage, usable),
              _score(arch, cfg, vision, spec, gpus, usable)]
    for s in stages:
        if not s.fits:
            s.suggestions = _what_fits(arch, cfg, s, vision, spec, gpus, zero_stage, usable)
    return stages


def _judge(arch, cfg, vision, spec: GPU, gpus, usable, batch=None) -> StagePlan:
    batch = batch or cfg.judge.vlm.batch_size
    tokens = 2 * vision + JUDGE_TEXT_TOKENS
    return StagePlan("judge", f"{batch} pairs/forward, {tokens} tokens/pair", budget.infer_memory(arch, batch, tokens),
                     UNIT * budget.infer_seconds(arch, 1, tokens, 2 * vision, spec, gpus), "judgments", usable)


def _score(arch, cfg, vision, spec: GPU, gpus, usable, batch=None) -> StagePlan:
    batch = batch or cfg.distill.per_device_eval_batch_size
    tokens = vision + PROMPT_TOKENS
    return StagePlan("score", f"{batch} images/forward, {tokens} tokens/image", budget.infer_memory(arch, batch, tokens),
                     UNIT * budget.infer_seconds(arch, 1, tokens, vision, spec, gpus), "images", usable)


def train_settings(arch, cfg, vision, gpus, zero_stage) -> TrainSettings:
    d = cfg.distill
    targets = tuple(d.lora_target_modules) if d.lora_target_modules else budget.LANGUAGE_PROJECTIONS
    return TrainSettings(tuning=d.tuning, batch=d.per_device_train_batch_size, tokens=vision + PROMPT_TOKENS,
                         checkpointing=d.gradient_checkpointing, zero_stage=zero_stage, gpus=gpus, lora_r=d.lora_r,
                         lora_targets=targets, tune_vision=d.tune_vision)


def _distill(arch, cfg, vision, spec: GPU, gpus, zero_stage, usable, settings=None) -> StagePlan:
    s = settings or train_settings(arch, cfg, vision, gpus, zero_stage)
    setting = (f"{s.tuning}{f' r={s.lora_r}' if s.tuning != 'full' else ''}, batch {s.batch} x {s.tokens} tokens, "
               f"checkpointing {'on' if s.checkpointing else 'off'}"
               + (f", ZeRO-{s.zero_stage}" if s.zero_stage else "") + (f", {s.gpus} GPUs" if s.gpus > 1 else ""))
    return StagePlan("distill", setting, budget.train_memory(arch, s),
                     UNIT * budget.train_seconds(arch, s, 1, vision, spec), "images/epoch", usable)


def _what_fits(arch, cfg, stage: StagePlan, vision, spec, gpus, zero_stage, usable) -> list[str]:
    """The first two changes (in order of least disruption) that make `stage` fit."""
    out = []
    if stage.stage in ("judge", "score"):
        key = "judge.vlm.batch_size" if stage.stage == "judge" else "distill.per_device_eval_batch_size"
        build = _judge if stage.stage == "judge" else _score
        for batch in (32, 16, 8, 4, 2, 1):
            if build(arch, cfg, vision, spec, gpus, usable, batch).fits:
                return [f"{key}={batch}"]
        return ["the bf16 weights alone do not fit: a larger GPU"]
    s = train_settings(arch, cfg, vision, gpus, zero_stage)
    # Changes that keep the objective first: a smaller batch forms fewer in-batch pairs (gradient
    # accumulation keeps the images per step, not the pairs).
    candidates = []
    if not s.checkpointing:
        candidates.append(("distill.gradient_checkpointing=true", dict(checkpointing=True)))
    if s.tuning == "lora":
        candidates.append(("distill.tuning=qlora distill.gradient_checkpointing=true",
                           dict(tuning="qlora", checkpointing=True)))
    if s.tuning == "full" and s.zero_stage < 3:
        candidates.append((f"ZeRO-3 over {max(gpus, 8)} GPUs (launch/deepspeed_zero3.yaml), checkpointing on",
                           dict(zero_stage=3, gpus=max(gpus, 8), checkpointing=True)))
    for batch in (s.batch // 2, s.batch // 4, 2):
        if 2 <= batch < s.batch:
            accum = f" distill.gradient_accumulation_steps={cfg.distill.gradient_accumulation_steps * s.batch // batch}"
            candidates.append((f"distill.gradient_checkpointing=true distill.per_device_train_batch_size={batch}{accum}",
                               dict(checkpointing=True, batch=batch)))
    for text, change in candidates:
        if _distill(arch, cfg, vision, spec, gpus, zero_stage, usable, dataclasses.replace(s, **change)).fits:
            out.append(text)
            if len(out) == 2:
                break
    return out or ["nothing short of a larger GPU or more GPUs with ZeRO-3 (full) / QLoRA (LoRA)"]


HARDWARE = re.compile(r"^# hardware: (\d+) x (\S+?)(?:, ZeRO-(\d))?$", re.M)


def recipe_hardware(path) -> dict:
    """The `plan` arguments a recipe's '# hardware: N x GPU[, ZeRO-Z]' header line names."""
    match = HARDWARE.search(Path(path).read_text())
    if match is None:
        raise ConfigError(f"{path}: no '# hardware: N x GPU[, ZeRO-Z]' line to size it for")
    return dict(gpus=int(match[1]), gpu=match[2], zero_stage=int(match[3] or 0))


def recipe_plan_block(path) -> str:
    """The '# plan:' ... '# end plan' header block of a recipe: its plan on the hardware it names."""
    from psdistill.core.config import parse_config
    from psdistill.pipeline import PipelineConfig

    hardware = recipe_hardware(path)
    table = format_plan(plan(parse_config(PipelineConfig, ["--config", str(path)]), **hardware),
                        hardware["gpu"], hardware["gpus"])
    return "\n".join(["# plan:", *("#   " + line for line in table.splitlines()), "# end plan"])


COLUMNS = ("weights", "optimizer", "gradients", "activations", "kv_cache")


def format_plan(stages: list[StagePlan], gpu: str = "", gpus: int = 1) -> str:
    """The plan as a fixed-width table (GiB per device), one row per stage, then what would fit."""
    head = f"{'stage':8s} {'weights':>8s} {'optim':>7s} {'grads':>7s} {'activ':>7s} {'KV':>7s} {'peak':>7s} " \
           f"{'usable':>7s} {'fits':>4s} {'h/1000':>7s}  setting"
    lines = [f"per device, GiB{f' ({gpus} x {gpu})' if gpu else ''}; time: hours per 1000 units", head]
    for s in stages:
        cells = " ".join(f"{s.terms[k] / GIB:{7 if k != 'weights' else 8}.2f}" for k in COLUMNS)
        lines.append(f"{s.stage:8s} {cells} {s.peak / GIB:7.2f} {s.usable / GIB:7.2f} {'yes' if s.fits else 'NO':>4s} "
                     f"{s.seconds / 3600:7.3f}  {s.setting} ({s.unit})")
    for s in stages:
        if s.suggestions:
            lines.append(f"{s.stage} does not fit; would: " + " | ".join(s.suggestions))
    return "\n".join(lines)
