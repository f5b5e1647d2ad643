"""The grpo objective: its config, the reward functions against hand-worked values, constrained
answers, and short GRPO runs on the tiny model that end as a levels scorer."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import norm

from _distill_common import PHOTOS, ladder_records, pseudo_scores
from psdistill.core.config import parse_config
from psdistill.distill import DistillConfig, StudentScorer, train_student
from psdistill.distill.grpo import grpo_arguments
from psdistill.distill.rewards import LevelAnswers, closeness_reward, order_reward
from psdistill.scoring.readout import Readout, processor_inputs, render_prompt
from psdistill.scoring.spec import ScorerSpec
from psdistill.scoring.teacher import teacher_pointwise
from psdistill.core.errors import ConfigError
from psdistill.models.loading import ModelConfig, load_vlm
from psdistill.pipeline import PipelineConfig

QUIET = {"disable_tqdm": True}


@pytest.mark.parametrize("fields,match", [
    ({"objective": "ppo"}, "distill.objective"),
    ({"objective": "grpo", "head": "scalar"}, "distill.head"),
    ({"grpo": {"num_generations": 1}}, "distill.grpo.num_generations"),
    ({"grpo": {"beta": -0.1}}, "distill.grpo.beta"),
    ({"grpo": {"reward_weights": [1.0]}}, "distill.grpo.reward_weights"),
    ({"grpo": {"args": {"not_a_field": 1}}}, "distill.grpo.args.not_a_field"),
    ({"grpo": {"args": {"beta": 0.1}}}, "distill.grpo.args.beta"),
])
def test_config_rejects_bad_values_naming_the_key(fields, match):
    overrides = []
    for key, value in fields.items():
        for sub, v in (value.items() if isinstance(value, dict) else [(None, value)]):
            overrides.append(f"distill.{key}{'.' + sub if sub else ''}={json.dumps(v)}")
    with pytest.raises(ConfigError, match=match):
        parse_config(PipelineConfig, overrides)


def test_config_maps_onto_trl_grpo_config(tmp_path):
    _, processor = load_vlm(ModelConfig())
    cfg = DistillConfig(objective="grpo", per_device_train_batch_size=3, learning_rate=2e-5, max_steps=7,
                        report_to=["none"], grpo={"num_generations": 5, "beta": 0.1, "args": {"loss_type": "grpo"}})
    spec = ScorerSpec.build(ModelConfig(), cfg.readout_config(["overall"]), weights="adapter", name="x")
    level_ids = Readout(spec, processor).token_ids.tolist()
    args = grpo_arguments(cfg, tmp_path, processor, level_ids)
    # 3 images x 5 answers per device; the rest under TRL's own names
    assert (args.per_device_train_batch_size, args.num_generations, args.beta) == (15, 5, 0.1)
    assert (args.learning_rate, args.max_steps, args.loss_type, args.max_completion_length) == (2e-5, 7, "grpo", 1)
    banned = set(args.generation_kwargs["begin_suppress_tokens"])
    assert banned | set(level_ids) == set(range(len(processor.tokenizer))) and not banned & set(level_ids)


def test_grpo_fields_reach_trl_by_name_and_every_objective_resolves():
    import dataclasses

    from trl import GRPOConfig

    from psdistill.distill.grpo import train_grpo
    from psdistill.distill.grpo_config import GrpoConfig
    from psdistill.distill.objectives import OBJECTIVES, objective_trainer
    from psdistill.distill.trainer import train_ranking

    # distill.grpo's fields under TRL's names; a trl upgrade that renames one (or adds one of ours) fails here.
    shared = {f.name for f in dataclasses.fields(GrpoConfig)} & {f.name for f in dataclasses.fields(GRPOConfig)}
    assert shared == {"num_generations", "beta", "temperature", "max_completion_length", "reward_weights"}
    assert GrpoConfig(beta=0.2, temperature=0.7).trl_kwargs() == dict(
        num_generations=4, beta=0.2, temperature=0.7, max_completion_length=1, reward_weights=[1.0, 1.0])
    assert {name: objective_trainer(name) for name in OBJECTIVES} == {"ranking": train_ranking, "grpo": train_grpo}
    with pytest.raises(ConfigError, match="distill.objective: 'ppo' is not one of ranking, grpo"):
        DistillConfig(objective="ppo")


def test_a_fully_tuned_policy_in_memory_gets_a_reference_trl_can_load(tmp_path):
    from trl.trainer.utils import get_config_model_id

    from psdistill.distill.grpo import _reference

    model, _ = load_vlm(ModelConfig())
    assert get_config_model_id(model.config) == ""  # built in memory: TRL would have no reference to load
    _reference(model, DistillConfig(objective="grpo", tuning="full"), tmp_path)
    assert get_config_model_id(model.config) == str(tmp_path / "reference_model")
    assert (tmp_path / "reference_model" / "config.json").is_file()


def test_level_answers_value_words_as_the_levels_head_does():
    _, processor = load_vlm(ModelConfig())
    spec = ScorerSpec.build(ModelConfig(), DistillConfig().readout_config(["overall"]), weights="base", name="x",
                            rating_scale=(1.0, 10.0))
    readout = Readout(spec, processor)
    answers = LevelAnswers(tuple(spec.level_words), tuple(readout.values.tolist()))
    # level values 5..1 onto 1..10: v -> 1 + (v - 1) * 9 / 4; Good (4) -> 7.75, Bad (1) -> 1
    assert answers.value("Excellent") == 10.0
    assert answers.value(" good, I think") == pytest.approx(7.75)
    assert answers.value([{"role": "assistant", "content": "Bad."}]) == 1.0
    assert answers.value([{"role": "assistant", "content": [{"type": "text", "text": "Fair"}]}]) == 5.5
    for text in ("", "The image is good", "4", "Goodness"):
        assert answers.value(text) is None, text


def test_closeness_reward_is_scaled_by_confidence():
    values = [5.0, 2.0, np.nan]
    r = closeness_reward(values, mu=[4.5, 2.5, 3.0], confidence=[0.8, 0.6, 0.9], scale=(1, 5), unparseable=-1.0)
    # 0.8 * (1 - 0.5 / 4) = 0.7; 0.6 * (1 - 0.5 / 4) = 0.525; the third is no level word
    assert r.tolist() == pytest.approx([0.7, 0.525, -1.0])


def test_order_reward_weighs_pairs_by_pair_confidence_within_a_dimension():
    values = [5.0, 2.0, 4.0, np.nan, 1.0]
    mu = [4.5, 2.5, 3.0, 1.0, 4.0]
    var = [0.25, 0.25, 0.5, 0.1, 0.2]
    dims = ["a", "a", "a", "a", "b"]
    r = order_reward(values, mu, var, dims, unparseable=-1.0)
    w = lambda i, j: abs(2 * norm.cdf((mu[i] - mu[j]) / np.sqrt(var[i] + var[j])) - 1)  # noqa: E731
    # dimension a, parsed: 0, 1, 2 (3 is no level word and leaves the pairs). Orders: answers 0 > 2 > 1,
    # pseudo-scores 0 > 2 > 1 too, so every pair agrees (+1). 4 is alone in its dimension: no pair, 0.
    assert r[0] == pytest.approx((w(0, 1) + w(0, 2)) / 2)
    assert r[1] == pytest.approx((w(1, 0) + w(1, 2)) / 2)
    assert r[2] == pytest.approx((w(2, 0) + w(2, 1)) / 2)
    assert (r[3], r[4]) == (-1.0, 0.0)
    swapped = order_reward([5.0, 4.0, 2.0], mu[:3], var[:3], dims[:3], unparseable=-1.0)
    # answers 1 and 2 now against the pseudo-scores (4 > 2 but 2.5 < 3); pairs with 0 still agree
    assert swapped.tolist() == pytest.approx([(w(0, 1) + w(0, 2)) / 2, (w(1, 0) - w(1, 2)) / 2,
                                              (w(2, 0) - w(2, 1)) / 2])
    same_image = order_reward([5.0, 1.0], [3.0, 3.0], [0.2, 0.2], ["a", "a"], unparseable=-1.0)
    assert same_image.tolist() == [0.0, 0.0]  # two answers for one image: C = 0.5, weight 0


def test_constrained_first_token_is_a_level_word(tmp_path):
    model, processor = load_vlm(ModelConfig())
    cfg = DistillConfig(objective="grpo", report_to=["none"])
    spec = ScorerSpec.build(ModelConfig(), cfg.readout_config(["overall"]), weights="base", name="x")
    level_ids = Readout(spec, processor).token_ids.tolist()
    args = grpo_arguments(cfg, tmp_path, processor, level_ids)
    records = ladder_records(tmp_path / "data", photos=("astronaut",), levels=2)
    from PIL import Image
    inputs = processor_inputs(processor, render_prompt(processor, spec.prompts["overall"]), [Image.open(r.path) for r in records])
    torch.manual_seed(0)
    out = model.generate(**inputs, do_sample=True, max_new_tokens=1, num_return_sequences=32,
                         begin_suppress_tokens=args.generation_kwargs["begin_suppress_tokens"])
    first = out[:, inputs["input_ids"].shape[1]]
    assert set(first.tolist()) <= set(level_ids) and len(set(first.tolist())) > 1  # sampled, among the levels only


def test_grpo_run_logs_a_finite_kl_and_saves_a_levels_scorer(tmp_path):
    records = ladder_records(tmp_path / "data", photos=("astronaut", "camera"), levels=4)
    cfg = DistillConfig(objective="grpo", tuning="lora", max_steps=4, per_device_train_batch_size=4, logging_steps=1,
                        learning_rate=1e-3, save_steps=2, report_to=["none"], training_args=QUIET)
    out = train_student(records, pseudo_scores(records), ModelConfig(), cfg, tmp_path / "run")
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    kl = [h["kl"] for h in history if "kl" in h]
    assert len(kl) == 4 and all(np.isfinite(kl)) and max(kl) > 0  # the policy moved away from the base
    assert all(h["rewards/closeness/mean"] >= 0 for h in history if "reward" in h)  # no unparseable answer
    assert not (out / "ref").exists() and (out / "checkpoint-2" / "scorer_config.json").is_file()
    scorer = StudentScorer.from_pretrained(out)
    assert scorer.spec.head == "levels" and scorer.spec.distill_config["objective"] == "grpo"
    scores = scorer.score([r.path for r in records])
    base = teacher_pointwise(ModelConfig(), readout=cfg.readout_config(["overall"])).score([r.path for r in records])
    assert np.all((scores >= 1) & (scores <= 10)) and np.abs(scores - base).max() > 1e-4  # trained, on the scale


@pytest.mark.slow
def test_mean_reward_rises_over_training_on_demo_like_data(tmp_path):
    # 6 photos x 5 degradation levels at 64 px, full fine-tuning of the tiny random VLM (as the demo),
    # pseudo-scores = ground truth + noise. Measured here, seeds 0/1/2: the mean reward (closeness +
    # order) of the first 25 steps 0.59/0.61/0.57, of the last 25 steps 1.10/1.11/1.13 (25-50 s alone).
    records = ladder_records(tmp_path / "data", photos=PHOTOS[:6], levels=5, size=64)
    cfg = DistillConfig(objective="grpo", tuning="full", tune_vision=True, learning_rate=3e-4, max_steps=200,
                        per_device_train_batch_size=8, logging_steps=5, save_steps=10_000, report_to=["none"],
                        training_args=QUIET)
    out = train_student(records, pseudo_scores(records), ModelConfig(), cfg, tmp_path / "run")
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    reward = [h["reward"] for h in history if "reward" in h]
    assert len(reward) == 40 and all(np.isfinite([h["kl"] for h in history if "kl" in h]))
    assert np.mean(reward[-5:]) - np.mean(reward[:5]) >= 0.2, reward
