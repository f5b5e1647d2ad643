"""The judges a run can use: one table, kind -> how to build it, with the config section it reads.

    judge = build_judge(cfg.judge, cfg.model)        # the configured judge, its model on this process
    JUDGES["vlm"].identity(cfg.judge, cfg.model)     # how its judgments are keyed in the store

Everything that depends on the judge's kind (the pipeline's stages, the readout check before a run,
the run directory's identity, the teacher anchor) asks its entry here; no other code compares
`judge.kind`. To add a judge: one module with the judge (the `psdistill.judge.base.Judge` protocol)
and its config dataclass, plus one entry below. `JudgeConfig` gets a section for the new config by
itself; several kinds may share one section (vlm and vllm read the same prompts).
"""
from __future__ import annotations

from dataclasses import dataclass, field, make_dataclass
from typing import Callable, Literal, Optional, Sequence

from psdistill.core.errors import ConfigError
from psdistill.judge.simulated import SimulatedJudge, SimulatedJudgeConfig
from psdistill.judge.vlm import VLMJudgeConfig
from psdistill.models.loading import ModelConfig


@dataclass(frozen=True)
class JudgeEntry:
    description: str  # for `judge.kind`'s help
    section: str  # the JudgeConfig field holding this judge's settings
    config: type  # that section's dataclass
    build: Callable  # build(section, model_cfg) -> a Judge on this process's device
    identity: Callable  # identity(section, model_cfg) -> str: whose judgments these are, known without loading
    simulated: bool = False  # reads ground truth: every output is labelled simulated
    # (section, processor) -> token ids of the answer words the judge reads from the model (None: reads none)
    answer_ids: Optional[Callable] = None
    # (section, dimensions): ConfigError for a dimension the judge cannot judge
    check_dimensions: Callable = lambda section, dimensions: None
    # section -> rate(records, dimension): the judge's own pointwise ratings for the teacher anchor
    # (None: the base VLM's zero-shot scorer rates)
    rater: Optional[Callable] = None


def _model_identity(kind: str):
    def identity(section, model_cfg: ModelConfig) -> str:
        revision = f"@{model_cfg.revision}" if model_cfg.revision else ""
        return f"{kind}:{model_cfg.name_or_path}{revision}"

    return identity


def _check_prompts(section: VLMJudgeConfig, dimensions: Sequence[str]) -> None:
    from psdistill.judge.prompts import load_prompt_set

    prompts = load_prompt_set(section.prompt_set)
    missing = [d for d in dimensions if d not in prompts.dimensions]
    if missing:
        raise ConfigError(f"data.dimensions: {missing} have no prompt in judge.vlm.prompt_set "
                          f"{prompts.name!r} (it has {sorted(prompts.dimensions)}); add them to its YAML file")


def _answer_ids(section: VLMJudgeConfig, processor) -> list[int]:
    from psdistill.judge.prompts import load_prompt_set
    from psdistill.judge.vlm import answer_token_ids

    return answer_token_ids(processor, load_prompt_set(section.prompt_set))


def _build_vlm(section: VLMJudgeConfig, model_cfg: ModelConfig):
    from psdistill.judge.vlm import VLMJudge
    from psdistill.models.device import place_for_inference
    from psdistill.models.loading import load_vlm

    model, processor = load_vlm(model_cfg)
    model = place_for_inference(model, model_cfg.dtype, dispatched=bool(model_cfg.device_map))
    return VLMJudge(model, processor, section, model_id=model_cfg.model_id)


def _build_vllm(section: VLMJudgeConfig, model_cfg: ModelConfig):
    """A vLLM engine on this process; under a multi-process launch one per rank (every rank builds it, the
    stage's DataParallelJudge feeds them), each on its own device (psdistill.models.vllm_engine)."""
    from psdistill.judge.vlm import VLLMJudge
    from psdistill.models.vllm_engine import vllm_dtype

    return VLLMJudge(model_cfg.name_or_path, section, min_pixels=model_cfg.min_pixels,
                     max_pixels=model_cfg.max_pixels, revision=model_cfg.revision, dtype=vllm_dtype(model_cfg.dtype))


JUDGES: dict[str, JudgeEntry] = {
    "simulated": JudgeEntry(
        "a noisy oracle reading the ground truth (demo and tests only)", "simulated", SimulatedJudgeConfig,
        build=lambda section, model_cfg: SimulatedJudge(section),
        identity=lambda section, model_cfg: SimulatedJudge(section).judge_id,
        simulated=True, rater=lambda section: SimulatedJudge(section).rate),
    "vlm": JudgeEntry(
        "the model of `model:` through transformers", "vlm", VLMJudgeConfig, build=_build_vlm,
        identity=_model_identity("vlm"), answer_ids=_answer_ids, check_dimensions=_check_prompts),
    "vllm": JudgeEntry(
        "the same on vLLM, one engine per rank of a launch (large runs; pip install 'psdistill[vllm]')", "vlm", VLMJudgeConfig, build=_build_vllm,
        identity=_model_identity("vllm"), answer_ids=_answer_ids, check_dimensions=_check_prompts),
}


def _judge_config() -> type:
    """JudgeConfig: `kind` (a key of JUDGES) and one settings section per distinct section of the table."""
    sections = {e.section: e.config for e in JUDGES.values()}
    kind_help = "; ".join(f"'{k}': {e.description}" for k, e in JUDGES.items())
    return make_dataclass("JudgeConfig", [
        ("kind", Literal[tuple(JUDGES)], field(default="simulated", metadata={"help": kind_help})),
        *((name, cls, field(default_factory=cls)) for name, cls in sections.items())],
        namespace={"__module__": __name__, "__doc__": "The judge: its kind (psdistill.judge.registry.JUDGES) "
                                                       "and each kind's settings."})


JudgeConfig = _judge_config()


def judge_entry(judge_cfg) -> JudgeEntry:
    return JUDGES[judge_cfg.kind]


def judge_section(judge_cfg):
    """The settings the configured judge reads."""
    return getattr(judge_cfg, judge_entry(judge_cfg).section)


def build_judge(judge_cfg, model_cfg: ModelConfig):
    """The configured judge, its model (if any) on this process's device (`psdistill.models.device`)."""
    return judge_entry(judge_cfg).build(judge_section(judge_cfg), model_cfg)


def judge_identity(judge_cfg, model_cfg: ModelConfig) -> str:
    return judge_entry(judge_cfg).identity(judge_section(judge_cfg), model_cfg)
