"""Reward fine-tuning of a Stable-Diffusion-style text-to-image generator ("tiny-sd", psdistill.generation):
the component layout loaded from a folder as from a hub id, classifier-free guidance and the truncated
gradient through the VAE against a hand-written loop, the prompts config's errors; end to end (slow): the
held-out reward rises, an interrupted run resumed equals a whole one, the saved adapter reproduces it."""
import json
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
from psdistill.generation.sampler import TextToImageGenerator, load_generator  # noqa: E402
from tests.test_reward_finetune import _perturb  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = "train.prompts=[a red barn at dusk, a calm blue lake, an old stone bridge]"
SMALL = ["generator.model=tiny-sd", "generator.resolution=32", "generator.steps=4", "train.backprop_steps=2",
         PROMPTS]


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    """A saved tiny-sd pipeline folder (unet/, vae/, text_encoder/, tokenizer/, scheduler/)."""
    run = tmp_path_factory.mktemp("tiny_sd")
    load_generator(parse_config(RewardFinetuneConfig, [f"run_dir={run}", *SMALL]), run)
    return run / "base"


def _gen(run_dir, *overrides) -> TextToImageGenerator:
    cfg = parse_config(RewardFinetuneConfig, [f"run_dir={run_dir}", *SMALL, *overrides])
    return load_generator(cfg, run_dir)


def test_a_saved_folder_loads_by_its_components_as_a_hub_id_would(sd_folder, tmp_path):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    gen = _gen(tmp_path / "run", f"generator.model={sd_folder}")
    assert isinstance(gen, TextToImageGenerator)
    assert isinstance(gen.unet.get_base_model(), UNet2DConditionModel) and isinstance(gen.vae, AutoencoderKL)
    assert isinstance(gen.text_encoder, CLIPTextModel) and isinstance(gen.tokenizer, CLIPTokenizer)
    assert not (tmp_path / "run" / "base").exists()  # read where it is, not copied
    # the text encoder and VAE frozen, LoRA on the UNet only
    assert all("lora_" in n for n, p in gen.unet.named_parameters() if p.requires_grad) and gen.trainable()
    assert not any(p.requires_grad for m in (gen.vae, gen.text_encoder) for p in m.parameters())
    # the same weights as the tiny-sd run that built the folder: the same images for a (prompt, seed)
    built = _gen(sd_folder.parent)
    noise, prompts = gen.noise([3, 4]), ["a red barn at dusk", "a calm blue lake"]
    assert noise.shape == (2, 4, 8, 8)  # latents: the tiny VAE's 4x smaller side
    with torch.no_grad():
        images = gen.sample(noise, prompts).images
        torch.testing.assert_close(images, built.sample(noise, prompts).images, rtol=0, atol=0)
    assert images.shape == (2, 3, 32, 32) and 0 <= float(images.min()) and float(images.max()) <= 1
    # the tokenizer: CLIP's normalisation (lower case, BOS ... EOS, padded with EOS to model_max_length)
    ids = gen.tokenizer("Ab").input_ids
    assert ids == [gen.tokenizer.bos_token_id, *gen.tokenizer.convert_tokens_to_ids(["a", "b</w>"]),
                   gen.tokenizer.eos_token_id]


def _ddim(scheduler, x, t, eps):
    """One DDIM step (eta 0, Song et al. 2021 eq. 12) with SD's settings: no clip of x0, and the last step's
    alpha alphas_cumprod[0] (set_alpha_to_one=False)."""
    a = scheduler.alphas_cumprod
    prev = int(t) - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    a_t, a_prev = a[int(t)], a[prev] if prev >= 0 else a[0]
    x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    return a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps


def _hand_sample(gen, noise, prompts, scale, k):
    """CFG written out: the UNet run separately on the empty prompt's and each prompt's embeddings (one
    prompt at a time through the tokenizer and text encoder), uncond + scale * (text - uncond); the adapter in
    the last k steps, the gradient through them and the VAE decoder."""
    def embed(texts):
        return torch.cat([gen.text_encoder(gen.tokenizer(p, padding="max_length", return_tensors="pt").input_ids
                                           ).last_hidden_state for p in texts])

    with torch.no_grad():
        text, empty = embed(prompts), embed([""] * len(prompts))
    x, n = noise, len(gen.scheduler.timesteps)
    for i, t in enumerate(gen.scheduler.timesteps):
        with torch.set_grad_enabled(i >= n - k):
            def eps(cond):
                if i >= n - k:
                    return gen.unet(x, t, encoder_hidden_states=cond).sample
                with gen.unet.disable_adapter():
                    return gen.unet(x, t, encoder_hidden_states=cond).sample
            uncond = eps(empty)
            x = _ddim(gen.scheduler, x, t, uncond + scale * (eps(text) - uncond))
    return (gen.vae.decode(x).sample / 2 + 0.5).clamp(0, 1)  # the tiny VAE's scaling_factor is 1


def test_guided_truncated_gradient_through_the_vae_equals_a_hand_written_loop(sd_folder, tmp_path):
    gen = _gen(tmp_path, f"generator.model={sd_folder}", "generator.guidance_scale=3")
    assert gen.vae.config.scaling_factor == 1
    _perturb(gen)
    noise, prompts = gen.noise([5, 6]), ["a red barn at dusk", "an old stone bridge"]
    ours = gen.sample(noise, prompts, grad=True).images
    ours.mean().backward()
    ours_grads = [p.grad.clone() for p in gen.trainable()]
    gen.unet.zero_grad(set_to_none=True)
    hand = _hand_sample(gen, noise, prompts, scale=3.0, k=2)
    hand.mean().backward()
    torch.testing.assert_close(ours, hand, rtol=0, atol=1e-5)
    for a, p in zip(ours_grads, gen.trainable()):
        torch.testing.assert_close(a, p.grad, rtol=1e-4, atol=1e-8)
    assert sum(float(g.abs().sum()) for g in ours_grads) > 0
    # guidance really changes the sample: scale 1 (no guidance, one UNet pass) gives other images
    plain = _gen(tmp_path / "plain", f"generator.model={sd_folder}")
    _perturb(plain)
    with torch.no_grad():
        unguided = plain.sample(noise, prompts).images
        torch.testing.assert_close(unguided, _hand_sample(plain, noise, prompts, scale=1.0, k=2), rtol=0,
                                   atol=1e-5)
    assert float((unguided - ours.detach()).abs().mean()) > 1e-3


def test_the_prompt_changes_the_image(sd_folder, tmp_path):
    gen = _gen(tmp_path, f"generator.model={sd_folder}")
    noise = gen.noise([7, 7])
    with torch.no_grad():
        a, b = gen.sample(noise, ["a red barn at dusk", "a calm blue lake"]).images
    assert float((a - b).abs().mean()) > 1e-4


def test_penalties_zero_at_init(sd_folder, tmp_path):
    gen = _gen(tmp_path, f"generator.model={sd_folder}", "generator.guidance_scale=2")
    out = gen.sample(gen.noise([1, 2]), ["a calm blue lake"] * 2, grad=True, kl=True, reference=True)
    assert float(out.kl.detach()) == 0 and torch.equal(out.images, out.reference)
    _perturb(gen)
    out = gen.sample(gen.noise([1, 2]), ["a calm blue lake"] * 2, kl=True, reference=True)
    assert float(out.kl) > 0 and not torch.allclose(out.images, out.reference)


def test_heldout_prompts_pair_with_the_seeds(tmp_path):
    prompts = tmp_path / "heldout.txt"
    prompts.write_text("a snowy peak\n\n  a quiet street  \n")
    cfg = parse_config(RewardFinetuneConfig, [*SMALL, f"eval.prompts_file={prompts}", "eval.images=3"])
    assert cfg.prompts() == (["a red barn at dusk", "a calm blue lake", "an old stone bridge"],
                             ["a snowy peak", "a quiet street", "a snowy peak"])
    train_only = parse_config(RewardFinetuneConfig, [*SMALL, "eval.images=2"])
    assert train_only.prompts()[1] == ["a red barn at dusk", "a calm blue lake"]


@pytest.mark.parametrize("overrides,message", [
    (["train.prompts_file=/nonexistent/prompts.txt"], r"^train.prompts_file /nonexistent/prompts.txt: no such file$"),
    (["train.prompts=[a cat, ' ']"], r"^train.prompts\[1\]: an empty prompt"),
    (["generator.guidance_scale=0.5"], r"^generator.guidance_scale: must be >= 1"),
])
def test_bad_prompts_config_is_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(RewardFinetuneConfig, overrides)


def test_an_empty_prompts_file_is_one_line_naming_it(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(ConfigError, match=rf"^eval.prompts_file {empty}: no prompts in it"):
        parse_config(RewardFinetuneConfig, [f"eval.prompts_file={empty}"])


def test_prompts_must_fit_the_model(sd_folder, tmp_path):
    with pytest.raises(ConfigError, match="train.prompts: generator.model .* is text-to-image and needs training"):
        load_generator(parse_config(RewardFinetuneConfig, [f"generator.model={sd_folder}"]), tmp_path)
    tiny = parse_config(RewardFinetuneConfig, ["generator.resolution=16", "generator.steps=4", PROMPTS])
    with pytest.raises(ConfigError, match="generator.model 'tiny' is unconditional"):
        load_generator(tiny, tmp_path / "tiny")


def test_an_incomplete_or_unsupported_pipeline_is_one_line(sd_folder, tmp_path):
    import shutil

    partial = tmp_path / "partial"
    shutil.copytree(sd_folder / "unet", partial / "unet")
    shutil.copytree(sd_folder / "scheduler", partial / "scheduler")
    with pytest.raises(ConfigError, match=r"generator.model .*partial': a text-to-image pipeline needs unet, vae, "
                                          r"text_encoder, tokenizer, scheduler \("):
        load_generator(parse_config(RewardFinetuneConfig, [f"generator.model={partial}", PROMPTS]), tmp_path)
    config = json.loads((partial / "unet" / "config.json").read_text())
    (partial / "unet" / "config.json").write_text(json.dumps({**config, "addition_embed_type": "text_time"}))
    with pytest.raises(ConfigError, match="addition_embed_type=text_time, SDXL-style"):
        load_generator(parse_config(RewardFinetuneConfig, [f"generator.model={partial}", PROMPTS]), tmp_path)
    (partial / "unet" / "config.json").write_text(json.dumps({**config, "_class_name": "UNet3DConditionModel"}))
    with pytest.raises(ConfigError, match="its unet is a UNet3DConditionModel; supported: UNet2DModel"):
        load_generator(parse_config(RewardFinetuneConfig, [f"generator.model={partial}", PROMPTS]), tmp_path)


def test_recipe_error_line_names_the_prompts_file():
    out = subprocess.run([sys.executable, str(ROOT / "recipes" / "reward_finetune.py"), "generator.model=tiny-sd",
                          "train.prompts_file=missing-prompts.txt"], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ}, timeout=300)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == (
        "reward_finetune: error: train.prompts_file missing-prompts.txt: no such file")


E2E = ["scorer=teacher-pointwise", "second_scorer=teacher-pointwise", *SMALL, "generator.guidance_scale=2",
       "eval.prompts=[a snowy peak, a quiet street]", "eval.images=4", "eval.every=2", "train.save_steps=2",
       "train.learning_rate=0.05"]


def _finetune(run, *more):
    return finetune(parse_config(RewardFinetuneConfig, [f"run_dir={run}", *E2E, *more]), log=lambda line: None)


@pytest.mark.slow  # ~20 s: three short runs
def test_tiny_sd_heldout_reward_rises_a_resumed_run_equals_a_whole_one_and_the_adapter_reproduces_it(tmp_path):
    interrupted = _finetune(tmp_path / "a", "train.max_steps=2")
    resumed = _finetune(tmp_path / "a", "train.max_steps=4")  # continues from checkpoints/step-2
    _finetune(tmp_path / "b", "train.max_steps=4")
    rows, whole = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    assert interrupted["steps"] == 2 and [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    heldout = {r["step"]: r["heldout_reward"] for r in rows if "heldout_reward" in r}
    assert heldout == pytest.approx({r["step"]: r["heldout_reward"] for r in whole if "heldout_reward" in r},
                                    abs=1e-6)
    # the random teacher barely tells these images apart (+0.001 here), but the climb is deterministic
    assert heldout[0] < heldout[2] < heldout[4], heldout
    assert resumed["plot"].is_file() and all(r["heldout_diversity"] > 0 for r in rows if "heldout_reward" in r)
    from psdistill.scoring.reward import load_reward

    gen = load_finetuned(tmp_path / "a")
    with torch.no_grad():
        images = gen.sample(gen.noise(range(1000, 1004)), ["a snowy peak", "a quiet street"] * 2).images
        again = float(load_reward("teacher-pointwise")(images).mean())
    assert again == pytest.approx(heldout[4], abs=1e-5)


def test_a_run_written_before_the_prompt_keys_still_resumes(tmp_path):
    import yaml

    from psdistill.core.config import save_config
    from psdistill.generation.draft import _check_same_run

    cfg = parse_config(RewardFinetuneConfig, [f"run_dir={tmp_path}", "scorer=teacher-pointwise"])
    save_config(cfg, tmp_path / "config.yaml")
    old = yaml.safe_load((tmp_path / "config.yaml").read_text())
    for group, key in [("train", "prompts"), ("train", "prompts_file"), ("eval", "prompts"),
                       ("eval", "prompts_file"), ("generator", "guidance_scale")]:
        del old[group][key]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    no_prompts = {"train": [], "heldout": []}
    _check_same_run(cfg, tmp_path, no_prompts)  # the missing keys read as their defaults
    with pytest.raises(ConfigError, match="holds a run with generator.guidance_scale=1.0"):
        _check_same_run(parse_config(RewardFinetuneConfig, [f"run_dir={tmp_path}", "scorer=teacher-pointwise",
                                                            "generator.guidance_scale=2"]), tmp_path, no_prompts)


def test_a_run_resumed_on_an_edited_prompts_file_is_refused(tmp_path):
    """The config names the file, not what it held: a run resumed after its prompts changed is another run."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red barn\na calm lake\n")
    args = [f"train.prompts_file={prompts}", "train.max_steps=1", "eval.images=2", *E2E]
    args.remove("eval.images=4")
    run = tmp_path / "run"
    finetune(parse_config(RewardFinetuneConfig, [f"run_dir={run}", *args]), log=lambda line: None)
    assert json.loads((run / "prompts.json").read_text())["train"][-2:] == ["a red barn", "a calm lake"]  # after SMALL's
    prompts.write_text("a red barn\na stormy sea\n")
    with pytest.raises(ConfigError, match=rf"^run_dir {run}: holds a run on other prompts"):
        finetune(parse_config(RewardFinetuneConfig, [f"run_dir={run}", *args]), log=lambda line: None)
