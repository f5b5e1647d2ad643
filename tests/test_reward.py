"""The scorer as a differentiable reward (psdistill.scoring.reward): the processor's patches and the
scorer's scores from pixel tensors, gradients against finite differences, frozen and deterministic,
gradient checkpointing, the flow_grpo / DDPO reward-function convention, bad input; FGAesQ's reward."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from _distill_common import ladder_records, pseudo_scores
from psdistill.core.errors import DataError
from psdistill.distill import DistillConfig, train_student
from psdistill.models.loading import ModelConfig
from psdistill.scoring.readout import processor_inputs
from psdistill.scoring.registry import load_scorer
from psdistill.scoring.reward import ScorerReward, load_reward, reward_fn

TWO_DIMS = dict(dimensions=("overall", "color"), prompt="Rate the {dimension} of this image. Answer with one word.")


def _pil(x: torch.Tensor) -> list[Image.Image]:
    return [Image.fromarray((xi.permute(1, 2, 0) * 255).round().byte().numpy()) for xi in x]


def _tensor(images, size=None) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] from PIL images (uint8 levels / 255, so the scorer sees the same pixels)."""
    ims = [im.convert("RGB").resize(size, Image.LANCZOS) if size else im.convert("RGB") for im in images]
    return torch.stack([torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1) for im in ims]).float() / 255


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    records = ladder_records(tmp_path_factory.mktemp("photos"), photos=("astronaut", "coffee", "chelsea"), levels=2,
                             size=96)
    return [Image.open(r.path) for r in records]


@pytest.fixture(scope="module")
def teacher():
    return load_reward("teacher-pointwise")


def _noise(shape, seed=0):
    return torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(seed)).float() / 255


@pytest.mark.parametrize("size", [(64, 64), (32, 64), (64, 32)])
def test_patches_equal_the_processors_at_a_size_it_keeps(teacher, size):
    x = _noise((2, 3, *size))
    ours = teacher.pixels(x)
    ref = processor_inputs(teacher.pixels.processor, teacher.readout.text, _pil(x))
    assert ours.keys() == ref.keys()
    for k in ref:
        assert ours[k].shape == ref[k].shape and torch.equal(ours[k].to(ref[k].dtype), ref[k]), k


def test_a_resized_image_gets_the_processors_grid_and_tokens(teacher, photos):
    x = _tensor(photos[:2], (80, 48))  # smart_resize: 64x32 (area bound 4096) -> torch's bicubic resizes
    ours = teacher.pixels(x)
    ref = processor_inputs(teacher.pixels.processor, teacher.readout.text, _pil(x))
    for k in ("input_ids", "attention_mask", "mm_token_type_ids", "image_grid_thw"):
        assert torch.equal(ours[k], ref[k]), k
    # pixels differ (float vs uint8 PIL bicubic), by a few levels of 255 on photos (normalised: 2/255 a level)
    assert (ours["pixel_values"] - ref["pixel_values"]).abs().mean() < 4 * 2 / 255


def _within(reward, scorer, x, atol):
    scores = reward(x).detach().numpy()
    assert scores.shape == ((len(x),) if len(reward.dimensions) == 1 else (len(x), len(reward.dimensions)))
    np.testing.assert_allclose(scores, scorer.score(_pil(x)), atol=atol)


@pytest.mark.parametrize("kwargs", [{}, TWO_DIMS], ids=["one dimension", "two dimensions"])
def test_teacher_reward_equals_the_scorer(photos, kwargs):
    reward, scorer = load_reward("teacher-pointwise", **kwargs), load_scorer("teacher-pointwise", **kwargs)
    _within(reward, scorer, _tensor(photos, (64, 64)), atol=1e-5)  # a kept size: the same pixels
    # Resized (96x96 -> 64x64 by torch's bicubic, not PIL's): within 0.02 on the 1-10 scale.
    x = _tensor(photos)
    diff = np.abs(reward(x).detach().numpy() - scorer.score(_pil(x)))
    assert diff.max() < 0.02, diff.max()


def _train(records, out, tuning, head):
    cfg = DistillConfig(max_steps=2, eval_steps=2, save_steps=2, per_device_train_batch_size=2, learning_rate=5e-2,
                        tuning=tuning, head=head, report_to=["none"], training_args={"disable_tqdm": True})
    return train_student(records, pseudo_scores(records), ModelConfig(), cfg, out, rating_scale=(1.0, 5.0))


@pytest.mark.parametrize("tuning,head", [("lora", "levels"), ("lora", "scalar"), ("full", "scalar")])
def test_student_reward_equals_the_scorer(tmp_path, photos, tuning, head):
    records = ladder_records(tmp_path / "images", photos=("astronaut", "coffee"), levels=3)
    out = _train(records, tmp_path / "student", tuning, head)
    reward, scorer = load_reward(out), load_scorer(out)
    assert reward.score_range == (1.0, 5.0) and reward.name == scorer.name
    _within(reward, scorer, _tensor(photos, (64, 64)), atol=1e-5)
    x = _tensor(photos)  # resized: 0.02 on a 1-10 scale is 0.009 on this 1-5 one
    np.testing.assert_allclose(reward(x).detach().numpy(), scorer.score(_pil(x)), atol=0.02 * 4 / 9)
    _check_gradient(reward.double(), 0.1 + 0.8 * _tensor(photos[:2], (64, 64)).double())


def _check_gradient(reward, x):
    """Each score's autograd directional derivative against a central finite difference, along its gradient's
    direction plus a random one (a wrong gradient is off along both). The model runs in float64, but the
    readout's last step (softmax over the level words, a scalar head, FGAesQ's head) is float32, so a score
    is rounded to ~5e-7: a step of 0.03 in pixel norm keeps that below 1e-5 of the difference quotient.
    Measured on the tiny models: at most 0.07% apart; the test allows 0.5%."""
    x = x.detach().requires_grad_(True)
    scores = reward(x).reshape(-1)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=x.dtype)
    t = 0.03
    for j in range(len(scores)):
        (grad,) = torch.autograd.grad(scores[j], x, retain_graph=True)
        assert grad.norm() > 1e-3  # not a check of a zero gradient
        v = grad / grad.norm() + noise / noise.norm()
        v = v / v.norm()
        with torch.no_grad():
            fd = float((reward(x + t * v).reshape(-1)[j] - reward(x - t * v).reshape(-1)[j]).double() / (2 * t))
        analytic = float((grad * v).sum())
        assert abs(fd - analytic) < 1e-5 + 0.005 * abs(analytic), (j, fd, analytic)


@pytest.mark.parametrize("kwargs,size", [({}, (64, 64)), ({}, (48, 80)), (TWO_DIMS, (64, 64))],
                         ids=["kept size", "resized", "two dimensions"])
def test_gradient_matches_finite_differences(photos, kwargs, size):
    reward = load_reward("teacher-pointwise", **kwargs).double()
    _check_gradient(reward, 0.1 + 0.8 * _tensor(photos[:2], size[::-1]).double())  # inside (0, 1): no clamp


def test_frozen_eval_and_deterministic(teacher):
    parent = torch.nn.Sequential(teacher)
    parent.train()  # an owner in training mode does not put the reward there
    assert not teacher.training and not any(m.training for m in teacher.modules())
    assert not any(p.requires_grad for p in teacher.parameters())
    x = _noise((2, 3, 64, 64))
    assert torch.equal(teacher(x), teacher(x))


@pytest.mark.parametrize("kwargs", [{}, TWO_DIMS], ids=["one dimension", "two dimensions"])
def test_gradient_checkpointing_keeps_scores_and_gradients_and_saves_less(kwargs):
    def run(reward):
        x = _noise((2, 3, 64, 64), seed=2).requires_grad_(True)
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
            scores = reward(x)
        scores.sum().backward()
        return scores.detach(), x.grad, sum(saved)

    plain = run(load_reward("teacher-pointwise", **kwargs))
    checkpointed = load_reward("teacher-pointwise", gradient_checkpointing=True, **kwargs)
    assert not any(p.requires_grad for p in checkpointed.parameters())
    ckpt = run(checkpointed)
    torch.testing.assert_close(ckpt[0], plain[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(ckpt[1], plain[1], atol=1e-6, rtol=1e-4)
    assert ckpt[2] < 0.7 * plain[2], (ckpt[2], plain[2])  # the layers' activations are not kept


def test_reward_fn_follows_the_ddpo_flow_grpo_convention():
    reward = load_reward("teacher-pointwise", **TWO_DIMS)
    x = _noise((3, 3, 64, 64))
    scores = reward(x).detach()
    rewards, meta = reward_fn(reward, weights=[0.25, 0.75])(x, ["a cat"] * 3, [{}] * 3)
    torch.testing.assert_close(rewards.detach(), 0.25 * scores[:, 0] + 0.75 * scores[:, 1])
    torch.testing.assert_close(meta["color"].detach(), scores[:, 1])
    one = load_reward("teacher-pointwise")
    rewards, meta = reward_fn(one)(x, ["a cat"] * 3, [{}] * 3)
    assert rewards.shape == (3,) and meta == {}


@pytest.mark.parametrize("images,message", [
    ([np.zeros((64, 64, 3))], "got list"),
    ((_noise((1, 3, 64, 64)) * 255).byte(), "got dtype torch.uint8"),
    (_noise((3, 64, 64)), r"got shape \(3, 64, 64\)"),
    (_noise((1, 4, 64, 64)), r"got shape \(1, 4, 64, 64\)"),
    (_noise((1, 3, 64, 64)) * 2 - 1, "got values from -1 to 1"),
    (torch.full((1, 3, 64, 64), float("nan")), "no finite value, with NaN"),
])
def test_bad_input_is_one_clear_line(teacher, images, message):
    with pytest.raises(DataError, match=message) as e:
        teacher(images)
    assert "\n" not in str(e.value) and "float tensor (B, 3, H, W) with values in [0, 1]" in str(e.value)


def test_top_level_import():
    import psdistill

    assert psdistill.load_reward is load_reward and isinstance(psdistill.load_reward("teacher-pointwise"), ScorerReward)


# ---- FGAesQ (its adapter lives in psdistill/baselines/fgaesq/reward.py) ----------------------------

FGAESQ_FIXTURE = Path(__file__).resolve().parent / "fixtures" / "fgaesq_official"


def test_fgaesq_official_reward_equals_the_scorer_at_native_resolution():
    # The fixture's official checkpoint; its 640x480 image takes the multiscale path (random regions, seeded).
    from psdistill.baselines.fgaesq.scorer import FGAesQScorer

    meta = json.loads((FGAESQ_FIXTURE / "outputs.json").read_text())
    scorer = FGAesQScorer.from_official(FGAESQ_FIXTURE / "fgaesq_official.pt", num_heads=meta["vision"]["heads"],
                                        device="cpu")
    reward = scorer.reward()
    for name, expected in zip(meta["images"], meta["single"]):
        x = _tensor([Image.open(FGAESQ_FIXTURE / name)]).requires_grad_(True)
        score = reward(x)
        assert score.shape == (1,) and float(score.detach()) == pytest.approx(expected, abs=1e-4)
        score.sum().backward()
        assert x.grad.abs().max() > 0


@pytest.fixture(scope="module")
def fgaesq_checkpoint(tmp_path_factory):
    from psdistill.baselines.fgaesq.model import load_base

    model, _ = load_base("tiny", seed=0, image_size=64)
    return model.save_pretrained(tmp_path_factory.mktemp("fgaesq") / "checkpoint")


def test_fgaesq_resize_reward_equals_the_scorer(fgaesq_checkpoint, photos):
    reward, scorer = load_reward(fgaesq_checkpoint), load_scorer(fgaesq_checkpoint)
    assert type(reward).__name__ == "FGAesQReward" and reward.score_range == (1.0, 10.0)
    for size, atol in [((64, 64), 1e-5), ((64, 32), 1e-5), ((96, 96), 0.02), ((80, 50), 0.02)]:
        _within(reward, scorer, _tensor(photos, size), atol)
    # The head's ReLUs put kinks close enough to a photo that a finite difference straddles one (measured:
    # up to 9% apart at a step of 0.03): a smooth stand-in for them checks the gradient of the rest.
    head = reward.model.iqa_head
    for k, layer in enumerate(head):
        if isinstance(layer, torch.nn.ReLU):
            head[k] = torch.nn.GELU()
    for size in [(64, 48), (80, 50)]:  # kept, resized
        _check_gradient(reward.double(), 0.1 + 0.8 * _tensor(photos[:2], size).double())


def test_fgaesq_reward_checkpointing_and_eval_mode(fgaesq_checkpoint):
    x = _noise((2, 3, 64, 64))
    plain = load_reward(fgaesq_checkpoint)(x)
    reward = load_reward(fgaesq_checkpoint, gradient_checkpointing=True)
    torch.nn.Sequential(reward).train()
    assert not any(m.training for m in reward.model.iqa_head.modules())  # its dropout stays off
    torch.testing.assert_close(reward(x), plain)
