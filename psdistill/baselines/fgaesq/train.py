"""FGAesQ's training (Sec. 4.4): coarse pre-training, then alternating coarse and fine batches.

`train_fgaesq(cfg, train_records, accelerator, out_dir, resume_key)` trains on every process and
writes, in `out_dir` (the recipe's run dir, `psdistill.pipeline.fgaesq`):

    checkpoint/          config.json + model.safetensors (the main process, after the last epoch)
    train_state.pt       model + optimizer(s) after the last finished epoch, keyed by `resume_key`
    train_log.jsonl      losses every `train.log_every` steps

Runs under `accelerate launch` (DDP): every process draws the same batches from seeded
generators and takes its share (`batch[rank::world]`); the model is called once per step. Only
the main process writes files.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from psdistill.baselines.fgaesq.config import FGAesQConfig
from psdistill.baselines.fgaesq.data import (ImageCache, coarse_batches, coarse_items, cycle, fine_batches,
                                            fine_series)
from psdistill.baselines.fgaesq.difftoken import collate_tokens, difftoken
from psdistill.baselines.fgaesq.losses import (ctalign_loss, describe_pair, direct_rank_loss, emd_loss,
                                              rankreg_loss)
from psdistill.baselines.fgaesq.model import FGAesQModel, load_base
from psdistill.core.errors import ConfigError
from psdistill.core.logs import bar_disable
from psdistill.core.storage import writing
from psdistill.data.records import ImageRecord


class FGAesQTrainingLoop:
    """FGAesQ's two-stage optimisation; `train()` trains (or resumes) the model in memory, keeping its
    resumable state and loss log in `out_dir`."""

    def __init__(self, cfg: FGAesQConfig, train_records: Sequence[ImageRecord], accelerator, out_dir: str | Path,
                 log: Callable = print):
        self.cfg, self.acc, self.log = cfg, accelerator, log
        self.out_dir = Path(out_dir)
        d, lc = cfg.data, cfg.loss
        self.coarse = coarse_items(train_records, d.dimensions[0], d.rating_scale, d.target_sigma, d.histogram_prefix) \
            if lc.emd else []
        needs_fine = lc.ctalign or lc.rank != "none"
        self.series = fine_series(train_records) if needs_fine else []
        if lc.emd and not self.coarse:
            raise ConfigError(f"loss.emd: no training record has a {d.dimensions[0]!r} score (or set loss.emd=false)")
        if needs_fine and not self.series:
            raise ConfigError("loss.ctalign/loss.rank: no training series with >= 2 ranked images "
                              "(set loss.ctalign=false loss.rank=none to train on scores only)")
        self.images = ImageCache(d.image_cache)

        m = cfg.model
        self.model, text = load_base(m.name_or_path, seed=m.seed, image_size=m.tiny_image_size,
                                     with_text=lc.ctalign, difftoken=cfg.difftoken, head_input=m.head_input,
                                     attn_implementation=m.attn_implementation, head_dropout=m.head_dropout)
        if m.init_weights:
            from psdistill.baselines.fgaesq.official import load_official_weights

            self.log(load_official_weights(self.model, m.init_weights).summary())
        self.text_emb: dict[str, torch.Tensor] = {}
        if lc.ctalign:
            if text is None:
                raise ConfigError(f"loss.ctalign: {m.name_or_path!r} has no text tower/tokenizer; set loss.ctalign=false")
            texts = sorted({describe_pair(a.rank, b.rank, a.comment, b.comment)
                            for s in self.series for a in s for b in s if a is not b})
            emb = text.to(self.acc.device).encode(texts)
            self.text_emb = {t: e for t, e in zip(texts, emb)}
            del text  # frozen and precomputed: the text tower is not needed any more

        if m.head_input == "pooled" and not lc.ctalign:
            # Nothing reads the projection then; a parameter without a gradient would stall DDP.
            self.model.visual_projection.requires_grad_(False)
        tc = cfg.train
        params = [p for p in self.model.parameters() if p.requires_grad]
        # See FGAesQTrainConfig.momentum for the two readings of "momentum coefficients 0.615 and 0.8".
        kinds = ("coarse", "fine") if tc.momentum == "per_objective" else ("shared",)
        self.optimizers = {k: torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay,
                                                betas=(tc.fine_momentum if k == "fine" else tc.coarse_momentum,
                                                       tc.adam_beta2)) for k in kinds}
        self.step = 0
        self.epochs = [("pretrain", e) for e in range(tc.pretrain_epochs if lc.emd else 0)] + \
                      [("joint", e) for e in range(tc.joint_epochs)]

    # -- helpers -------------------------------------------------------------------------------
    @property
    def unwrapped(self) -> FGAesQModel:
        return self.acc.unwrap_model(self.ddp_model)

    def _rng(self, *keys) -> np.random.Generator:
        return np.random.default_rng([self.cfg.seed, *keys])

    def _optimizer(self, kind: str):
        """The optimizer of a coarse or fine step, with its momentum coefficient set."""
        tc = self.cfg.train
        if "shared" not in self.optimizers:
            return self.optimizers[kind]
        opt = self.optimizers["shared"]
        for g in opt.param_groups:
            g["betas"] = (tc.fine_momentum if kind == "fine" else tc.coarse_momentum, tc.adam_beta2)
        return opt

    def _single(self, images):
        """Single-image path: model outputs in the order of `images`."""
        groups, idx = self.unwrapped.preprocess(images)
        out = self.ddp_model(pixel_values=[g.to(self.acc.device) for g in groups])
        flat = [k for ks in idx for k in ks]
        inv = torch.empty(len(flat), dtype=torch.long)
        inv[torch.tensor(flat)] = torch.arange(len(flat))
        return out, inv.to(self.acc.device)

    # -- steps ---------------------------------------------------------------------------------
    def coarse_loss(self, batch) -> tuple[torch.Tensor, dict]:
        items = [self.coarse[k] for k in batch]
        out, inv = self._single([self.images(it.record.path) for it in items])
        target = torch.tensor(np.stack([it.target for it in items]), dtype=torch.float32, device=self.acc.device)
        loss = emd_loss(out.probs[inv], target, r=self.cfg.loss.emd_r)
        return loss, {"emd": loss.item()}

    def fine_loss(self, batch, rng: np.random.Generator, gen: torch.Generator) -> tuple[torch.Tensor, dict]:
        cfg = self.cfg
        model = self.unwrapped
        members, refs, spans = [], [], []
        for k in batch:
            s = self.series[k]
            base = len(members)
            # Each member is tokenized against a random other member of its series (the paper samples
            # a pair (x, y1); we give every member a reference so all of them get scores for RankReg).
            for a in range(len(s)):
                b = int(rng.integers(len(s) - 1))
                refs.append(base + (b if b < a else b + 1))
                members.append(s[a])
            spans.append((base, len(members)))
        ims = [self.images(r.path) for r in members]
        if cfg.difftoken.enabled:
            toks = [difftoken(ims[i], ims[refs[i]], cfg.difftoken, model.image_size, model.patch_size,
                              model.config.image_mean, model.config.image_std, gen)[0] for i in range(len(ims))]
            batch_t = {k: v.to(self.acc.device) for k, v in collate_tokens(toks).items()}
            out = self.ddp_model(**batch_t)
            scores, embeds = out.scores, out.embeds
        else:
            out, inv = self._single(ims)
            scores, embeds = out.scores[inv], out.embeds[inv]
        logs, loss = {}, scores.new_zeros(())
        if cfg.loss.rank != "none":
            fn = rankreg_loss if cfg.loss.rank == "rankreg" else direct_rank_loss
            rank = torch.stack([fn(scores[a:b], [r.rank for r in members[a:b]], gen) for a, b in spans]).mean()
            loss = loss + rank
            logs[cfg.loss.rank] = rank.item()
        if cfg.loss.ctalign:
            texts = torch.stack([self.text_emb[describe_pair(members[i].rank, members[refs[i]].rank, members[i].comment,
                                                            members[refs[i]].comment)]
                                 for i in range(len(members))]).to(embeds.dtype)
            align = ctalign_loss(embeds, embeds[torch.tensor(refs, device=embeds.device)], texts)
            loss = loss + cfg.loss.ctalign_weight * align
            logs["ctalign"] = align.item()
        return loss, logs

    def optimizer_step(self, loss: torch.Tensor, kind: str):
        opt = self._optimizer(kind)
        opt.zero_grad(set_to_none=True)
        self.acc.backward(loss)
        if self.cfg.train.max_grad_norm:
            self.acc.clip_grad_norm_(self.ddp_model.parameters(), self.cfg.train.max_grad_norm)
        opt.step()
        self.step += 1

    # -- loop ----------------------------------------------------------------------------------
    def _plan(self, e_idx: int, rng: np.random.Generator) -> list[tuple[str, np.ndarray | list[int]]]:
        """Epoch `e_idx`'s ("coarse" | "fine", batch) steps, drawn from `rng` (and, for the coarse batches of a
        joint epoch, from generators seeded by the epoch: a resumed run draws the same ones)."""
        tc, world = self.cfg.train, self.acc.num_processes
        if self.epochs[e_idx][0] == "pretrain":
            return [("coarse", b) for b in coarse_batches(len(self.coarse), tc.coarse_batch_size, rng, world)]
        fb = fine_batches(self.series, tc.fine_batch_images, rng, world) if self.series else []
        # Coarse batches of a joint epoch: reshuffled passes over the coarse set.
        coarse_iter = cycle(lambda k: coarse_batches(
            len(self.coarse), tc.coarse_batch_size, self._rng(2, e_idx, k), world)) if self.cfg.loss.emd else None
        plan = []
        for b in fb:
            if coarse_iter is not None:
                plan.append(("coarse", next(coarse_iter)))
            plan.append(("fine", b))
        return plan

    def _total_steps(self) -> int:
        """Optimizer steps of the whole run (the progress bar's length)."""
        tc, world = self.cfg.train, self.acc.num_processes
        n_fine = len(fine_batches(self.series, tc.fine_batch_images, self._rng(0), world)) if self.series else 0
        n_pre = len(coarse_batches(len(self.coarse), tc.coarse_batch_size, self._rng(0), world)) if self.coarse else 0
        total = sum(n_pre if ph == "pretrain" else n_fine * (2 if self.cfg.loss.emd else 1) for ph, _ in self.epochs)
        return min(total, tc.max_steps) if tc.max_steps else total

    def train(self, resume_key: str) -> dict:
        """Every epoch, resuming after the last one that train_state.pt holds for `resume_key` (the
        caller's fingerprint of what decides the weights)."""
        from tqdm.auto import tqdm

        tc, acc = self.cfg.train, self.acc
        state_path = self.out_dir / "train_state.pt"
        start_epoch = self._resume(state_path, resume_key)
        log_file = self.out_dir / "train_log.jsonl"
        if start_epoch == 0 and acc.is_main_process:
            log_file.unlink(missing_ok=True)  # a fresh start: the log of an abandoned run goes
        names = list(self.optimizers)
        self.ddp_model, *opts = acc.prepare(self.model, *self.optimizers.values())
        self.optimizers = dict(zip(names, opts))
        self.ddp_model.train()
        world, rank = acc.num_processes, acc.process_index
        t0 = time.time()
        total = self._total_steps()
        bar = tqdm(total=total, initial=min(self.step, total), disable=bar_disable(acc.is_local_main_process),
                   desc="fgaesq", dynamic_ncols=True)
        last: dict = {}
        for e_idx in range(start_epoch, len(self.epochs)):
            phase, epoch = self.epochs[e_idx]
            rng = self._rng(1, e_idx)
            gen = torch.Generator().manual_seed(int(rng.integers(2 ** 31)))
            # The head's dropout draws from torch's global RNG: seed it per epoch, so an epoch resumed
            # after a kill draws the same masks as in an uninterrupted run.
            torch.manual_seed(int(self._rng(3, e_idx).integers(2 ** 31)))
            for kind, b in self._plan(e_idx, rng):
                if tc.max_steps and self.step >= tc.max_steps:
                    break
                mine = b[rank::world]
                with acc.autocast():
                    loss, logs = self.coarse_loss(mine) if kind == "coarse" else self.fine_loss(mine, rng, gen)
                self.optimizer_step(loss, kind)
                last = {"step": self.step, "phase": phase, "epoch": epoch, "batch": kind, "loss": loss.item(), **logs}
                if acc.is_main_process and (self.step % tc.log_every == 0 or self.step == 1):
                    with open(log_file, "a") as f:
                        f.write(json.dumps(last) + "\n")
                bar.set_postfix({k: round(v, 4) for k, v in last.items() if isinstance(v, float)}, refresh=False)
                bar.update(1)
            if tc.max_steps and self.step >= tc.max_steps:
                break
            self._save_state(state_path, resume_key, e_idx + 1)
        bar.close()
        return {"steps": self.step, "processes": world, "seconds": round(time.time() - t0, 1), "last": last}

    # -- resume --------------------------------------------------------------------------------
    def _save_state(self, path: Path, resume_key: str, next_epoch: int):
        self.acc.wait_for_everyone()
        if self.acc.is_main_process:
            tmp = path.with_suffix(".tmp")
            # The unwrapped model's state: no DDP "module." prefix in the keys (see STYLE.md anti-pattern 2).
            with writing(path):  # torch.save names neither the file nor the cause of a failed write
                torch.save({"fingerprint": resume_key, "next_epoch": next_epoch, "step": self.step,
                            "model": self.unwrapped.state_dict(),
                            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()}}, tmp)
                tmp.replace(path)
        self.acc.wait_for_everyone()

    def _resume(self, path: Path, resume_key: str) -> int:
        if not path.is_file():
            return 0
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("fingerprint") != resume_key:
            self.log(f"{path}: from another config; starting over")
            return 0
        self.model.load_state_dict(state["model"])
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        self.step = int(state["step"])
        self.log(f"resuming after epoch {state['next_epoch']} of {len(self.epochs)} (step {self.step})")
        return int(state["next_epoch"])


def train_fgaesq(cfg: FGAesQConfig, train_records: Sequence[ImageRecord], accelerator, out_dir: str | Path,
                 resume_key: str, log: Callable = print) -> dict:
    """Train on every process (resuming from `out_dir`/train_state.pt when it holds `resume_key`); the main
    process writes `out_dir`/checkpoint. Returns the run's summary (steps, processes, seconds, last losses)."""
    loop = FGAesQTrainingLoop(cfg, train_records, accelerator, out_dir, log=log)
    info = loop.train(resume_key)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        checkpoint = Path(out_dir) / "checkpoint"
        with writing(checkpoint):
            loop.unwrapped.save_pretrained(checkpoint)
    return info
