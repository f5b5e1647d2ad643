"""DRaFT-K reward fine-tuning of a diffusers generator on a psdistill scorer, resumable.

    from psdistill.generation import RewardFinetuneConfig, finetune
    finetune(RewardFinetuneConfig(scorer="runs/demo", run_dir="runs/draft"))

Each step: fresh noise (seeds 2^32 + step * batch + j, never a held-out seed) and, for a text-to-image
model, the next training prompts in turn, DDIM sampling with the gradient through the last K steps (and the
VAE decoder; sampler.py), loss = -mean reward + kl_weight * KL + image_weight * reference-image penalty,
AdamW on the LoRA weights only. The held-out seeds (eval.seed + i, with held-out prompt i) are scored with
the reward and the second scorer, and their diversity measured, at step 0, every eval.every steps and at
the end. Outputs in run_dir: config.yaml, prompts.json, base/ ("tiny", "tiny-sd"), lora/ (the adapter, peft format),
checkpoints/step-N/ (adapter, optimizer, state), metrics.jsonl, reward_curve.png, logs/run.log.
A rerun resumes from the last checkpoint (metrics after it are recomputed); a finished or early-stopped
run is read, not retrained.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable, Optional

import torch

from psdistill.core.config import parse_config, save_config, to_dict
from psdistill.core.errors import ConfigError
from psdistill.core.logs import bar_disable
from psdistill.core.run_lock import run_lock
from psdistill.generation.config import RewardFinetuneConfig
from psdistill.generation.report import MetricsLog, plot, summary_lines
from psdistill.generation.sampler import TRAIN_SEED_BASE, Generator, diversity, load_generator
from psdistill.scoring.reward import load_reward

CHECKPOINTS = "checkpoints"
KEEP_CHECKPOINTS = 2
PROMPTS = "prompts.json"  # the resolved training and held-out prompts of the run
RESUMABLE_KEYS = ("train.max_steps", "train.save_steps", "train.early_stop_diversity",
                  "train.early_stop_second_drop", "eval.every", "device")  # may change between a run and its resume


def finetune(cfg: RewardFinetuneConfig, log: Callable[[str], None] = print) -> dict:
    """Train (or resume) the run in cfg.run_dir; returns {"steps", "stopped", "lora", "metrics", "plot", "summary"}."""
    if cfg.scorer is None:
        raise ConfigError("scorer: required (a run directory, a student/ folder or a registered scorer name)")
    run_dir = Path(cfg.run_dir)
    with run_lock(run_dir):
        train_prompts, heldout_prompts = cfg.prompts()  # the prompt files read once
        prompts = {"train": train_prompts, "heldout": heldout_prompts}
        _check_same_run(cfg, run_dir, prompts)
        save_config(cfg, run_dir / "config.yaml")
        (run_dir / PROMPTS).write_text(json.dumps(prompts, indent=1))
        device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
        gen = load_generator(cfg, run_dir, device)
        reward = load_reward(cfg.scorer, device=device, gradient_checkpointing=cfg.train.gradient_checkpointing)
        second = load_reward(cfg.second_scorer, device=device) if cfg.second_scorer else None
        optimizer = torch.optim.AdamW(gen.trainable(), lr=cfg.train.learning_rate)
        state = _resume(run_dir, gen, optimizer)
        if state["step"]:
            log(f"resumed from {run_dir / CHECKPOINTS}/step-{state['step']}")
        metrics = MetricsLog(run_dir, upto=state["step"])
        heldout = (gen.noise(range(cfg.eval.seed, cfg.eval.seed + cfg.eval.images)), heldout_prompts or None)
        if metrics.first("heldout_reward") is None:
            metrics.write({"step": 0, **_evaluate(gen, heldout, reward, second)})
        stopped = state.get("stopped") or _train(cfg, gen, reward, second, optimizer, metrics, heldout,
                                                 train_prompts, state, log)
        gen.unet.save_pretrained(run_dir / "lora")
        names = (cfg.scorer, cfg.second_scorer)
        path = plot(run_dir, *names)
        summary = summary_lines(run_dir, *names)
        if stopped:
            log(f"stopped early: {stopped}")
    return {"steps": metrics.rows[-1]["step"], "stopped": stopped, "lora": run_dir / "lora",
            "metrics": metrics.path, "plot": path, "summary": summary}


def _train(cfg, gen: Generator, reward, second, optimizer, metrics: MetricsLog, heldout, prompts: list[str],
           state, log) -> Optional[str]:
    """Steps state["step"]+1 .. max_steps; returns why it stopped early, or None."""
    from tqdm.auto import tqdm

    t, stopped = cfg.train, None
    bar = tqdm(range(state["step"] + 1, t.max_steps + 1), initial=state["step"], total=t.max_steps,
               desc="reward fine-tuning", disable=bar_disable())
    for step in bar:
        seeds = [TRAIN_SEED_BASE + step * t.batch_size + j for j in range(t.batch_size)]
        batch = [prompts[(step * t.batch_size + j) % len(prompts)] for j in range(t.batch_size)] if prompts else None
        out = gen.sample(gen.noise(seeds), batch, grad=True, kl=t.kl_weight > 0, reference=t.image_weight > 0)
        scores = _scalar(reward(out.images))
        loss = -scores.mean()
        row = {"step": step, "reward": float(scores.detach().mean())}
        if out.kl is not None:
            loss = loss + t.kl_weight * out.kl
            row["kl"] = float(out.kl.detach())
        if out.reference is not None:
            penalty = (out.images - out.reference).pow(2).mean()
            loss = loss + t.image_weight * penalty
            row["image_penalty"] = float(penalty.detach())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        row["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(gen.trainable(), t.max_grad_norm))
        optimizer.step()
        row["loss"] = float(loss.detach())
        if step % cfg.eval.every == 0 or step == t.max_steps:
            row.update(_evaluate(gen, heldout, reward, second))
            stopped = _early_stop(t, metrics, row)
            log(f"step {step}: held-out reward {row['heldout_reward']:.3f}"
                + (f", second {row['heldout_second']:.3f}" if row.get("heldout_second") is not None else "")
                + f", diversity {row['heldout_diversity']:.4f}")
        metrics.write(row)
        bar.set_postfix(reward=f"{row['reward']:.3f}")
        if stopped or step % t.save_steps == 0 or step == t.max_steps:
            _save_checkpoint(Path(cfg.run_dir), gen, optimizer, {"step": step, "stopped": stopped})
        if stopped:
            break
    bar.close()
    return stopped


@torch.no_grad()
def _evaluate(gen: Generator, heldout, reward, second) -> dict:
    noise, prompts = heldout
    images = gen.sample(noise, prompts).images
    return {"heldout_reward": float(_scalar(reward(images)).mean()),
            "heldout_second": float(_scalar(second(images)).mean()) if second is not None else None,
            "heldout_diversity": diversity(images)}


def _scalar(scores: torch.Tensor) -> torch.Tensor:
    """(B,) from a reward's (B,) or (B, D) scores: the mean over dimensions (reward_fn's default weights)."""
    return scores if scores.ndim == 1 else scores.mean(dim=1)


def _early_stop(t, metrics: MetricsLog, row: dict) -> Optional[str]:
    d0, s0 = metrics.first("heldout_diversity"), metrics.first("heldout_second")
    if t.early_stop_diversity is not None and row["heldout_diversity"] < t.early_stop_diversity * d0:
        return (f"held-out diversity {row['heldout_diversity']:.4f} below {t.early_stop_diversity} x "
                f"{d0:.4f} (train.early_stop_diversity)")
    if t.early_stop_second_drop is not None and s0 is not None and row["heldout_second"] < s0 - t.early_stop_second_drop:
        return (f"second scorer {row['heldout_second']:.3f} more than {t.early_stop_second_drop} below {s0:.3f} "
                "(train.early_stop_second_drop)")
    return None


def _check_same_run(cfg: RewardFinetuneConfig, run_dir: Path, prompts: dict) -> None:
    """A run directory resumes only the run it holds: keys other than RESUMABLE_KEYS must be equal (a key
    its config.yaml lacks, added since it was written, counts as the default), and so must the resolved
    ``prompts`` ({"train", "heldout"}) it kept in prompts.json."""
    import yaml

    path = run_dir / "config.yaml"
    if not path.is_file():
        return
    old = {**_flat(to_dict(RewardFinetuneConfig())), **_flat(yaml.safe_load(path.read_text()) or {})}
    new = _flat(to_dict(cfg))
    changed = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k) and k not in RESUMABLE_KEYS]
    if changed:
        k = changed[0]
        raise ConfigError(f"run_dir {run_dir}: holds a run with {k}={old.get(k)!r} (now {new.get(k)!r}); use "
                          "another run_dir, or delete it to start over")
    # the config names a prompts file, not what it held: the prompts themselves are kept beside it
    said = run_dir / PROMPTS
    if said.is_file() and json.loads(said.read_text()) != prompts:
        raise ConfigError(f"run_dir {run_dir}: holds a run on other prompts than train/eval.prompts(_file) give "
                          f"now ({said}); use another run_dir, or delete it to start over")


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _checkpoints(run_dir: Path) -> list[Path]:
    found = [p for p in (run_dir / CHECKPOINTS).glob("step-*") if (p / "state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def _save_checkpoint(run_dir: Path, gen: Generator, optimizer, state: dict) -> None:
    """checkpoints/step-N/: the adapter (peft's save_pretrained), the optimizer, state.json written last, so
    a checkpoint without state.json (killed while saving) is ignored; the older ones beyond KEEP are removed."""
    path = run_dir / CHECKPOINTS / f"step-{state['step']}"
    gen.unet.save_pretrained(path)
    torch.save(optimizer.state_dict(), path / "optimizer.pt")
    (path / "state.json").write_text(json.dumps(state))
    for old in _checkpoints(run_dir)[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old)


def _resume(run_dir: Path, gen: Generator, optimizer) -> dict:
    """Load the last checkpoint into `gen` and `optimizer`; its state, or {"step": 0}."""
    found = _checkpoints(run_dir)
    if not found:
        return {"step": 0}
    path = found[-1]
    _load_adapter(gen, path)
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location=gen.device))
    return json.loads((path / "state.json").read_text())


def _load_adapter(gen: Generator, folder: Path) -> None:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(gen.unet, load_file(folder / "adapter_model.safetensors"))


def load_finetuned(run_dir: str | Path, device: str | torch.device = "cpu") -> Generator:
    """The fine-tuned generator of a finished run (its config.yaml, base and lora/):
    `load_finetuned("runs/reward_finetune").sample(noise).images` (text-to-image: `.sample(noise, prompts)`)."""
    run_dir = Path(run_dir)
    if not (run_dir / "lora" / "adapter_model.safetensors").is_file():
        raise ConfigError(f"{run_dir}: no lora/adapter_model.safetensors (not a finished reward fine-tuning run)")
    cfg = parse_config(RewardFinetuneConfig, ["--config", str(run_dir / "config.yaml")])
    gen = load_generator(cfg, run_dir, device)
    _load_adapter(gen, run_dir / "lora")
    return gen
