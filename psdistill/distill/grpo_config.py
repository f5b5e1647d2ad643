"""`GrpoConfig`: the `distill.grpo:` section, the knobs of the `grpo` objective (grpo.py).

Fields carry `trl.GRPOConfig`'s names and meanings where TRL has them (num_generations, beta,
temperature, max_completion_length, reward_weights) and go to it by name (`trl_kwargs`); any other
GRPOConfig field goes through `args` (checked by name), as `distill.training_args` does for
TrainingArguments. The optimisation and
bookkeeping fields (learning_rate, max_steps, save_steps, ...) are DistillConfig's, shared with the
ranking objective.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from psdistill.core.errors import ConfigError

REWARDS = ("closeness", "order")  # the reward functions, in the order reward_weights weighs them
# A GRPOConfig field psdistill sets from distill's (images x answers); set through `args` it would contradict it.
_RESERVED = {"per_device_train_batch_size"}


@dataclass
class GrpoConfig:
    """Confidence-weighted GRPO (used with `distill.objective: grpo`)."""

    num_generations: int = field(default=4, metadata={"help": (
        "G: answers sampled per image; their rewards are compared inside the group (GRPO's advantage). "
        "distill.per_device_train_batch_size stays images per device, so a step holds images x G answers.")})
    beta: float = field(default=0.04, metadata={"help": (
        "KL coefficient to the frozen base model (TRL's beta; 0 loads no reference).")})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of the answers."})
    max_completion_length: int = field(default=1, metadata={"help": (
        "Tokens per answer. 1: the answer is the level word alone, the very token the levels head reads.")})
    reward_weights: list[float] = field(default_factory=lambda: [1.0, 1.0], metadata={"help": (
        "Weights of the two rewards: closeness (of the answer's value to the pseudo-score, times the image's "
        "confidence) and order (agreement with the pseudo-score order over the batch's pairs of the same "
        "dimension, each times |2 pair_confidence - 1|).")})
    unparseable_reward: float = field(default=-1.0, metadata={"help": (
        "Each reward's value for an answer that is no level word: below any answer's (closeness >= 0 on the "
        "scale, order >= -1), so dodging a hard image never pays.")})
    constrain_answer: bool = field(default=True, metadata={"help": (
        "Sample the first answer token among the level words only: the sampled distribution is then the "
        "levels head's softmax (an untrained or random-weight model rarely says a level word otherwise).")})
    args: dict = field(default_factory=dict, metadata={
        "help": "Any other trl.GRPOConfig field, by name (e.g. {loss_type: grpo, scale_rewards: batch})."})

    def __post_init__(self):
        def bad(name, msg):
            raise ConfigError(f"distill.grpo.{name}: {msg}")

        if self.num_generations < 2:
            bad("num_generations", f"GRPO compares answers within a group, so at least 2, got {self.num_generations}")
        for name in ("temperature", "max_completion_length"):
            if not getattr(self, name) > 0:
                bad(name, f"must be > 0, got {getattr(self, name)}")
        if self.beta < 0:
            bad("beta", f"must be >= 0, got {self.beta}")
        if len(self.reward_weights) != len(REWARDS):
            bad("reward_weights", f"one weight per reward ({', '.join(REWARDS)}), got {self.reward_weights}")
        if self.args:
            known = _grpo_config_fields()
            for key in self.args:
                if key in _RESERVED or key in self.trl_kwargs():
                    bad(f"args.{key}", "is set by psdistill from a distill or grpo field; set that field instead")
                if key not in known:
                    bad(f"args.{key}", "is not a trl.GRPOConfig field")

    def trl_kwargs(self) -> dict:
        """The fields trl.GRPOConfig also has, by name."""
        known = _grpo_config_fields()
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name in known}


def _grpo_config_fields() -> set[str]:
    from trl import GRPOConfig  # when GRPO is configured, not when a config merely holds this section

    return {f.name for f in dataclasses.fields(GRPOConfig) if f.init}
