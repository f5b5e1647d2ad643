"""The single-pass scorer: one forward pass of the (adapted) VLM per image (readout.py says how a score
is read), rebuilt from the folder training wrote (spec.py: `scorer_config.json`)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch

from psdistill.core.errors import PsdistillError
from psdistill.models.device import place_for_inference, pretrained_dtype
from psdistill.models.loading import load_processor, load_vlm
from psdistill.scoring.conformal import (CALIBRATION_FILE, Calibration, Intervals, check_coverage,
                                         folder_calibration, required)
from psdistill.scoring.api import SCORE_BATCH_SIZE, CallableScorer, ImageInput, as_batch, as_image, weight_files
from psdistill.scoring.readout import Readout, attach_score_head, processor_inputs, score_head
from psdistill.scoring.spec import SPEC_FILE, ScorerSpec


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
        self.folder = None  # the scorer folder it was loaded from
        self.calibration: Optional[Calibration] = None  # its calibration.json, for intervals

    @classmethod
    def from_pretrained(cls, path, device: Optional[str] = None) -> "StudentScorer":
        """Rebuild a scorer saved by `train_student` (or one of its checkpoints, or `export_merged`);
        a pipeline run directory stands for its `student/`."""
        if not (Path(path) / SPEC_FILE).is_file() and (Path(path) / "student" / SPEC_FILE).is_file():
            path = Path(path) / "student"
        return cls.from_spec(ScorerSpec.load(path), path, device)

    @classmethod
    def from_spec(cls, spec: ScorerSpec, path=None, device: Optional[str] = None) -> "StudentScorer":
        """The scorer `spec` describes; its weights in the folder `path` unless they are 'base' (the base model)."""
        model_cfg = spec.model_config
        if spec.weights == "full":
            from transformers import AutoModelForImageTextToText

            dtype = pretrained_dtype(model_cfg.dtype)
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
                _check_adapter_head(score_head(model), path)
        elif spec.weights == "base":
            model, processor = load_vlm(model_cfg)
        else:
            raise PsdistillError(f"{path}/{SPEC_FILE}: unknown weights {spec.weights!r}")
        scorer = cls(place_for_inference(model, model_cfg.dtype, device, dispatched=bool(model_cfg.device_map)),
                     processor, spec)
        scorer.folder, scorer.calibration = path, folder_calibration(path)
        scorer.identity = {"spec": dataclasses.asdict(spec),
                           # calibration.json changes intervals, never scores (batch.py stamps it for intervals)
                           "files": {k: v for k, v in weight_files(path).items() if k != CALIBRATION_FILE}
                           if spec.weights != "base" else {}}
        return scorer

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def score(self, images: Union[ImageInput, Sequence[ImageInput]], batch_size: int = SCORE_BATCH_SIZE,
              coverage: Optional[float] = None) -> Union[np.ndarray, Intervals]:
        """Scores on `score_range` of the images (paths, PIL images or HxWx3 uint8 arrays), in input order:
        (N,) for one dimension, (N, D) for several (`psdistill.scoring.api.by_dimension` names the columns).

        With `coverage` (in (0, 1), e.g. 0.9): `Intervals(score, lo, hi)`, three arrays of that shape, from
        the folder's `calibration.json` (psdistill/scoring/conformal.py says what they cover)."""
        if coverage is None:
            return self._squeeze(self.score_with_spread(images, batch_size, spread=False))
        coverage, calibration = check_coverage(coverage), required(self.calibration, self.name, self.folder)
        scores, spreads = self.score_with_spread(images, batch_size)
        lo, hi = calibration.intervals(self.dimensions, scores, spreads, coverage)
        return Intervals(*map(self._squeeze, (scores, lo, hi)))

    @torch.inference_mode()
    def score_with_spread(self, images, batch_size: int = SCORE_BATCH_SIZE, spread: bool = True):
        """(scores, spreads), each (N, D): the scores and the head's own spread (conformal.py), in one pass
        per image; without `spread` the scores alone."""
        images, _ = as_batch(images)
        device = self.device
        scores, spreads = [np.zeros((0, len(self.dimensions)))], [np.zeros((0, len(self.dimensions)))]
        for start in range(0, len(images), batch_size):
            chunk = [as_image(im, start + k) for k, im in enumerate(images[start:start + batch_size])]
            inputs = {k: v.to(device) for k, v in processor_inputs(self.processor, self.readout.text, chunk).items()}
            read = self.readout(self.model, inputs, spread=spread)
            scores.append((read[0] if spread else read).cpu().numpy())
            if spread:
                spreads.append(read[1].cpu().numpy())
        scores = np.concatenate(scores).astype(float)
        return (scores, np.concatenate(spreads).astype(float)) if spread else scores

    def _squeeze(self, scores: np.ndarray) -> np.ndarray:
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


def load_student(path, device: Optional[str] = None) -> StudentScorer:
    """Registry factory for "psdistill"."""
    return StudentScorer.from_pretrained(path, device=device)
