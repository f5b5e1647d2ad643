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
how to rebuild it: base model, adapter or full weights, head, level words and values, prompt, scale.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image

from psdistill.data.records import DEFAULT_RATING_SCALE, ImageRecord
from psdistill.errors import ConfigError, DataError, PsdistillError
from psdistill.models.device import place_for_inference
from psdistill.models.loading import ModelConfig, load_processor, load_vlm
from psdistill.models.readout_tokens import next_token_ids
from psdistill.scorer_api import CallableScorer, ImageInput, as_batch, as_image

SPEC_FILE = "scorer_config.json"
SPEC_FORMAT = "psdistill-scorer/1"
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
    prompt: str  # the user text, already formatted for `dimension`
    rating_scale: list[float]
    dimension: str = "overall"
    name: str = "psdistill"
    format: str = SPEC_FORMAT
    distill_config: dict = field(default_factory=dict)  # the resolved training config, for the record

    @classmethod
    def from_config(cls, model_cfg: ModelConfig, cfg, dimension: str, weights: str, name: str,
                    rating_scale: Sequence[float] = DEFAULT_RATING_SCALE) -> "ScorerSpec":
        return cls(base_model=dataclasses.asdict(model_cfg), weights=weights, head=cfg.head,
                   level_words=list(cfg.level_words), level_values=[float(v) for v in cfg.level_values],
                   prompt=cfg.rendered_prompt(dimension), rating_scale=[float(v) for v in rating_scale],
                   dimension=dimension, name=name, distill_config=dataclasses.asdict(cfg))

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
    while hasattr(model, "module"):  # DistributedDataParallel, DeepSpeed engine
        model = model.module
    if hasattr(model, "get_base_model"):  # peft: the head is a modules_to_save wrapper in the base model
        model = model.get_base_model()
    return model.score_head


class Readout:
    """Scores (B,) on the rating scale from one forward pass of `model` on processor inputs."""

    def __init__(self, spec: ScorerSpec, processor):
        self.head = spec.head
        if spec.head == "levels":
            self.token_ids = torch.tensor(level_token_ids(processor, spec.level_words, spec.prompt))
            # The affine map value -> rating scale commutes with the expectation, so map the values once.
            v = np.asarray(spec.level_values, dtype=float)
            lo, hi = spec.rating_scale
            self.values = torch.tensor(lo + (v - v.min()) * (hi - lo) / (v.max() - v.min()), dtype=torch.float32)

    def __call__(self, model, inputs: dict) -> torch.Tensor:
        # logits_to_keep=1: only the answer position goes through lm_head (a 150k-vocab matmul per token otherwise).
        out = model(**inputs, logits_to_keep=1, output_hidden_states=self.head == "scalar")
        if self.head == "levels":
            logits = out.logits[:, -1, self.token_ids.to(out.logits.device)].float()
            return torch.softmax(logits, dim=-1) @ self.values.to(logits.device)
        head = _score_head(model)
        h = out.hidden_states[-1][:, -1]  # final-norm output at the last (non-pad: left padding) token
        return head(h.to(next(head.parameters()).dtype)).squeeze(-1).float()


def processor_inputs(processor, prompt: str, images: Sequence[Image.Image]) -> dict:
    """Batched, left-padded model inputs for one rendered prompt per image."""
    return dict(processor(text=[prompt] * len(images), images=list(images), return_tensors="pt", padding=True))


class StudentScorer(CallableScorer):
    """A VLM scorer: `score(images) -> np.ndarray` on `score_range`, one forward pass per image;
    `scorer(image)` is a float (psdistill.scorer_api).

        >>> scorer = StudentScorer.from_pretrained("runs/demo/student")   # doctest: +SKIP
        >>> scorer.score(["a.jpg", "b.jpg"], batch_size=16)               # doctest: +SKIP
        array([3.91, 2.47])
    """

    lower_better = False

    def __init__(self, model, processor, spec: ScorerSpec):
        self.model = model.eval()
        self.processor = processor
        self.spec = spec
        self.name = spec.name
        self.score_range = tuple(spec.rating_scale)
        self.dimensions = (spec.dimension,)
        self.readout = Readout(spec, processor)
        self.prompt = render_prompt(processor, spec.prompt)

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
    def from_model_config(cls, model_cfg: ModelConfig, cfg=None, dimension: str = "overall",
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
                   ScorerSpec.from_config(model_cfg, cfg, dimension, weights="base", name=name,
                                          rating_scale=rating_scale))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.inference_mode()
    def score(self, images: Union[ImageInput, Sequence[ImageInput]], batch_size: int = SCORE_BATCH_SIZE) -> np.ndarray:
        """Scores on `score_range`, one per image (paths, PIL images or HxWx3 uint8 arrays), in input order."""
        images, _ = as_batch(images)
        device = self.device
        out = []
        for start in range(0, len(images), batch_size):
            chunk = [as_image(im, start + k) for k, im in enumerate(images[start:start + batch_size])]
            inputs = {k: v.to(device) for k, v in processor_inputs(self.processor, self.prompt, chunk).items()}
            out.append(self.readout(self.model, inputs).cpu().numpy())
        return np.concatenate(out).astype(float) if out else np.zeros(0)


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
    """Score images with a tqdm bar into `out_csv` in the predictions format (id,path,<dimension>).

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
    dim = scorer.dimensions[0]
    out_csv, partial = Path(out_csv), Path(str(out_csv) + ".partial")
    done = {**_scored(out_csv, dim), **_scored(partial, dim)}  # path -> score, from an earlier run
    todo = [r for r in records if str(r.path) not in done]
    skipped = []
    partial.parent.mkdir(parents=True, exist_ok=True)
    with open(partial, "a", newline="") as f, tqdm(total=len(records), initial=len(records) - len(todo),
                                                  desc=f"scoring ({scorer.name})", unit="img") as bar:
        w = csv.writer(f)
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            try:
                scores = scorer.score([r.path for r in chunk], batch_size=batch_size)
            except DataError:
                if on_bad_image == "error":
                    raise
                scores = [_score_or_nan(scorer, r.path, skipped) for r in chunk]  # find the bad one(s)
            for r, v in zip(chunk, scores):
                done[str(r.path)] = float(v)
                w.writerow([str(r.path), repr(float(v))])
            f.flush()
            bar.update(len(chunk))
    if skipped:
        logging.getLogger(__name__).warning("skipped %d unreadable image(s): %s", len(skipped), "; ".join(skipped[:10]))
    scores = np.array([done[str(r.path)] for r in records], dtype=float)
    write_predictions(out_csv, records, {dim: scores})
    partial.unlink()
    return scores


def _scored(path: Path, dim: str) -> dict[str, float]:
    """{image path: score} of a predictions file or a partial file (path,score); a row without its line
    end (cut off by a kill mid-write, so its number may be cut short too) is left out."""
    import csv

    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        rows = list(csv.reader(line for line in f.readlines() if line.endswith("\n")))
    if rows and rows[0][:2] == ["id", "path"]:  # a finished predictions file
        col = rows[0].index(dim) if dim in rows[0] else None
        return {} if col is None else {r[1]: float(r[col]) for r in rows[1:] if len(r) > col and r[col]}
    out = {}
    for r in rows:
        try:
            out[r[0]] = float(r[1])
        except (IndexError, ValueError):
            continue
    return out


def _score_or_nan(scorer, path, skipped: list) -> float:
    try:
        return float(scorer.score([path])[0])
    except DataError as e:
        skipped.append(str(e))
        return float("nan")


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


def teacher_pointwise(model: Union[str, dict, ModelConfig] = "tiny", dimension: str = "overall",
                      device: Optional[str] = None, rating_scale: Sequence[float] = DEFAULT_RATING_SCALE,
                      **distill_fields) -> StudentScorer:
    """Registry factory for "teacher-pointwise": `model` is a ModelConfig, its dict, or a name/path;
    `distill_fields` override DistillConfig's prompt, level_words, level_values."""
    from psdistill.distill.config import DistillConfig

    model_cfg = model if isinstance(model, ModelConfig) else (
        ModelConfig(**model) if isinstance(model, dict) else ModelConfig(name_or_path=str(model)))
    return StudentScorer.from_model_config(model_cfg, DistillConfig(**distill_fields), dimension, device,
                                           rating_scale=rating_scale)
