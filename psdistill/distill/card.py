"""The student folder as a Hub-ready artifact: a model card (`README.md`) and the base model recorded
in `adapter_config.json`.

The card's snippet reads the score with transformers (and peft for an adapter) alone, exactly as
`Readout` does: one user turn with one image and the prompt; for the levels head, softmax of the
answer position's logits over the level-word token ids, expected value on the rating scale. Its
numbers (prompt, token ids, mapped values) are taken from the folder's own spec and processor, so
the snippet is correct for each student. It scores one image per forward pass, so no padding enters.
The scalar head (`score_head`) is in no stock transformers class: plain `from_pretrained` and
`PeftModel.from_pretrained` drop it without a warning, so that snippet reads the head's two tensors
from the weights file (`head_file`) and applies them to the last token's final hidden state.
"""
from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from psdistill.data.images import to_rgb
from psdistill.scoring.readout import Readout
from psdistill.scoring.spec import ScorerSpec
from psdistill.models.loading import TINY

CARD_FILE = "README.md"
MODEL_PLACEHOLDER = "REPO_ID_OR_FOLDER"  # where the snippet names this folder; the user puts its hub id or path
TINY_BASE = "tiny random-weight Qwen3-VL (psdistill.models.tiny), not on the Hub"
TAGS = ["psdistill", "image-aesthetics", "qwen3-vl"]


@dataclass
class LabelSource:
    """Where the pseudo-scores came from (the pipeline knows; `train_student` alone does not)."""

    judge_id: str
    simulated: bool


def base_model_name(spec: ScorerSpec) -> str:
    name = spec.model_config.name_or_path
    return TINY_BASE if name == TINY else name


TINY_BASE_DIR = "tiny_base"  # an adapter's tiny random base, saved beside it (1 MB) so the card's code runs


def record_base_model(folder, spec: ScorerSpec) -> None:
    """Write the base model into `adapter_config.json` (peft leaves it empty for a model built in memory);
    the tiny base, which no hub has, is saved into `folder/tiny_base`."""
    cfg = spec.model_config
    if spec.weights != "adapter":
        return
    if cfg.name_or_path == TINY:
        from psdistill.models.tiny import save_tiny, tiny_qwen3_vl

        save_tiny(*tiny_qwen3_vl(seed=cfg.seed), Path(folder) / TINY_BASE_DIR)
        return
    path = Path(folder) / "adapter_config.json"
    data = json.loads(path.read_text())
    data["base_model_name_or_path"] = cfg.name_or_path
    data["revision"] = cfg.revision
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def transformers_snippet(spec: ScorerSpec, processor, head_file: str = "") -> str:
    """Python code (transformers, peft for an adapter) that defines `score(path, dimension) -> float` for this
    student: one full forward pass per dimension (psdistill shares the image prefix between them). For the
    scalar head, `head_file` is the weights file holding `score_head.*`, which the snippet reads itself."""
    readout = Readout(spec, processor)
    cfg = spec.model_config
    tiny_adapter = spec.weights == "adapter" and cfg.name_or_path == TINY
    if tiny_adapter:
        load = ("# the tiny random-weight base (on no hub) is saved beside the adapter\n"
                "FOLDER = MODEL if os.path.isdir(MODEL) else snapshot_download(MODEL)\n"
                f"model = AutoModelForImageTextToText.from_pretrained(os.path.join(FOLDER, {TINY_BASE_DIR!r}))\n"
                "model = PeftModel.from_pretrained(model, MODEL).eval()\n")
    elif spec.weights == "adapter":
        revision = f", revision={cfg.revision!r}" if cfg.revision else ""
        load = (f"BASE = {cfg.name_or_path!r}\n"
                f"model = AutoModelForImageTextToText.from_pretrained(BASE{revision})\n"
                "model = PeftModel.from_pretrained(model, MODEL).eval()\n")
    else:
        load = "model = AutoModelForImageTextToText.from_pretrained(MODEL).eval()\n"
    return (
        ("import os\n\n" if spec.head == "scalar" or tiny_adapter else "")
        + "import numpy as np\nimport torch\n"
        "from PIL import Image, ImageOps\n"
        "from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer\n"
        + ("from peft import PeftModel\n" if spec.weights == "adapter" else "")
        + ("from huggingface_hub import hf_hub_download\nfrom safetensors.torch import load_file\n"
           if spec.head == "scalar" else "")
        + ("from huggingface_hub import snapshot_download\n" if tiny_adapter else "")
        + f"\nMODEL = {MODEL_PLACEHOLDER!r}\n"
        + load
        + "tokenizer = AutoTokenizer.from_pretrained(MODEL)\n"
        "image_processor = AutoImageProcessor.from_pretrained(MODEL)\n\n"
        f"PROMPTS = {spec.prompts!r}  # the user text per dimension\n"
        + (_levels_constants(spec, readout) if spec.head == "levels" else _scalar_head_loading(head_file))
        + _IMAGE_LOADING
        + "TEXTS = {dim: tokenizer.apply_chat_template(\n"
        "    [{\"role\": \"user\", \"content\": [{\"type\": \"image\"}, {\"type\": \"text\", \"text\": prompt}]}],\n"
        "    add_generation_prompt=True, tokenize=False) for dim, prompt in PROMPTS.items()}\n\n\n"
        "@torch.no_grad()\n"
        f"def score(path, dimension={spec.dimensions[0]!r}):\n"
        "    pixels = image_processor(images=[load_image(path)], return_tensors=\"pt\")\n"
        "    # the image placeholder stands for one token per merged patch, as the Qwen3-VL processor expands it\n"
        "    n = int(pixels[\"image_grid_thw\"].prod()) // image_processor.merge_size ** 2\n"
        "    tokens = tokenizer(TEXTS[dimension].replace(\"<|image_pad|>\", \"<|image_pad|>\" * n), return_tensors=\"pt\")\n"
        "    # 1 marks image tokens, for the multimodal rotary positions\n"
        "    tokens[\"mm_token_type_ids\"] = (tokens[\"input_ids\"] == tokenizer.convert_tokens_to_ids(\"<|image_pad|>\")).long()\n"
        + (_LEVELS_READOUT if spec.head == "levels" else _SCALAR_READOUT)
    )


# The image as psdistill opens it (upright per EXIF, alpha over white, 16-bit scaled): psdistill's own
# to_rgb, copied into the card from its source, so the snippet and load_scorer see the same pixels.
_IMAGE_LOADING = ("\n" + inspect.getsource(to_rgb) + "\n\n"
                  "def load_image(path):\n"
                  "    with Image.open(path) as im:\n"
                  "        return to_rgb(ImageOps.exif_transpose(im))\n\n\n")


def _levels_constants(spec: ScorerSpec, readout: Readout) -> str:
    return (f"LEVEL_WORDS = {list(spec.level_words)!r}\n"
            f"LEVEL_TOKEN_IDS = {readout.token_ids.tolist()!r}  # each word's token right after the prompt\n"
            f"LEVEL_SCORES = {readout.values.tolist()!r}  # level values mapped onto {list(spec.rating_scale)!r}\n")


def _scalar_head_loading(head_file: str) -> str:
    return ("\n# score_head (hidden -> 1) is in no stock class, so transformers/peft drop it: read it from the weights\n"
            f"HEAD_FILE = {head_file!r}\n"
            "tensors = load_file(os.path.join(MODEL, HEAD_FILE) if os.path.isdir(MODEL) else hf_hub_download(MODEL, HEAD_FILE))\n"
            "HEAD = {k.rsplit(\".\", 1)[1]: v.float() for k, v in tensors.items()\n"
            "        if k.startswith(\"score_head.\") or \".score_head.\" in k}\n")


_LEVELS_READOUT = (
    "    logits = model(**tokens, **pixels).logits[0, -1, LEVEL_TOKEN_IDS].float()\n"
    "    return float(torch.softmax(logits, -1) @ torch.tensor(LEVEL_SCORES))\n")
_SCALAR_READOUT = (
    "    # the final-norm hidden state of the last token, through the linear head\n"
    "    hidden = model(**tokens, **pixels, output_hidden_states=True).hidden_states[-1][0, -1].float()\n"
    "    return float(hidden @ HEAD[\"weight\"][0] + HEAD[\"bias\"][0])\n")


def head_file(folder, spec: ScorerSpec) -> str:
    """The weights file of `folder` that holds the scalar head's tensors."""
    if spec.weights == "adapter":
        return "adapter_model.safetensors"
    index = Path(folder) / "model.safetensors.index.json"
    return json.loads(index.read_text())["weight_map"]["score_head.weight"] if index.is_file() else "model.safetensors"


def _card_text(spec: ScorerSpec, processor, train_images: int, labels: Optional[LabelSource], head: str) -> str:
    lo, hi = spec.rating_scale
    if labels is None:
        source = "pseudo-scores ranked from a VLM judge's pairwise comparisons (judge not recorded)"
    elif labels.simulated:
        source = (f"SIMULATED pseudo-scores: a noisy oracle reading ground truth (`{labels.judge_id}`) stood in "
                  "for the VLM judge, as in the demo and tests; this model has learned no VLM's taste")
    else:
        source = f"pseudo-scores ranked from the pairwise comparisons of the VLM judge `{labels.judge_id}`"
    base = spec.model_config.name_or_path
    lines = [
        f"# {spec.name}: single-pass image aesthetics scorer ({', '.join(spec.dimensions)})", "",
        "A vision-language model distilled by psdistill from a VLM judge's pairwise "
        "aesthetic judgments: one forward pass per image gives a score.", "",
        "## Training data", "",
        f"- images: {train_images}", f"- dimensions: {', '.join(f'`{d}`' for d in spec.dimensions)}", f"- rating scale: {lo:g} to {hi:g} (higher is better)",
        f"- labels: {source}", "",
        "## Model", "",
        f"- base model: {base_model_name(spec)}",
        f"- weights: {'a LoRA adapter on the base model' if spec.weights == 'adapter' else 'full weights'}",
        f"- head: `{spec.head}`", "",
        "## Scoring with psdistill", "",
        "```python", "import psdistill", "", f"scorer = psdistill.load_scorer({MODEL_PLACEHOLDER!r})",
        "scorer(\"photo.jpg\")  # " + ("a float on the rating scale" if len(spec.dimensions) == 1 else
                                       f"one score per dimension ({', '.join(spec.dimensions)})"), "```", "",
    ]
    readout = ("The score is the expected level of the next token after the prompt, over the level words "
               f"{', '.join(spec.level_words)} (values {', '.join(f'{v:g}' for v in spec.level_values)}), "
               "mapped linearly onto the rating scale." if spec.head == "levels" else
               "The score is a linear head (`score_head`) on the last token's final hidden state. No stock "
               "transformers class has that module (`from_pretrained` and `PeftModel.from_pretrained` drop it "
               "silently), so the code reads its weights from the weights file.")
    lines += ["## Scoring with transformers only", "", readout, "",
              "```python", transformers_snippet(spec, processor, head).rstrip(), "```", ""]
    if base == TINY:
        lines += ["The base model is psdistill's embedded tiny random-weight Qwen3-VL: a test and demo artifact.", ""]
    return "\n".join(lines)


def write_model_card(folder, spec: ScorerSpec, processor, train_images: int,
                     labels: Optional[LabelSource] = None) -> Path:
    """Write `folder/README.md` (replacing peft's blank template) with Hub metadata and usage."""
    from huggingface_hub import ModelCard, ModelCardData

    lo, hi = spec.rating_scale
    data = ModelCardData(
        base_model=base_model_name(spec), library_name="peft" if spec.weights == "adapter" else "transformers",
        tags=TAGS, pipeline_tag="image-text-to-text",
        psdistill={"head": spec.head, "dimensions": list(spec.dimensions), "rating_scale": [lo, hi],
                   "train_images": train_images, "labels": "vlm-judge pseudo-scores",
                   "judge": labels.judge_id if labels else None, "simulated_judge": labels.simulated if labels else None})
    text = _card_text(spec, processor, train_images, labels, head_file(folder, spec) if spec.head == "scalar" else "")
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n{text}")
    path = Path(folder) / CARD_FILE
    card.save(path)
    return path
