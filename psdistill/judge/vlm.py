"""The VLM judge: P(first image preferred) read from the next-token probabilities of two answer words.

One pair is one chat turn: "Image A: <image> Image B: <image> Which ... in terms of <criterion>?
Answer with one letter only: A or B." (psdistill/judge/prompts/*.yaml), rendered with the model's
own chat template. The model is not asked to generate: one forward pass gives the logits at the
answer position, and P(first) = softmax over the logits of the two answer tokens [A, B], i.e. the
probability mass of "A" renormalised against "B". Answers are in presentation order (the `Judge`
protocol); `prefer_both_orders` in base.py judges both orders and cancels the position bias.

Speed (see eval/bench_judge.py):
- Pairs are batched with left padding, so the last position of every row is its answer position;
  pairs of similar length (image size) are batched together to keep padding small.
- Qwen3-VL: each image goes through the vision encoder once and its output (merged embeddings plus
  the DeepStack features injected into the first decoder layers) is reused for every pair it is in,
  through the model's public `mm_encoder_outputs` argument (transformers >= 5). The model itself
  scatters the embeddings at the image-token positions and computes the M-RoPE positions from
  `mm_token_type_ids` and `image_grid_thw`, exactly as on the stock path. Other models, and
  transformers versions without that argument, take the stock path (the processor on every batch).
- Qwen3-VL, with vision reuse: the prompt prefix that pairs share is run once and its KV cache
  reused (models/prefix_kv.py). Pairs that show the same image first (a reference pool's
  (reference, x) pairs; in a fixed pool also each item's (x, reference) pairs) share the text,
  the first image and the second label: about half a pair's tokens. The other pairs share only the
  text before the first image (~10-30 tokens): under causal attention the second image's keys
  depend on the first image, so an (x, reference) pair cannot reuse the reference's. Pairs are
  grouped by first image within a call (a caller that hands over small chunks, like CachedJudge,
  should order its pairs by first image).

Images that cannot be read give NaN for every pair they are in; `failures` maps their path to the
reason, and `CachedJudge` records them in the store.

`VLLMJudge` (bottom) offers the same interface on vLLM (the optional extra `vllm`).
"""
from __future__ import annotations

import inspect
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch

from psdistill.data.images import DEFAULT_MAX_PIXELS, load_image
from psdistill.core.errors import ConfigError, DataError, PsdistillError
from psdistill.judge.base import Pair
from psdistill.models.prefix_kv import PrefixReuse, encoded_inputs, prefix_groups, vision_outputs
from psdistill.judge.prompts import PromptSet, load_prompt_set, prompt_hash
from psdistill.models.readout_tokens import next_token_ids

# Models whose forward takes `mm_encoder_outputs` with per-image `pooler_output` and per-layer
# `deepstack_features` (the MoE variant's forward is a modular copy of the dense one).
_VISION_REUSE_MODELS = ("qwen3_vl", "qwen3_vl_moe")
# Pairs are sorted by length within windows of this many batches: enough to group sizes, while
# the images of a window (at most 2 * batch_size * _WINDOW_BATCHES) stay encoded at once.
_WINDOW_BATCHES = 4


@dataclass
class VLMJudgeConfig:
    prompt_set: str = field(default="painting", metadata={
        "help": "bundled prompt set ('painting': PPaint-style dimensions chosen by us, 'photo') or a YAML file"})
    batch_size: int = field(default=8, metadata={"help": "pairs per forward pass"})
    reuse_vision: bool = field(default=True, metadata={
        "help": "encode each image once and reuse it in every pair (Qwen3-VL); false: the processor's stock path"})
    reuse_prefix: bool = field(default=True, metadata={
        "help": "run the prompt prefix shared by pairs (text, and the first image when it is shared) once "
                "and reuse its KV cache (Qwen3-VL with reuse_vision); false: every pair runs in full"})
    vision_cache_images: int = field(default=64, metadata={
        "help": "encoded images kept on the model's device for reuse across calls (LRU)"})

    def __post_init__(self):
        if self.batch_size < 1:
            raise ConfigError(f"judge.vlm.batch_size: must be >= 1, got {self.batch_size}")
        if self.vision_cache_images < 0:
            raise ConfigError(f"judge.vlm.vision_cache_images: must be >= 0, got {self.vision_cache_images}")


def answer_token_ids(processor, prompts: PromptSet) -> list[int]:
    """The token id of each answer word where it is read: right after every dimension's rendered prompt.

    Raises ConfigError naming the prompt set and each answer word that is not one token there.
    """
    field = f"judge.vlm.prompt_set {prompts.name!r}"
    ids = {tuple(next_token_ids(processor.tokenizer, prompts.render(processor, d), prompts.answers, field, "answer word"))
           for d in prompts.dimensions}
    if len(ids) > 1:
        raise ConfigError(f"{field}: the answer words are other tokens after some dimensions' prompts")
    return list(ids.pop())


class VLMJudge:
    """A chat VLM (e.g. Qwen3-VL-8B-Instruct) as a pairwise judge; see the module docstring.

    `model_id` names the weights in the store (ModelConfig.model_id: hub id + revision); the
    processor's pixel bounds are added to `judge_id`, since they change what the model sees.
    """

    simulated = False

    def __init__(self, model, processor, config: VLMJudgeConfig = VLMJudgeConfig(), model_id: Optional[str] = None):
        self.model, self.processor, self.config = model, processor, config
        self.prompts = load_prompt_set(config.prompt_set)
        self.answer_ids = answer_token_ids(processor, self.prompts)
        model_id = model_id or model.config.name_or_path
        if not model_id:  # random-weight models have no name, and their judgments must not mix in the store
            raise PsdistillError("VLMJudge: this model has no name_or_path; pass model_id (e.g. ModelConfig.model_id)")
        self.judge_id = f"{model_id}|{_size_tag(processor.image_processor)}"
        self.failures: dict[str, str] = {}  # path -> why it cannot be judged
        self.reuse_vision = (config.reuse_vision and model.config.model_type in _VISION_REUSE_MODELS
                             and "mm_encoder_outputs" in inspect.signature(model.forward).parameters)
        self._encoded: OrderedDict[tuple, _Encoded] = OrderedDict()  # LRU of vision-encoder outputs
        self._prefix = PrefixReuse(model, processor) if self.reuse_vision and config.reuse_prefix else None
        # Decode huge files at most at 2x the side the processor keeps (it resizes from there). `size` is a
        # SizeDict as loaded, a plain dict where set as Qwen's README does (image_processor.size = {...}).
        size = processor.image_processor.size
        max_pixels = (size if isinstance(size, dict) else vars(size)).get("longest_edge")
        self._decode_max_pixels = min(4 * max_pixels, DEFAULT_MAX_PIXELS) if max_pixels else DEFAULT_MAX_PIXELS

    def prompt_hash(self, dimension: str) -> str:
        return prompt_hash(self.prompts.render(self.processor, dimension), self.prompts.answers)

    @property
    def prefix_tokens_saved(self) -> int:
        """Prompt tokens not run because their prefix's KV cache was reused (0 without prefix reuse)."""
        return self._prefix.tokens_saved if self._prefix is not None else 0

    @property
    def chunk_size(self) -> int:
        """Pairs per call that fill one size-sorting window (what `CachedJudge` hands over)."""
        return self.config.batch_size * _WINDOW_BATCHES

    @torch.inference_mode()
    def prefer(self, pairs: Sequence[Pair], dimension: str) -> np.ndarray:
        """P(first shown image preferred) per pair, in presentation order; NaN where an image failed."""
        text = self.prompts.render(self.processor, dimension)
        pairs = list(pairs)
        out = np.full(len(pairs), np.nan)
        prepare, forward = (self._encode, self._forward_encoded) if self.reuse_vision else (self._load, self._forward_stock)
        order = list(range(len(pairs)))
        first = [a.path for a, _ in pairs]
        if self._prefix is not None:  # pairs with the same first image side by side: windows hold whole groups
            order.sort(key=first.__getitem__)
        window = self.config.batch_size * _WINDOW_BATCHES
        for start in range(0, len(order), window):
            idx = order[start:start + window]
            images = prepare(list(dict.fromkeys(r.path for i in idx for r in pairs[i])))
            ok = [i for i in idx if pairs[i][0].path in images and pairs[i][1].path in images]
            groups = prefix_groups(ok, first) if self._prefix is not None else [(False, ok)]
            for shares_first, group in groups:
                group.sort(key=lambda i: _size(images[pairs[i][0].path]) + _size(images[pairs[i][1].path]))
                for b in range(0, len(group), self.config.batch_size):
                    rows = group[b:b + self.config.batch_size]
                    batch = [(images[pairs[i][0].path], images[pairs[i][1].path]) for i in rows]
                    logits = (self._prefix.logits(text, batch, shares_first) if self._prefix is not None
                              else forward(text, batch))[:, self.answer_ids].float()
                    out[rows] = torch.softmax(logits, dim=-1)[:, 0].cpu().numpy()
        return out

    # ---- stock path: the processor builds every batch from the images ---------------------

    def _load(self, paths: list[str]) -> dict:
        images = {}
        for path in paths:
            if path in self.failures:
                continue
            try:
                images[path] = load_image(path, max_pixels=self._decode_max_pixels)
            except DataError as e:
                self.failures[path] = str(e)
        return images

    def _forward_stock(self, text: str, batch) -> torch.Tensor:
        inputs = self.processor(text=[text] * len(batch), images=[list(pair) for pair in batch],
                                padding=True, padding_side="left", return_tensors="pt").to(self.model.device)
        return self.model(**inputs, logits_to_keep=1).logits[:, -1]

    # ---- vision reuse: each image is encoded once ------------------------------------------

    def _encode(self, paths: list[str]) -> dict:
        """{path: _Encoded} for the readable paths, from the LRU or newly encoded in chunks."""
        out, todo = {}, {}
        for path in paths:
            if path in self.failures:
                continue
            try:
                st = os.stat(path)
            except OSError as e:
                self.failures[path] = f"{path}: image file not found ({e.strerror})"
                continue
            key = (path, st.st_size, st.st_mtime_ns)  # a rewritten file is encoded again
            if key in self._encoded:
                self._encoded.move_to_end(key)
                out[path] = self._encoded[key]
            else:
                todo[key] = path
        loaded = self._load(list(todo.values()))
        keys = [key for key, path in todo.items() if path in loaded]
        chunk = 2 * self.config.batch_size  # bounds the encoder's activations like one batch of pairs does
        for s in range(0, len(keys), chunk):
            part = keys[s:s + chunk]
            for key, enc in zip(part, self._encode_images([loaded[k[0]] for k in part])):
                out[key[0]] = self._encoded[key] = enc
        while len(self._encoded) > self.config.vision_cache_images:
            self._encoded.popitem(last=False)
        return out

    def _encode_images(self, images) -> list["_Encoded"]:
        device = self.model.device
        pix = self.processor.image_processor(images=images, return_tensors="pt")
        grid = pix["image_grid_thw"].to(device)
        vision = self.model.get_image_features(pixel_values=pix["pixel_values"].to(device), image_grid_thw=grid,
                                               return_dict=True)
        deep = vision.deepstack_features or []
        return [_Encoded(grid[n:n + 1], vision.pooler_output[n], [layer[n] for layer in deep])
                for n in range(len(images))]

    def _forward_encoded(self, text: str, batch) -> torch.Tensor:
        encoded = [e for pair in batch for e in pair]  # in the order the images appear in the batch
        device = self.model.device
        inputs = {k: v.to(device) for k, v in encoded_inputs(self.processor, text, encoded).items()}
        return self.model(**inputs, mm_encoder_outputs=vision_outputs(encoded), logits_to_keep=1).logits[:, -1]


@dataclass
class _Encoded:
    """One image's vision-encoder output: grid (1, 3), merged embeddings (tokens, hidden), DeepStack features."""

    grid: torch.Tensor
    embeds: torch.Tensor
    deepstack: list[torch.Tensor]


def _size(image) -> int:
    """Sort key for bucketing: merged vision tokens of an encoded image, or pixels of a PIL image."""
    return image.embeds.shape[0] if isinstance(image, _Encoded) else image.width * image.height


def _size_tag(image_processor) -> str:
    size = image_processor.size
    items = size.items() if isinstance(size, dict) else vars(size).items()
    return ",".join(f"{k}={v}" for k, v in sorted(items) if v is not None)


class VLLMJudge:
    """The same judge on vLLM, for large runs on GPUs; prefix caching on (pairs that share a first
    image share its KV blocks, as in VLMJudge).

    The readout is VLMJudge's: the raw log-probabilities of the two answer tokens at the answer
    position, requested by id (`logprob_token_ids`, vllm >= 0.32), renormalised against each other.
    eval/bench_judge_vllm.py checks P(first) against VLMJudge's on the same saved model.

    Under `accelerate launch` on N processes every rank builds its own engine (build it on every rank at
    the same point: psdistill.models.vllm_engine says how and why) and `DataParallelJudge` feeds them;
    the engine outlives the judge, to the end of the process.
    """

    simulated = False

    def __init__(self, model_id: str, config: VLMJudgeConfig = VLMJudgeConfig(), min_pixels: Optional[int] = None,
                 max_pixels: Optional[int] = None, revision: Optional[str] = None, **llm_kwargs):
        from psdistill.models.vllm_engine import engine, require_vllm

        require_vllm("judge.kind=vllm", "use judge.kind=vlm")
        from vllm import SamplingParams

        from psdistill.models.loading import load_processor

        self.config, self.prompts = config, load_prompt_set(config.prompt_set)
        self.processor = load_processor(model_id, min_pixels, max_pixels, revision)
        self.answer_ids = answer_token_ids(self.processor, self.prompts)
        # Unset bounds (ModelConfig's default) are the checkpoint's own, as the processor loaded them.
        self.llm = engine(model_id, self.processor, revision, **llm_kwargs)
        self.params = SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=self.answer_ids)
        self.judge_id = f"vllm:{model_id}{'@' + revision if revision else ''}|" + _size_tag(self.processor.image_processor)
        self.failures: dict[str, str] = {}
        size = self.processor.image_processor.size
        max_pixels = (size if isinstance(size, dict) else vars(size))["longest_edge"]
        self._decode_max_pixels = min(4 * max_pixels, DEFAULT_MAX_PIXELS)

    def prompt_hash(self, dimension: str) -> str:
        return prompt_hash(self.prompts.render(self.processor, dimension), self.prompts.answers)

    def prefer(self, pairs: Sequence[Pair], dimension: str) -> np.ndarray:
        text = self.prompts.render(self.processor, dimension)
        images, requests, rows = {}, [], []
        for n, (a, b) in enumerate(pairs):
            for path in (a.path, b.path):
                if path not in images and path not in self.failures:
                    try:
                        images[path] = load_image(path, max_pixels=self._decode_max_pixels)
                    except DataError as e:
                        self.failures[path] = str(e)
            if a.path in images and b.path in images:
                requests.append({"prompt": text, "multi_modal_data": {"image": [images[a.path], images[b.path]]}})
                rows.append(n)
        out = np.full(len(pairs), np.nan)
        for n, result in zip(rows, self.llm.generate(requests, self.params, use_tqdm=False)):
            answer = result.outputs[0].logprobs[0]  # {token id: Logprob} at the answer position
            lp = [answer[t].logprob for t in self.answer_ids]
            out[n] = 1.0 / (1.0 + np.exp(lp[1] - lp[0]))
        return out
