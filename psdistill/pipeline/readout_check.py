"""Every word psdistill reads out, checked against the model's tokenizer before any model runs.

The judge reads its two answer words, the levels head its level words, each right after a rendered
prompt (psdistill.models.readout_tokens). `check_readout_tokens` checks both for a pipeline config
with the processor alone (`load_vlm_processor`: tokenizer and chat template, no weights), so a word
that is two tokens for the model stops a run before the judge stage instead of after it.
"""
from __future__ import annotations

from psdistill.distill.config import DistillConfig
from psdistill.scoring.readout import level_token_ids, render_prompt
from psdistill.judge.prompts import list_prompt_sets, load_prompt_set
from psdistill.judge.registry import judge_entry, judge_section

# The level words in the forms other readouts use: lower case alone, and with a leading space as
# Q-Align reads them after an answer prefix ("... The quality of the image is" + " excellent").
OTHER_LEVEL_FORMS = tuple(w for base in ("excellent", "good", "fair", "poor", "bad") for w in (base, " " + base))


def check_readout_tokens(processor, cfg) -> dict[str, list[int]]:
    """{'answers': ids, 'levels': ids} of what `cfg` (a PipelineConfig) reads; ConfigError naming any bad word."""
    out = {}
    entry = judge_entry(cfg.judge)
    if entry.answer_ids is not None:
        out["answers"] = entry.answer_ids(judge_section(cfg.judge), processor)
    if cfg.distill.head == "levels":
        for prompt in cfg.distill.rendered_prompts(cfg.data.dimensions).values():
            out["levels"] = level_token_ids(processor, cfg.distill.level_words, prompt)
    return out


def bundled_readouts(processor) -> list[tuple[str, str, str]]:
    """(where, rendered prompt, word) for every word read with the bundled prompt sets and the distill defaults."""
    out = []
    for name in list_prompt_sets():
        prompts = load_prompt_set(name)
        for dim in prompts.dimensions:
            out += [(f"judge {name}/{dim}", prompts.render(processor, dim), w) for w in prompts.answers]
    distill = DistillConfig()
    prompt = render_prompt(processor, distill.rendered_prompt("overall"))
    return out + [("distill levels", prompt, w) for w in distill.level_words]


def tiny_vocabulary_texts(processor) -> list[str]:
    """What the tiny vocabulary tokenizes as Qwen3 does: every bundled rendered prompt with its read word,
    and the other level-word forms."""
    return sorted({prompt + word for _, prompt, word in bundled_readouts(processor)} | set(OTHER_LEVEL_FORMS))
