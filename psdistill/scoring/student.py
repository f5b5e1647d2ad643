"""The single-pass scorer: one forward pass of the (adapted) VLM per image.

Two heads read a score from that pass:
- `levels` (default; Q-Align, Wu et al. 2023, https://arxiv.org/abs/2312.17090): after a pointwise
  prompt, softmax the next-token logits over the level words ("Excellent" ... "Bad", each one token
  right after the prompt) and take the expected level value, mapped linearly onto the rating scale.
  No parameter is added, so the student is the same VLM (plus LoRA), and the untrained model is the
  zero-shot teacher.
- `scalar`: a linear head on the final hidden state of the last token (as reward models do).

Batches are left-padded (the processor's tokenizer pads left), so the last position of every row is
the answer position. A trained scorer folder holds `scorer_config.json` (`ScorerSpec`), which says
how to rebuild it: base model, adapter or full weights, head, level words and values, one prompt per
dimension, scale.

Several dimensions: one prompt per dimension, all reading the same head, and still one pass per image
(`Readout`). The prompts share everything up to where their texts differ (the chat template's start,
the image, any common words): that prefix runs once per image and its KV cache is reused by each
dimension's text suffix, as the judge reuses a pair's shared prefix (psdistill/models/prefix_kv.py).
Chosen over several outputs read from one prompt because each dimension keeps a prompt of its own
that the untrained VLM can answer zero-shot (the teacher-pointwise scorer and the starting point of
training), and a one-dimension student stays exactly what it is today; the added cost per dimension
is its suffix's few text tokens, not another pass over the image tokens.
In training with gradient checkpointing (which keeps no KV cache) each dimension's full prompt runs
instead: the same scores, D passes over the image per training step; scoring keeps the one pass.
"""
from __future__ import annotations

import dataclasses
import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image

from psdistill.data.records import DEFAULT_RATING_SCALE, ImageRecord
from psdistill.core.errors import ConfigError, DataError, PsdistillError
from psdistill.models.device import place_for_inference
from psdistill.models.loading import ModelConfig, load_processor, load_vlm
from psdistill.models.hidden_state import last_token_state
from psdistill.models.readout_tokens import next_token_ids
from psdistill.scoring.api import CallableScorer, ImageInput, as_batch, as_image

SPEC_FILE = "scorer_config.json"
SPEC_FORMAT = "psdistill-scorer/2"
_FORMAT_1 = "psdistill-scorer/1"  # one dimension: `dimension` and `prompt` instead of `prompts`
SCORE_BATCH_SIZE = 16  # images per forward pass when scoring, unless a caller says otherwise


@dataclass
class ScorerSpec:
    """What `scorer_config.json` holds. `weights`: 'base' (the base model as is: the zero-shot teacher),
    'adapter' (a peft adapter in the folder, on top of `base_model`) or 'full' (full weights in the folder)."""

    base_model: dict
    weights: str
    head: str
    level_words: list[str]
    level_values: list[float]
    prompts: dict[str, str]  # dimension -> its user text, already formatted; one score column each, in order
    rating_scale: list[float]
    name: str = "psdistill"
    format: str = SPEC_FORMAT
    distill_config: dict = field(default_factory=dict)  # the resolved training config, for the record

    @property
    def dimensions(self) -> tuple[str, ...]:
        return tuple(self.prompts)

    @classmethod
    def from_config(cls, model_cfg: ModelConfig, cfg, dimensions: Sequence[str], weights: str, name: str,
                    rating_scale: Sequence[float] = DEFAULT_RATING_SCALE) -> "ScorerSpec":
        return cls(base_model=dataclasses.asdict(model_cfg), weights=weights, head=cfg.head,
                   level_words=list(cfg.level_words), level_values=[float(v) for v in cfg.level_values],
                   prompts=cfg.rendered_prompts(dimensions), rating_scale=[float(v) for v in rating_scale],
                   name=name, distill_config=dataclasses.asdict(cfg))

    def save(self, folder) -> Path:
        path = Path(folder) / SPEC_FILE
        path.write_text(json.dumps(dataclasses.asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, folder) -> "ScorerSpec":
        path = Path(folder) / SPEC_FILE
        if not path.is_file():
            raise PsdistillError(f"{folder}: no {SPEC_FILE}; is this a folder written by train_student?")
        data = json.loads(path.read_text())
        if data.get("format") == _FORMAT_1:  # a one-dimension scorer saved before prompts per dimension
            data["prompts"] = {data.pop("dimension", "overall"): data.pop("prompt")}
            data["format"] = SPEC_FORMAT
        if data.get("format") != SPEC_FORMAT:
            raise PsdistillError(f"{path}: format {data.get('format')!r}, expected {SPEC_FORMAT!r}")
        return cls(**data)

    @property
    def model_config(self) -> ModelConfig:
        return ModelConfig(**self.base_model)


def render_prompt(processor, text: str) -> str:
    """One user turn with one image and `text`, ending where the assistant's answer starts."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def level_token_ids(processor, words: Sequence[str], text: str) -> list[int]:
    """The token id of each level word where it is read: right after the rendered prompt for user `text`.

    Raises ConfigError naming the words that are not one token there.
    """
    return next_token_ids(processor.tokenizer, render_prompt(processor, text), words, "distill.level_words", "level word")


def attach_score_head(model, rating_scale: Sequence[float]) -> torch.nn.Linear:
    """Adds `model.score_head` (hidden -> 1) for the scalar head, starting at the scale's midpoint.

    Zero weights make the first outputs equal (no random initial ranking); the bias starts the
    outputs in the middle of the scale, where the calibration term wants them on average.
    """
    hidden = model.config.get_text_config().hidden_size
    head = torch.nn.Linear(hidden, 1, dtype=torch.float32, device=model.device)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.constant_(head.bias, (rating_scale[0] + rating_scale[1]) / 2)
    model.score_head = head
    return head


def _score_head(model) -> torch.nn.Module:
    return _unwrapped(model).score_head  # peft: a modules_to_save wrapper in the base model


class Readout:
    """Scores (B, D) on the rating scale, one column per dimension of `spec`, from processor inputs of
    `text` for each image: one forward pass per image (the shared prefix, for several dimensions)."""

    def __init__(self, spec: ScorerSpec, processor):
        self.head = spec.head
        prompts = [render_prompt(processor, spec.prompts[d]) for d in spec.dimensions]
        if len(prompts) == 1:
            self.text, self.suffixes = prompts[0], None
        else:
            self.text, self.suffixes = shared_prefix(processor.tokenizer, prompts)
        if spec.head == "levels":
            ids = {tuple(level_token_ids(processor, spec.level_words, spec.prompts[d])) for d in spec.dimensions}
            if len(ids) > 1:
                raise ConfigError(f"distill.level_words: {spec.level_words} are other tokens after some "
                                  "dimensions' prompts; end the prompts alike")
            self.token_ids = torch.tensor(ids.pop())
            # The affine map value -> rating scale commutes with the expectation, so map the values once.
            v = np.asarray(spec.level_values, dtype=float)
            lo, hi = spec.rating_scale
            self.values = torch.tensor(lo + (v - v.min()) * (hi - lo) / (v.max() - v.min()), dtype=torch.float32)

    def __call__(self, model, inputs: dict) -> torch.Tensor:
        if self.suffixes is None:
            # logits_to_keep=1: only the answer position goes through lm_head (a 150k-vocab matmul per token otherwise).
            return self._score(model, model(**inputs, logits_to_keep=1, output_hidden_states=self.head == "scalar"))[:, None]
        inner = _unwrapped(model).model
        if inner.training and any(getattr(m, "gradient_checkpointing", False) for m in inner.modules()):
            # Checkpointed layers run twice in backward and keep no KV cache: each dimension's full prompt
            # instead (the same scores; D passes over the image in training, inference keeps one).
            return torch.stack([self._score(model, model(**_with_suffix(inputs, ids), logits_to_keep=1,
                                                         output_hidden_states=self.head == "scalar"))
                                for ids in self.suffixes], 1)
        from transformers import DynamicCache

        if not hasattr(inner, "rope_deltas"):
            raise ConfigError(f"data.dimensions: several dimensions in one pass need a Qwen-VL model (M-RoPE "
                              f"positions continue from the prefix's); {type(inner).__name__} is none")
        cache = DynamicCache()
        model(**inputs, logits_to_keep=1, **{_cache_arg(model): cache})  # image and shared text, once
        mask = inputs["attention_mask"]
        # A suffix token's position continues after its row's last prefix position (max + 1 - real length
        # = rope_deltas): the positions the full prompt of that dimension gives it.
        start = mask.sum(1, keepdim=True) + inner.rope_deltas.to(mask.device)
        columns = []
        for ids in self.suffixes:
            ids = ids.to(mask.device)[None].expand(len(mask), -1)
            positions = (start + torch.arange(ids.shape[1], device=mask.device))[None].expand(3, -1, -1)
            # A fresh cache on the prefix's tensors: each suffix's keys are appended to its own copy.
            suffix_cache = DynamicCache(ddp_cache_data=[(layer.keys, layer.values) for layer in cache.layers])
            out = model(input_ids=ids, attention_mask=torch.cat([mask, torch.ones_like(ids)], 1), position_ids=positions,
                        logits_to_keep=1, output_hidden_states=self.head == "scalar", **{_cache_arg(model): suffix_cache})
            columns.append(self._score(model, out))
        return torch.stack(columns, 1)

    def _score(self, model, out) -> torch.Tensor:
        if self.head == "levels":
            logits = out.logits[:, -1, self.token_ids.to(out.logits.device)].float()
            return torch.softmax(logits, dim=-1) @ self.values.to(logits.device)
        head = _score_head(model)
        h = last_token_state(out)
        return head(h.to(next(head.parameters()).dtype)).squeeze(-1).float()


def _with_suffix(inputs: dict, ids: torch.Tensor) -> dict:
    """Processor inputs of the shared prefix with a dimension's suffix tokens appended: its full prompt
    (left padding, so every row ends where the suffix goes)."""
    rows, ids = len(inputs["input_ids"]), ids.to(inputs["input_ids"].device)
    out = dict(inputs, input_ids=torch.cat([inputs["input_ids"], ids[None].expand(rows, -1)], 1),
               attention_mask=torch.cat([inputs["attention_mask"], torch.ones(rows, len(ids), dtype=inputs["attention_mask"].dtype,
                                                                              device=ids.device)], 1))
    if "mm_token_type_ids" in inputs:  # 0: text
        out["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], torch.zeros_like(out["input_ids"][:, -len(ids):])], 1)
    return out


def shared_prefix(tokenizer, prompts: Sequence[str]) -> tuple[str, list[torch.Tensor]]:
    """(the longest common prefix text of `prompts`, each prompt's remaining token ids), cut where the
    prefix's tokens followed by a suffix's are exactly that prompt's tokens (no merge across the cut)."""
    import os.path

    common = os.path.commonprefix(list(prompts))
    full = [tokenizer.encode(p, add_special_tokens=False) for p in prompts]
    for cut in range(len(common), 0, -1):
        head = tokenizer.encode(common[:cut], add_special_tokens=False)
        if all(ids[:len(head)] == head and len(ids) > len(head) for ids in full):
            return common[:cut], [torch.tensor(ids[len(head):]) for ids in full]
    raise ConfigError("distill.prompt: the dimensions' prompts share no prefix to run once")


def _unwrapped(model):
    """The transformers model under DDP / DeepSpeed and peft wrappers."""
    while hasattr(model, "module"):
        model = model.module
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _cache_arg(model) -> str:
    # transformers 5.2x renamed the forward's `past_key_values` to `cache` (as models/prefix_kv.py).
    return "cache" if "cache" in inspect.signature(_unwrapped(model).forward).parameters else "past_key_values"


def processor_inputs(processor, prompt: str, images: Sequence[Image.Image]) -> dict:
    """Batched, left-padded model inputs for one rendered prompt per image."""
    return dict(processor(text=[prompt] * len(images), images=list(images), return_tensors="pt", padding=True))


class StudentScorer(CallableScorer):
    """A VLM scorer: `score(images) -> np.ndarray` on `score_range`, one forward pass per image;
    `scorer(image)` is a float (psdistill.scoring.api).

        >>> scorer = StudentScorer.from_pretrained("runs/demo/student")   # doctest: +SKIP
        >>> scorer.score(["a.jpg", "b.jpg"], batch_size=16)               # doctest: +SKIP
        array([3.91, 2.47])

    A scorer of several dimensions (`dimensions`) returns one column per dimension, (N, D).
    """

    lower_better = False

    def __init__(self, model, processor, spec: ScorerSpec):
        self.model = model.eval()
        self.processor = processor
        self.spec = spec
        self.name = spec.name
        self.score_range = tuple(spec.rating_scale)
        self.dimensions = spec.dimensions
        self.readout = Readout(spec, processor)

    @classmethod
    def from_pretrained(cls, path, device: Optional[str] = None) -> "StudentScorer":
        """Rebuild a scorer saved by `train_student` (or one of its checkpoints, or `export_merged`);
        a pipeline run directory stands for its `student/`."""
        if not (Path(path) / SPEC_FILE).is_file() and (Path(path) / "student" / SPEC_FILE).is_file():
            path = Path(path) / "student"
        spec = ScorerSpec.load(path)
        model_cfg = spec.model_config
        if spec.weights == "full":
            from transformers import AutoModelForImageTextToText

            dtype = model_cfg.dtype if model_cfg.dtype == "auto" else getattr(torch, model_cfg.dtype)
            model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype, device_map=model_cfg.device_map)
            processor = load_processor(str(path), model_cfg.min_pixels, model_cfg.max_pixels)
            if spec.head == "scalar":
                _load_head(attach_score_head(model, spec.rating_scale), path)
        elif spec.weights == "adapter":
            from peft import PeftModel

            model, processor = load_vlm(model_cfg)
            if spec.head == "scalar":
                attach_score_head(model, spec.rating_scale)  # its trained weights come with the adapter
            model = PeftModel.from_pretrained(model, str(path))
            if spec.head == "scalar":
                _check_adapter_head(_score_head(model), path)
        elif spec.weights == "base":
            model, processor = load_vlm(model_cfg)
        else:
            raise PsdistillError(f"{path}/{SPEC_FILE}: unknown weights {spec.weights!r}")
        return cls(place_for_inference(model, model_cfg.dtype, device, dispatched=bool(model_cfg.device_map)),
                   processor, spec)

    @classmethod
    def from_model_config(cls, model_cfg: ModelConfig, cfg=None, dimensions: Sequence[str] = ("overall",),
                          device: Optional[str] = None, name: str = "teacher-pointwise",
                          rating_scale: Sequence[float] = DEFAULT_RATING_SCALE) -> "StudentScorer":
        """The base VLM with no adapter, read zero-shot through the levels head (the pointwise teacher)."""
        from psdistill.distill.config import DistillConfig

        cfg = cfg or DistillConfig()
        if cfg.head != "levels":
            raise ConfigError("distill.head: a scorer without training needs the 'levels' head "
                              "(a fresh scalar head is untrained)")
        model, processor = load_vlm(model_cfg)
        return cls(place_for_inference(model, model_cfg.dtype, device, dispatched=bool(model_cfg.device_map)), processor,
                   ScorerSpec.from_config(model_cfg, cfg, dimensions, weights="base", name=name,
                                          rating_scale=rating_scale))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.inference_mode()
    def score(self, images: Union[ImageInput, Sequence[ImageInput]], batch_size: int = SCORE_BATCH_SIZE) -> np.ndarray:
        """Scores on `score_range` of the images (paths, PIL images or HxWx3 uint8 arrays), in input order:
        (N,) for one dimension, (N, D) for several (`psdistill.scoring.api.by_dimension` names the columns)."""
        images, _ = as_batch(images)
        device = self.device
        out = [np.zeros((0, len(self.dimensions)))]
        for start in range(0, len(images), batch_size):
            chunk = [as_image(im, start + k) for k, im in enumerate(images[start:start + batch_size])]
            inputs = {k: v.to(device) for k, v in processor_inputs(self.processor, self.readout.text, chunk).items()}
            out.append(self.readout(self.model, inputs).cpu().numpy())
        scores = np.concatenate(out).astype(float)
        return scores[:, 0] if len(self.dimensions) == 1 else scores


def _load_head(head: torch.nn.Module, folder) -> None:
    """Load `score_head.*` from full weights (single or sharded safetensors); from_pretrained drops them
    because the stock architecture has no such module."""
    from safetensors import safe_open

    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else ["model.safetensors"]
    state = {}
    for name in files:
        with safe_open(folder / name, framework="pt") as f:
            state.update({k.removeprefix("score_head."): f.get_tensor(k) for k in f.keys() if k.startswith("score_head.")})
    if not state:
        raise PsdistillError(f"{folder}: the scalar head's weights (score_head.*) are missing")
    head.load_state_dict(state)


def _check_adapter_head(head: torch.nn.Module, folder) -> None:
    """peft loads `score_head` (a modules_to_save entry) only into a model that has one, and says nothing
    otherwise: check that the head in use holds the adapter file's trained tensors."""
    from safetensors.torch import load_file

    file = Path(folder) / "adapter_model.safetensors"
    saved = {k.rsplit(".", 1)[1]: v for k, v in load_file(file).items() if ".score_head." in k}
    loaded = {"weight": head.weight, "bias": head.bias}
    if saved.keys() != loaded.keys() or not all(
            torch.equal(saved[k].to(loaded[k]), loaded[k].detach()) for k in saved):
        raise PsdistillError(f"{file}: the scalar head's trained weights (score_head.*) are missing or did not load")


def score_images(scorer, images: Sequence[Union[ImageInput, ImageRecord]], out_csv,
                 batch_size: int = SCORE_BATCH_SIZE, on_bad_image: str = "error") -> np.ndarray:
    """Score images with a tqdm bar into `out_csv` in the predictions format (id,path,<dimension>...).

    Records keep their ids; a path's id is its file name without suffix. Scores are appended to
    `<out_csv>.partial` batch by batch, so a killed run loses at most one batch: rerun the same call
    and only the images missing from `out_csv` and the partial file are scored. `on_bad_image="skip"`
    scores an unreadable image as NaN (a missing score) and names it in a warning instead of stopping.
    """
    import csv
    import logging

    from tqdm.auto import tqdm

    from psdistill.data.predictions import write_predictions

    if on_bad_image not in ("error", "skip"):
        raise ConfigError(f"on_bad_image: 'error' or 'skip', got {on_bad_image!r}")
    records = [im if isinstance(im, ImageRecord) else ImageRecord(id=Path(im).stem, path=str(im)) for im in images]
    dims = list(scorer.dimensions)
    out_csv, partial = Path(out_csv), Path(str(out_csv) + ".partial")
    done = {**_scored(out_csv, dims), **_scored(partial, dims)}  # path -> scores, from an earlier run
    todo = [r for r in records if str(r.path) not in done]
    skipped = []
    partial.parent.mkdir(parents=True, exist_ok=True)
    with open(partial, "a", newline="") as f, tqdm(total=len(records), initial=len(records) - len(todo),
                                                  desc=f"scoring ({scorer.name})", unit="img") as bar:
        w = csv.writer(f)
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            try:
                scores = scorer.score([r.path for r in chunk], batch_size=batch_size).reshape(len(chunk), -1)
            except DataError:
                if on_bad_image == "error":
                    raise
                scores = [_score_or_nan(scorer, r.path, skipped, len(dims)) for r in chunk]  # find the bad one(s)
            for r, v in zip(chunk, scores):
                done[str(r.path)] = [float(x) for x in v]
                w.writerow([str(r.path), *map(repr, done[str(r.path)])])
            f.flush()
            bar.update(len(chunk))
    if skipped:
        logging.getLogger(__name__).warning("skipped %d unreadable image(s): %s", len(skipped), "; ".join(skipped[:10]))
    scores = np.array([done[str(r.path)] for r in records], dtype=float).reshape(len(records), len(dims))
    write_predictions(out_csv, records, {d: scores[:, k] for k, d in enumerate(dims)})
    partial.unlink()
    return scores[:, 0] if len(dims) == 1 else scores


def _scored(path: Path, dims: list[str]) -> dict[str, list[float]]:
    """{image path: [score per dimension]} of a predictions file or a partial file (path,score...); a row
    without its line end (cut off by a kill mid-write, so its number may be cut short too) is left out."""
    import csv

    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        rows = list(csv.reader(line for line in f.readlines() if line.endswith("\n")))
    if rows and rows[0][:2] == ["id", "path"]:  # a finished predictions file
        if not set(dims) <= set(rows[0]):
            return {}
        cols = [rows[0].index(d) for d in dims]
        return {r[1]: [float(r[c]) for c in cols] for r in rows[1:]
                if len(r) > max(cols) and all(r[c] for c in cols)}
    out = {}
    for r in rows:
        try:
            if len(r) == len(dims) + 1:
                out[r[0]] = [float(x) for x in r[1:]]
        except ValueError:
            continue
    return out


def _score_or_nan(scorer, path, skipped: list, n_dims: int) -> list[float]:
    try:
        return [float(x) for x in scorer.score([path]).reshape(-1)]
    except DataError as e:
        skipped.append(str(e))
        return [float("nan")] * n_dims


def export_merged(path, out_dir) -> Path:
    """Merge a LoRA student into its base and save full safetensors weights + processor + spec.

    The result loads with `StudentScorer.from_pretrained(out_dir)` and, minus the scalar head, with any
    transformers `from_pretrained`.
    """
    scorer = StudentScorer.from_pretrained(path, device="cpu")
    model = scorer.model
    if scorer.spec.weights == "adapter":
        model = model.merge_and_unload()  # also swaps the trained scalar head in for its wrapper
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    scorer.processor.save_pretrained(out_dir)
    dataclasses.replace(scorer.spec, weights="full").save(out_dir)
    return out_dir


def load_student(path, device: Optional[str] = None) -> StudentScorer:
    """Registry factory for "psdistill"."""
    return StudentScorer.from_pretrained(path, device=device)


def teacher_pointwise(model: Union[str, dict, ModelConfig] = "tiny", dimensions: Sequence[str] = ("overall",),
                      device: Optional[str] = None, rating_scale: Sequence[float] = DEFAULT_RATING_SCALE,
                      **distill_fields) -> StudentScorer:
    """Registry factory for "teacher-pointwise": `model` is a ModelConfig, its dict, or a name/path;
    `distill_fields` override DistillConfig's prompt, level_words, level_values."""
    from psdistill.distill.config import DistillConfig

    model_cfg = model if isinstance(model, ModelConfig) else (
        ModelConfig(**model) if isinstance(model, dict) else ModelConfig(name_or_path=str(model)))
    return StudentScorer.from_model_config(model_cfg, DistillConfig(**distill_fields), dimensions, device,
                                           rating_scale=rating_scale)
