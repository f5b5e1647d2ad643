"""QLoRA on the CPU (psdistill/models/quant.py): the bitsandbytes traps it works around, each pinned so a
bitsandbytes release that changes them fails here, and the tiny student learning under distill.tuning=qlora."""
import json
import warnings
from pathlib import Path

import pytest
import torch

bnb = pytest.importorskip("bitsandbytes")

from _distill_common import PHOTOS, ladder_records, pseudo_scores  # noqa: E402
from psdistill.distill import DistillConfig, train_student  # noqa: E402
from psdistill.distill.student_build import build_student  # noqa: E402
from psdistill.models.loading import ModelConfig  # noqa: E402
from psdistill.models.quant import CPU_BLOCK, keep_training_layout, load_4bit  # noqa: E402
from psdistill.models.tiny import save_tiny, tiny_qwen3_vl  # noqa: E402

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU kernels' behaviour")


def _nf4_linear(in_features: int, out_features: int = 128):
    torch.manual_seed(0)
    dense = torch.nn.Linear(in_features, out_features, bias=False)
    layer = bnb.nn.Linear4bit(in_features, out_features, bias=False, compute_dtype=torch.bfloat16,
                              quant_type="nf4")
    layer.weight = bnb.nn.Params4bit(dense.weight.data.clone(), requires_grad=False, quant_type="nf4")
    return dense, layer.to("cpu")


def _input_gradient_after_eval_forward(layer, width: int):
    layer.eval()
    with torch.no_grad():
        layer(torch.randn(4, width, dtype=torch.bfloat16))
    layer.train()
    x = torch.randn(4, width, dtype=torch.bfloat16, requires_grad=True)
    layer(x).float().sum().backward()
    return x.grad


@pytest.mark.skipif(not bnb.functional.has_avx512bf16(), reason="the repacking happens on AVX512-BF16 CPUs only")
def test_trap_eval_forward_repacks_weights_and_training_then_gets_no_gradient():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bitsandbytes' own warning about the op without autograd kernel
        _, layer = _nf4_linear(128)
        assert _input_gradient_after_eval_forward(layer, 128) is None  # the trap: no gradient, no error
        assert layer.weight.quant_state.packing_format_for_cpu
        _, narrow = _nf4_linear(96)  # a width the repacking cannot reshape
        with pytest.raises(RuntimeError):
            narrow.eval()(torch.randn(4, 96, dtype=torch.bfloat16))


def test_workaround_keeps_the_training_layout_and_the_gradient():
    for width in (96, 128):
        dense, layer = _nf4_linear(width)
        assert keep_training_layout(torch.nn.Sequential(layer)) == 1
        grad = _input_gradient_after_eval_forward(layer, width)
        assert not getattr(layer.weight.quant_state, "packing_format_for_cpu", False)
        expected = dense.weight.sum(0).expand(4, -1)  # d sum(W x) / dx
        assert ((grad.float() - expected).norm() / expected.norm()).item() < 0.2  # NF4's error, ~0.09


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    model, processor = tiny_qwen3_vl(image_size=128)
    return save_tiny(model, processor, tmp_path_factory.mktemp("tiny"))


def _dequantised_errors(model, reference) -> dict:
    return {name: ((bnb.functional.dequantize_4bit(m.weight.data, m.weight.quant_state).float() - reference[name]).norm()
                   / reference[name].norm()).item()
            for name, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)}


def test_trap_narrow_layers_dequantise_wrongly_and_stay_unquantised(tiny_dir):
    from transformers import AutoModelForImageTextToText, BitsAndBytesConfig

    reference = {n: m.weight.detach().float() for n, m in tiny_qwen3_vl(image_size=128)[0].named_modules()
                 if isinstance(m, torch.nn.Linear)}
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16)
    plain = AutoModelForImageTextToText.from_pretrained(tiny_dir, quantization_config=quant, dtype=torch.bfloat16,
                                                        device_map={"": "cpu"})
    errors = _dequantised_errors(plain, reference)
    widths = {n: m.in_features for n, m in plain.named_modules() if isinstance(m, bnb.nn.Linear4bit)}
    narrow = [e for n, e in errors.items() if widths[n] % CPU_BLOCK]
    assert narrow and max(e for n, e in errors.items() if not widths[n] % CPU_BLOCK) < 0.1
    assert max(narrow) > 0.2  # the trap: NF4 itself is ~0.09

    model, _ = load_4bit(ModelConfig(name_or_path=tiny_dir))
    quantised = _dequantised_errors(model, reference)
    assert len(quantised) == len(errors) - len(narrow) and max(quantised.values()) < 0.1
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Linear) and m.in_features % CPU_BLOCK:
            assert not isinstance(m, bnb.nn.Linear4bit), name


def test_qlora_student_has_lora_gradients_at_step_0(tiny_dir):
    model, processor = build_student(ModelConfig(name_or_path=tiny_dir), DistillConfig(tuning="qlora"))
    assert sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules()) > 10
    from psdistill.scoring.readout import Readout, processor_inputs
    from psdistill.scoring.spec import ScorerSpec
    from PIL import Image

    spec = ScorerSpec.build(ModelConfig(name_or_path=tiny_dir), DistillConfig().readout_config(["overall"]), "adapter", "t")
    readout = Readout(spec, processor)
    images = [Image.new("RGB", (64, 64), c) for c in ("red", "blue")]
    model.eval()
    with torch.no_grad():
        readout(model, processor_inputs(processor, readout.text, images))  # a validation pass first
    model.train()
    readout(model, processor_inputs(processor, readout.text, images)).sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if "lora_" in n}
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads.values())
    # B starts at zero, so A's gradients are zero at step 0; every B's must not be (the repacking trap
    # zeroes those of every layer below the first repacked one).
    b_grads = [g for n, g in grads.items() if "lora_B" in n]
    assert len(b_grads) == len(grads) // 2 and all(g.abs().sum().item() > 0 for g in b_grads)


@pytest.mark.slow
def test_tiny_student_learns_under_qlora(tmp_path, tiny_dir):
    records = ladder_records(tmp_path / "data", crops=5, size=128)
    train = [r for r in records if r.category in PHOTOS[:9]]
    val = [r for r in records if r.category not in PHOTOS[:9]]
    # LoRA on the tiny model's random vision tower too (tune_vision): on a frozen random tower it barely
    # learns (psdistill/pipeline/configs/demo.yaml trains it fully for that reason). Measured here: held-out
    # SRCC 0.14 -> 0.38 -> 0.46 at steps 0/60/120, loss 1.03 -> 0.81 (~3 min on 2 cores).
    cfg = DistillConfig(tuning="qlora", tune_vision=True, learning_rate=2e-3, max_steps=120, lora_r=16, lora_alpha=32,
                        per_device_train_batch_size=10, eval_steps=60, save_steps=10_000, logging_steps=20,
                        report_to=["none"], training_args={"disable_tqdm": True})
    out = train_student(train, pseudo_scores(train), ModelConfig(name_or_path=tiny_dir, max_pixels=128 * 128), cfg,
                        tmp_path / "run", val_records=val)
    history = json.loads((Path(out) / "trainer_state.json").read_text())["log_history"]
    evals = [h["eval_srcc"] for h in history if "eval_srcc" in h]
    assert len(evals) == 3 and evals[-1] - evals[0] >= 0.3, evals
