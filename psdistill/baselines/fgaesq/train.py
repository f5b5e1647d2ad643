"""Train and evaluate FGAesQ (Sec. 4.4) on the shared stage runner (`psdistill.pipeline.runner`):

    data      the pipeline's data stage: build the demo or read data.manifest, check every image opens
    train     coarse pre-training, then alternating coarse/fine batches, on every process (resumes)
    score     every record through the single-image path, and series images through DiffToken
    evaluate  the pipeline's evaluation stage: every predictions file against ground truth

    <run_dir>/config.yaml                 the resolved config
    <run_dir>/data/manifest.csv           the images (the demo is built under <run_dir>/demo)
    <run_dir>/checkpoint/                 config.json + model.safetensors
    <run_dir>/train_state.pt              model + optimizer(s) after the last finished epoch (resume)
    <run_dir>/train_log.jsonl             losses every `train.log_every` steps
    <run_dir>/predictions/fgaesq.csv      every record, single-image path, on data.rating_scale
    <run_dir>/predictions/fgaesq-difftoken.csv  series images scored against their series (DiffToken)
    <run_dir>/report/                     metrics.json, report.md, plots (`psdistill.evaluation`); the
                                          test split is the report's held-out group
    <run_dir>/stages/<stage>.json         what finished, with which config (`psdistill.pipeline.runner`)

Runs under `accelerate launch` (DDP): every process draws the same batches from seeded
generators and takes its share (`batch[rank::world]`); the model is called once per step. Only
the main process writes files; the other stages run on it alone.
"""
from __future__ import annotations

import json
import time
from dataclasses import fields, replace
from functools import cached_property
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from psdistill.baselines.fgaesq.config import FGAesQConfig, FGAesQTrainConfig
from psdistill.baselines.fgaesq.data import (ImageCache, coarse_batches, coarse_items, cycle, fine_batches,
                                            fine_series, from_bins)
from psdistill.baselines.fgaesq.difftoken import collate_tokens, difftoken
from psdistill.baselines.fgaesq.losses import (ctalign_loss, describe_pair, direct_rank_loss, emd_loss,
                                              rankreg_loss)
from psdistill.baselines.fgaesq.model import FGAesQModel, load_base
from psdistill.core.config import save_config
from psdistill.data.predictions import write_predictions
from psdistill.core.errors import ConfigError
from psdistill.pipeline import STAGES as PIPELINE_STAGES
from psdistill.data.config import DataConfig
from psdistill.pipeline import RunContext, print_report
from psdistill.pipeline.runner import Stage, fingerprint, marker_path, run_stages
from psdistill.core.storage import writing

SCORER = "fgaesq"


class FGAesQRun(RunContext):
    """The pipeline's run context (config, run dir, records, category split) with the accelerator.
    FGAesQ's training categories must be named: every other category is its test split."""

    def __init__(self, cfg: FGAesQConfig, accelerator, log: Callable = print):
        super().__init__(cfg, log, state=accelerator)  # it answers is_main_process as PartialState does
        self.accelerator = accelerator

    @cached_property
    def train_categories(self) -> tuple[str, ...]:
        if not self.cfg.data.train_categories:
            cats = sorted({r.category for r in self.records})
            raise ConfigError(f"data.train_categories: name the categories to train on; the data has {cats}")
        return super().train_categories


class FGAesQTrainingLoop:
    """FGAesQ's two-stage optimisation; `train()` trains (or resumes) the model in memory."""

    def __init__(self, cfg: FGAesQConfig, train_records, accelerator, log: Callable = print):
        self.cfg, self.acc, self.log = cfg, accelerator, log
        self.run_dir = Path(cfg.run_dir)
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
    def train(self, stage_fingerprint: str) -> dict:
        """Every epoch, resuming after the last one that train_state.pt holds for `stage_fingerprint`."""
        from tqdm.auto import tqdm

        cfg, tc, acc = self.cfg, self.cfg.train, self.acc
        state_path = self.run_dir / "train_state.pt"
        start_epoch = self._resume(state_path, stage_fingerprint)
        log_file = self.run_dir / "train_log.jsonl"
        if start_epoch == 0 and acc.is_main_process:
            log_file.unlink(missing_ok=True)  # a fresh start: the log of an abandoned run goes
        names = list(self.optimizers)
        self.ddp_model, *opts = acc.prepare(self.model, *self.optimizers.values())
        self.optimizers = dict(zip(names, opts))
        self.ddp_model.train()
        world, rank = acc.num_processes, acc.process_index
        t0 = time.time()
        n_fine = len(fine_batches(self.series, tc.fine_batch_images, self._rng(0), world)) if self.series else 0
        n_pre = len(coarse_batches(len(self.coarse), tc.coarse_batch_size, self._rng(0), world)) if self.coarse else 0
        total = sum(n_pre if ph == "pretrain" else n_fine * (2 if cfg.loss.emd else 1) for ph, _ in self.epochs)
        if tc.max_steps:
            total = min(total, tc.max_steps)
        bar = tqdm(total=total, initial=min(self.step, total), disable=not acc.is_local_main_process,
                   desc="fgaesq", dynamic_ncols=True)
        last: dict = {}
        for e_idx in range(start_epoch, len(self.epochs)):
            phase, epoch = self.epochs[e_idx]
            rng = self._rng(1, e_idx)
            gen = torch.Generator().manual_seed(int(rng.integers(2 ** 31)))
            # The head's dropout draws from torch's global RNG: seed it per epoch, so an epoch resumed
            # after a kill draws the same masks as in an uninterrupted run.
            torch.manual_seed(int(self._rng(3, e_idx).integers(2 ** 31)))
            if phase == "pretrain":
                plan = [("coarse", b) for b in coarse_batches(len(self.coarse), tc.coarse_batch_size, rng, world)]
            else:
                fb = fine_batches(self.series, tc.fine_batch_images, rng, world) if self.series else []
                # Coarse batches of this joint epoch: reshuffled passes over the coarse set, seeded
                # by the epoch so a resumed run draws the same ones.
                coarse_iter = cycle(lambda k, e=e_idx: coarse_batches(
                    len(self.coarse), tc.coarse_batch_size, self._rng(2, e, k), world)) if cfg.loss.emd else None
                plan = []
                for b in fb:
                    if coarse_iter is not None:
                        plan.append(("coarse", next(coarse_iter)))
                    plan.append(("fine", b))
            for kind, b in plan:
                if tc.max_steps and self.step >= tc.max_steps:
                    break
                mine = b[rank::world]
                with acc.autocast():
                    if kind == "coarse":
                        loss, logs = self.coarse_loss(mine)
                    else:
                        loss, logs = self.fine_loss(mine, rng, gen)
                self.optimizer_step(loss, kind)
                last = {"step": self.step, "phase": phase, "epoch": epoch, "batch": kind, "loss": loss.item(), **logs}
                if acc.is_main_process and (self.step % tc.log_every == 0 or self.step == 1):
                    with open(log_file, "a") as f:
                        f.write(json.dumps(last) + "\n")
                bar.set_postfix({k: round(v, 4) for k, v in last.items() if isinstance(v, float)}, refresh=False)
                bar.update(1)
            if tc.max_steps and self.step >= tc.max_steps:
                break
            self._save_state(state_path, stage_fingerprint, e_idx + 1)
        bar.close()
        return {"steps": self.step, "processes": world, "seconds": round(time.time() - t0, 1), "last": last}

    # -- resume --------------------------------------------------------------------------------
    def _save_state(self, path: Path, stage_fingerprint: str, next_epoch: int):
        self.acc.wait_for_everyone()
        if self.acc.is_main_process:
            tmp = path.with_suffix(".tmp")
            # The unwrapped model's state: no DDP "module." prefix in the keys (see STYLE.md anti-pattern 2).
            with writing(path):  # torch.save names neither the file nor the cause of a failed write
                torch.save({"fingerprint": stage_fingerprint, "next_epoch": next_epoch, "step": self.step,
                            "model": self.unwrapped.state_dict(),
                            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()}}, tmp)
                tmp.replace(path)
        self.acc.wait_for_everyone()

    def _resume(self, path: Path, stage_fingerprint: str) -> int:
        if not path.is_file():
            return 0
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("fingerprint") != stage_fingerprint:
            self.log(f"{path}: from another config; starting over")
            return 0
        self.model.load_state_dict(state["model"])
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        self.step = int(state["step"])
        self.log(f"resuming after epoch {state['next_epoch']} of {len(self.epochs)} (step {self.step})")
        return int(state["next_epoch"])


# ---- stages ---------------------------------------------------------------------------------

def stage_train(run: FGAesQRun) -> dict:
    """Train data-parallel on every process; the main one writes <run_dir>/checkpoint."""
    acc = run.accelerator
    loop = FGAesQTrainingLoop(run.cfg, run.train_records, acc, log=run.log)
    info = loop.train(train_fingerprint(run.cfg))
    acc.wait_for_everyone()
    if acc.is_main_process:
        with writing(run.path("checkpoint")):
            loop.unwrapped.save_pretrained(run.path("checkpoint"))
    return info


def predict_records(scorer, records, difftoken_series: bool = False) -> np.ndarray:
    """Single-image scores of `records`; with `difftoken_series`, series images are scored against their series."""
    if not difftoken_series:
        return scorer.score([r.path for r in records])
    out = np.full(len(records), np.nan)
    groups: dict[tuple[str, str], list[int]] = {}
    for k, r in enumerate(records):
        if r.series:
            groups.setdefault((r.category, r.series), []).append(k)
    singles = [k for k in range(len(records)) if not records[k].series or len(groups[(records[k].category, records[k].series)]) < 2]
    if singles:
        out[singles] = scorer.score([records[k].path for k in singles])
    for idx in groups.values():
        if len(idx) >= 2:
            out[idx] = scorer.score_series([records[k].path for k in idx])
    return out


def stage_score(run: FGAesQRun) -> dict:
    """Predictions of every record on data.rating_scale: single-image, and series through DiffToken."""
    from psdistill.baselines.fgaesq.scorer import FGAesQScorer

    cfg = run.cfg
    scorer = FGAesQScorer.from_pretrained(run.path("checkpoint"), device=str(run.accelerator.device),
                                          batch_size=cfg.train.eval_batch_size)
    difftoken_path = run.path(f"predictions/{SCORER}-difftoken.csv")
    variants = {run.path(f"predictions/{SCORER}.csv"): False}
    if cfg.difftoken.enabled and cfg.train.eval_difftoken:
        variants[difftoken_path] = True
    else:
        difftoken_path.unlink(missing_ok=True)  # the evaluation reads every predictions file
    for path, series in variants.items():
        pred = from_bins(predict_records(scorer, run.records, difftoken_series=series), cfg.data.rating_scale)
        write_predictions(path, run.records, {cfg.data.dimensions[0]: pred})
    return {"predictions": [str(p) for p in variants]}


_PIPELINE = {s.name: s for s in PIPELINE_STAGES}
# FGAesQ's own data keys (the EMD target, the image cache) do not decide which images there are.
DATA = replace(_PIPELINE["data"], sections=tuple(f"data.{f.name}" for f in fields(DataConfig)))
# Logging and evaluation settings do not change the trained weights.
_NOT_TRAINING = ("log_every", "eval_batch_size", "eval_difftoken")
TRAIN = Stage("train", ("seed", "data.target_sigma", "data.histogram_prefix", "model", "difftoken", "loss",
                        *(f"train.{f.name}" for f in fields(FGAesQTrainConfig) if f.name not in _NOT_TRAINING)),
              stage_train, "training FGAesQ: coarse pre-training, then alternating coarse/fine batches",
              all_ranks=True)
SCORE = Stage("score", ("train.eval_difftoken",), stage_score, "scoring every image")
STAGES = (DATA, TRAIN, SCORE, _PIPELINE["evaluate"])  # the pipeline's evaluation: every predictions file


def train_fingerprint(cfg: FGAesQConfig) -> str:
    """The train stage's fingerprint, as `run_stages` computes it (its sections, then the data stage's):
    it keys the resumable train_state.pt and guards the checkpoint."""
    return fingerprint(cfg, TRAIN, [fingerprint(cfg, DATA, [])])


def make_accelerator():
    """An Accelerator over every launched process, on the device `psdistill.models.device` picks
    (`cpu=True` exactly where that rule found no accelerator, so CPU ranks form one gloo group)."""
    from accelerate import Accelerator

    from psdistill.models.device import process_device

    return Accelerator(cpu=process_device().type == "cpu")


def run_fgaesq(cfg: FGAesQConfig, log: Callable = print, report: Optional[Callable] = None) -> dict[str, dict]:
    """Run the stages, write the report with `report` (default: `log`) on the main process and return the
    stages' markers; a finished stage with the same config is reused, a killed training resumes from its
    last finished epoch."""
    from accelerate.utils import set_seed

    acc = make_accelerator()
    quiet = lambda *a, **k: None  # noqa: E731 (the other ranks' messages would repeat the main one's)
    run = FGAesQRun(cfg, acc, log if acc.is_main_process else quiet)
    try:
        _refuse_to_replace(cfg)
        set_seed(cfg.seed)
        if acc.is_main_process:  # only now: a refused config must not replace the run's config.yaml
            run.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, run.path("config.yaml"))
        # The Accelerator answers is_main_process / wait_for_everyone for every rank, as PartialState does.
        results = run_stages(run, STAGES, log=run.log, state=acc)
        print_report(cfg, results, out=(report or log) if acc.is_main_process else quiet)
        return results
    finally:
        acc.end_training()  # destroys the process group: gloo may hang on exit otherwise


def _refuse_to_replace(cfg: FGAesQConfig) -> None:
    """A checkpoint trained with another config or data is kept unless `overwrite=true`."""
    marker = marker_path(Path(cfg.run_dir), TRAIN.name)
    if cfg.overwrite or not marker.is_file():
        return
    trained, wanted = json.loads(marker.read_text())["fingerprint"], train_fingerprint(cfg)
    if trained != wanted:
        raise ConfigError(f"{Path(cfg.run_dir) / 'checkpoint'}: holds a model trained with another config or data "
                          f"(fingerprint {trained} != {wanted}); use a new run_dir or set overwrite=true to retrain")
