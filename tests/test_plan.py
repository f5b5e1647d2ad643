"""The planner (psdistill/models/budget.py, psdistill/pipeline/planner.py, `psdistill plan`): counts against
models built on the meta device, the measured activation fit against its source, every shipped 8B
recipe against the hardware it names, suggestions that fit, bad input in one line."""
import json
from pathlib import Path

import pytest
import torch

from psdistill.cli import main
from psdistill.core.config import parse_config
from psdistill.models import budget
from psdistill.models.budget import GIB, TrainSettings
from psdistill.pipeline import PipelineConfig
from psdistill.pipeline.planner import arch_of, format_plan, plan, recipe_hardware, recipe_plan_block

REPO = Path(__file__).resolve().parents[1]
CONFIG_8B = REPO / "psdistill/models/configs/qwen3_vl_8b.json"
RECIPES = sorted((REPO / "recipes/configs").glob("qwen3vl8b*.yaml"))


def _config_8b() -> dict:
    data = json.loads(CONFIG_8B.read_text())
    data.pop("_comment")
    return data


def _meta_model(config: dict):
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    with torch.device("meta"):
        return Qwen3VLForConditionalGeneration._from_config(Qwen3VLConfig.from_dict(config))


def _cfg(*overrides, recipe="qwen3vl8b_1x80gb_lora.yaml"):
    return parse_config(PipelineConfig, ["--config", str(REPO / "recipes/configs" / recipe), *overrides])


def test_parameter_count_of_the_published_8b_config():
    arch = budget.qwen3_vl_arch(_config_8b())
    assert arch.total == 8_767_123_696
    model = _meta_model(_config_8b())
    assert arch.total == sum(p.numel() for p in model.parameters())
    linear = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n != "lm_head"}
    assert arch.text_linear + arch.vision_linear == sum(m.weight.numel() for m in linear.values())


def test_counts_of_another_qwen3_vl_shape_and_of_lora_match_peft(tmp_path):
    # The tiny model: other widths, tied or not, two deepstack taps; LoRA counted by peft itself.
    from psdistill.distill import DistillConfig
    from psdistill.distill.student_build import build_student
    from psdistill.models.loading import ModelConfig

    arch = arch_of(ModelConfig())
    model, _ = build_student(ModelConfig(), DistillConfig(lora_r=8))
    base = model.get_base_model()
    assert arch.total == sum(p.numel() for n, p in base.named_parameters() if "lora_" not in n)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert budget.lora_params(arch, TrainSettings(lora_r=8)) == trainable


def test_the_activation_fit_is_the_measured_one():
    measured = json.loads((REPO / "eval/results/plan_8b.json").read_text())
    for mode, coef in measured["fit"].items():
        assert budget.ACTIVATION_FIT[mode] == pytest.approx(tuple(coef), rel=1e-3), mode
    # and reproduces the held-out depth within 10%
    for p in measured["points"]:
        if p["depth"] not in measured["fit_depths"]:
            arch = budget.qwen3_vl_arch(_config_8b())
            pred = budget.activations(arch, p["mode"], p["depth"], 1, p["tokens"])
            assert pred == pytest.approx(p["bytes"], rel=0.10), p


def test_memory_terms_by_hand():
    arch = budget.qwen3_vl_arch(_config_8b())
    lora = TrainSettings(tuning="lora", lora_r=32, batch=8, tokens=792, checkpointing=True)
    terms = budget.train_memory(arch, lora)
    assert terms["weights"] == 2 * 8_767_123_696
    # r (in + out) per projection: q/o 4096+4096, k/v 4096+1024, gate/up/down 4096+12288
    per_layer = 32 * (2 * 8192 + 2 * 5120 + 3 * 16384)
    assert terms["trainable"] == 36 * per_layer
    assert terms["optimizer"] == 12 * 36 * per_layer and terms["gradients"] == 4 * 36 * per_layer
    assert budget.kv_cache_bytes(arch, 8, 1000) == 2 * 36 * 8 * 128 * 2 * 8 * 1000
    full = budget.train_memory(arch, TrainSettings(tuning="full", zero_stage=3, gpus=8, checkpointing=True))
    assert full["weights"] == terms["weights"] / 8 + 2 * 2 * arch.text_linear / 36  # sharded + two gathered layers
    q = budget.train_memory(arch, TrainSettings(tuning="qlora", lora_r=32, checkpointing=True))
    assert 5.0 * GIB < q["weights"] < 6.5 * GIB  # ~0.52 byte per Linear weight, bf16 embeddings and lm_head


def test_time_is_flops_over_the_stated_share_of_peak():
    arch = budget.qwen3_vl_arch(_config_8b())
    gpu = budget.GPUS["H100-80GB"]
    t = budget.infer_seconds(arch, 1, 1000, 0, gpu, 1)
    by_hand = (2 * arch.text_linear * 1000 + 2 * 36 * 32 * 128 * 1000 ** 2) / (989e12 * budget.MFU["infer"])
    assert t == pytest.approx(by_hand)
    assert budget.infer_seconds(arch, 1, 1000, 0, gpu, 8) == pytest.approx(t / 8)
    s = TrainSettings(tokens=1000)
    plain = budget.train_seconds(arch, s, 1, 0, gpu)
    ckpt = budget.train_seconds(arch, TrainSettings(tokens=1000, checkpointing=True), 1, 0, gpu)
    assert ckpt - plain == pytest.approx(2 * arch.text_linear * 1000 / (989e12 * budget.MFU["lora"]))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_every_8b_recipe_fits_the_hardware_it_names_and_shows_its_plan(recipe):
    hardware = recipe_hardware(recipe)
    stages = plan(parse_config(PipelineConfig, ["--config", str(recipe)]), **hardware)
    assert [s.stage for s in stages] == ["judge", "distill", "score"]
    assert all(s.fits for s in stages), format_plan(stages)
    # the header holds the current plan (refresh: write recipe_plan_block(path) between its markers)
    assert recipe_plan_block(recipe) in recipe.read_text()


def test_a_config_that_does_not_fit_gets_changes_that_do():
    stages = plan(_cfg("distill.gradient_checkpointing=false"), gpu="RTX4090-24GB")
    distill = stages[1]
    assert not distill.fits and distill.suggestions
    assert "distill.tuning=qlora" in " ".join(distill.suggestions)
    fixed = plan(_cfg("distill.gradient_checkpointing=true", "distill.tuning=qlora", "judge.vlm.batch_size=1",
                      "distill.per_device_eval_batch_size=1"), gpu="RTX4090-24GB")
    assert fixed[1].fits
    # checkpointing off at batch 8 x 792 tokens does not fit 80 GB; the planner says turn it on
    off = plan(_cfg("distill.gradient_checkpointing=false"), gpu="H100-80GB")[1]
    assert not off.fits and off.suggestions[0] == "distill.gradient_checkpointing=true"
    full = plan(_cfg("distill.tuning=full"), gpu="H100-80GB")[1]
    assert not full.fits and any("ZeRO-3" in s for s in full.suggestions)


@pytest.mark.parametrize("args,message", [
    (["--gpu", "V100"], "--gpu: unknown GPU 'V100'"),
    (["--gpu-memory", "-4"], "--gpu-memory: must be > 0 GB"),
    (["--gpus", "0"], "--gpus: must be >= 1"),
    (["model.name_or_path=someone/unknown-model"], "model.name_or_path: the planner cannot size"),
    (["model.max_pixels=null"], "model.max_pixels: the planner sizes"),
])
def test_bad_input_is_one_line(args, message, capsys):
    assert main(["plan", "--config", str(REPO / "recipes/configs/qwen3vl8b_1x80gb_lora.yaml"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_cli_prints_the_table_for_the_recipes_hardware(capsys):
    recipe = REPO / "recipes/configs/qwen3vl8b_8x80gb_full_zero3.yaml"
    assert main(["plan", "--config", str(recipe)]) == 0
    out = capsys.readouterr().out
    assert "(8 x H100-80GB)" in out and out.count(" yes ") == 3
    assert main(["plan", "--config", str(recipe), "--zero-stage", "0"]) == 1  # unsharded full: no fit
    assert "distill does not fit" in capsys.readouterr().out
