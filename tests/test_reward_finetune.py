"""Reward fine-tuning of a diffusers generator (psdistill.generation, recipes/reward_finetune.py): the
truncated backpropagation against a hand-written DDIM loop, gradients only on the adapter, the penalties,
diversity, config errors; end to end (slow): the held-out reward rises, the run resumes, the saved adapter
reproduces it."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")

from psdistill.core.config import parse_config  # noqa: E402
from psdistill.core.errors import ConfigError  # noqa: E402
from psdistill.generation import RewardFinetuneConfig, finetune, load_finetuned  # noqa: E402
from psdistill.generation.report import read_metrics  # noqa: E402
from psdistill.generation.sampler import diversity, load_generator  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "reward_finetune.py"
SMALL = ["generator.resolution=16", "generator.steps=4", "train.backprop_steps=2"]


def _gen(tmp_path, *overrides):
    cfg = parse_config(RewardFinetuneConfig, [f"run_dir={tmp_path}", *SMALL, *overrides])
    return load_generator(cfg, tmp_path), cfg


def _perturb(gen, seed=0):
    """The adapter moved off its init (peft starts lora_B at 0, so that the adapted model is the base)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in gen.unet.named_parameters():
            if "lora_B" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))


def _ddim(gen, x, t, eps):
    """One DDIM step (eta 0) written out (Song et al. 2021, eq. 12), with the scheduler's clip of x0 to
    [-1, 1] and its final alpha of 1: the independent computation scheduler.step is checked against."""
    s = gen.scheduler
    a = s.alphas_cumprod
    prev = int(t) - s.config.num_train_timesteps // s.num_inference_steps
    a_t, a_prev = a[int(t)], a[prev] if prev >= 0 else torch.tensor(1.0)
    x0 = ((x - (1 - a_t).sqrt() * eps) / a_t.sqrt()).clamp(-1, 1)
    return a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps


def _hand_sample(gen, noise, k, lora_from):
    """Steps < len - k without gradient, the adapter from step `lora_from` on."""
    x, n = noise, len(gen.scheduler.timesteps)
    for i, t in enumerate(gen.scheduler.timesteps):
        with torch.set_grad_enabled(i >= n - k):
            if i >= lora_from:
                eps = gen.unet(x, t).sample
            else:
                with gen.unet.disable_adapter():
                    eps = gen.unet(x, t).sample
            x = _ddim(gen, x, t, eps)
    return (x / 2 + 0.5).clamp(0, 1)


def _loss(images):
    """A stand-in reward with a gradient everywhere: a fixed weighted sum of the pixels."""
    w = torch.linspace(-1, 1, images[0].numel()).reshape(images.shape[1:])
    return -(images * w).sum() / len(images)


@pytest.mark.parametrize("adapter_in", ["last_k", "all"])
def test_truncated_gradient_equals_a_hand_written_ddim_loop(tmp_path, adapter_in):
    gen, _ = _gen(tmp_path, f"train.adapter_in={adapter_in}")
    _perturb(gen)
    noise = gen.noise([3, 4])
    ours = gen.sample(noise, grad=True).images
    _loss(ours).backward()
    ours_grads = [p.grad.clone() for p in gen.trainable()]
    gen.unet.zero_grad(set_to_none=True)
    hand = _hand_sample(gen, noise, k=2, lora_from=2 if adapter_in == "last_k" else 0)
    _loss(hand).backward()
    torch.testing.assert_close(ours, hand, rtol=0, atol=1e-5)
    for a, p in zip(ours_grads, gen.trainable()):
        torch.testing.assert_close(a, p.grad, rtol=1e-4, atol=1e-7)
    assert sum(float(g.abs().sum()) for g in ours_grads) > 0


def test_gradient_reaches_only_the_adapter_and_only_through_the_last_k_steps(tmp_path):
    gen, _ = _gen(tmp_path, "train.backprop_steps=3")
    base = gen.unet.get_base_model()
    trainable = gen.trainable()
    assert trainable and all("lora_" in n for n, p in gen.unet.named_parameters() if p.requires_grad)
    calls = []  # autograd on or off, per UNet forward
    hook = base.register_forward_hook(lambda m, i, o: calls.append(torch.is_grad_enabled()))
    _loss(gen.sample(gen.noise([0, 1]), grad=True).images).backward()
    hook.remove()
    assert calls == [False, True, True, True]  # T=4, K=3
    # peft's disable_adapter clears requires_grad on the adapter's weights and sets it back on leaving:
    # the weights the optimizer holds still train after the steps that ran the base model.
    assert gen.trainable() == trainable and all(p.grad is not None for p in trainable)
    assert all(p.grad is None for n, p in gen.unet.named_parameters() if "lora_" not in n)


def test_penalties_zero_at_init_and_equal_to_hand_computed_after(tmp_path):
    gen, _ = _gen(tmp_path)
    noise = gen.noise([5, 6])
    out = gen.sample(noise, grad=True, kl=True, reference=True)
    assert float(out.kl.detach()) == 0 and torch.equal(out.images, out.reference)  # LoRA B at 0: the base model
    _perturb(gen)
    out = gen.sample(noise, kl=True, reference=True)
    # KL by hand: the base trajectory before the last K (adapter_in=last_k), then both predictions per step
    x, terms = noise, []
    with torch.no_grad():
        for i, t in enumerate(gen.scheduler.timesteps):
            with gen.unet.disable_adapter():
                base_eps = gen.unet(x, t).sample
            eps = gen.unet(x, t).sample if i >= 2 else base_eps
            if i >= 2:
                terms.append((eps - base_eps).pow(2).mean())
            x = _ddim(gen, x, t, eps)
        base_images = _hand_sample(gen, noise, k=0, lora_from=len(gen.scheduler.timesteps))
    torch.testing.assert_close(out.kl, torch.stack(terms).mean(), rtol=1e-5, atol=0)
    torch.testing.assert_close(out.reference, base_images, rtol=0, atol=1e-5)
    assert float(out.kl) > 0 and not torch.allclose(out.images, out.reference)


def test_the_same_config_builds_the_same_adapter(tmp_path):
    # peft draws lora_A from the global RNG: unseeded, two runs of one config took different first steps
    a, _ = _gen(tmp_path / "a")
    torch.manual_seed(123)  # whatever the global RNG's state
    b, _ = _gen(tmp_path / "b")
    assert all(torch.equal(p, q) for p, q in zip(a.trainable(), b.trainable()))
    c, _ = _gen(tmp_path / "c", "generator.seed=1")
    assert not all(torch.equal(p, q) for p, q in zip(a.trainable(), c.trainable()))


def test_noise_is_one_image_per_seed(tmp_path):
    gen, _ = _gen(tmp_path)
    assert gen.noise([7, 8]).shape == (2, 3, 16, 16)
    torch.testing.assert_close(gen.noise([7, 8])[1], gen.noise([8])[0], rtol=0, atol=0)


def test_diversity_is_the_mean_pairwise_rms_distance():
    a = torch.zeros(2, 3, 4, 4)
    assert diversity(a) == 0
    b = torch.stack([torch.zeros(3, 4, 4), torch.full((3, 4, 4), 0.25), torch.full((3, 4, 4), 1.0)])
    assert diversity(b) == pytest.approx((0.25 + 1.0 + 0.75) / 3)


@pytest.mark.parametrize("overrides,message", [
    (["train.backprop_steps=9"], "train.backprop_steps: K=9 is more than generator.steps=8"),
    (["train.backprop_steps=1", "generator.timestep_spacing=leading"], "only the step to t=0"),
    (["train.kl_weight=-1"], "train.kl_weight: must be >= 0"),
    (["train.k=2"], "train.k: unknown key"),
])
def test_bad_config_is_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(RewardFinetuneConfig, overrides)


def test_a_model_without_a_unet_is_one_line(tmp_path):
    gen_cfg = parse_config(RewardFinetuneConfig, [f"generator.model={tmp_path}"])
    with pytest.raises(ConfigError, match="generator.model .*no pipeline with unet/ and scheduler/"):
        load_generator(gen_cfg, tmp_path / "run")


def test_early_stop_on_diversity_or_the_second_scorer(tmp_path):
    from psdistill.generation.draft import _early_stop
    from psdistill.generation.report import MetricsLog

    log = MetricsLog(tmp_path, upto=0)
    log.write({"step": 0, "heldout_reward": 5.0, "heldout_second": 5.0, "heldout_diversity": 0.5})
    t = parse_config(RewardFinetuneConfig, ["train.early_stop_diversity=0.8", "train.early_stop_second_drop=0.5"]).train
    assert _early_stop(t, log, {"heldout_diversity": 0.41, "heldout_second": 4.6}) is None
    assert "train.early_stop_diversity" in _early_stop(t, log, {"heldout_diversity": 0.39, "heldout_second": 4.6})
    assert "train.early_stop_second_drop" in _early_stop(t, log, {"heldout_diversity": 0.41, "heldout_second": 4.4})


def _recipe(*args, env=None):
    return subprocess.run([sys.executable, str(RECIPE), *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **(env or {})}, timeout=300)


def test_recipe_help_and_error_line():
    out = _recipe("--help")
    assert out.returncode == 0 and "train.backprop_steps" in out.stdout and "generator.model" in out.stdout
    out = _recipe("train.backprop_steps=9")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == (
        "reward_finetune: error: train.backprop_steps: K=9 is more than generator.steps=8")


def test_the_readme_commands_parse():
    import re
    import shlex

    text = re.sub(r"\\\n\s*", " ", (ROOT / "README.md").read_text())
    commands = [shlex.split(line, comments=True)[2:] for line in text.splitlines()
                if line.startswith(".venv/bin/python recipes/reward_finetune.py")]
    assert len(commands) >= 3, commands
    for args in commands:
        parse_config(RewardFinetuneConfig, [a for a in args if a != "--help"])


def test_without_diffusers_one_line_names_the_extra():
    code = ("import sys; sys.modules['diffusers'] = None\n"
            "from psdistill.generation.sampler import diffusers_module\n"
            "try:\n    diffusers_module()\nexcept Exception as e:\n    print(type(e).__name__, e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == ("ConfigError reward fine-tuning needs diffusers: "
                                  "pip install 'psdistill[generate]'")


@pytest.mark.slow
def test_heldout_reward_rises_resumes_and_the_adapter_reproduces_it(tmp_path):
    run = tmp_path / "run"
    args = [f"run_dir={run}", "scorer=teacher-pointwise", "second_scorer=teacher-pointwise", *SMALL,
            "eval.images=4", "eval.every=2", "train.save_steps=2", "train.learning_rate=0.05"]
    first = finetune(parse_config(RewardFinetuneConfig, args + ["train.max_steps=2"]))
    result = finetune(parse_config(RewardFinetuneConfig, args + ["train.max_steps=4"]))  # resumes at 2
    rows = read_metrics(run)
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4] and first["steps"] == 2
    ev = [r for r in rows if "heldout_reward" in r]
    assert [r["step"] for r in ev] == [0, 2, 4]
    assert ev[-1]["heldout_reward"] > ev[0]["heldout_reward"], ev
    assert all(r["heldout_second"] is not None and r["heldout_diversity"] > 0 for r in ev)
    assert result["plot"].is_file() and (run / "lora" / "adapter_model.safetensors").is_file()
    # the saved adapter gives the last held-out reward again
    from psdistill.scoring.reward import load_reward

    gen = load_finetuned(run)
    images = gen.sample(gen.noise(range(1000, 1004))).images
    with torch.no_grad():
        again = float(load_reward("teacher-pointwise")(images).mean())
    assert again == pytest.approx(ev[-1]["heldout_reward"], abs=1e-5)
    # a changed setting is refused in the same run_dir
    with pytest.raises(ConfigError, match="train.learning_rate"):
        finetune(parse_config(RewardFinetuneConfig, args + ["train.learning_rate=0.1"]))
