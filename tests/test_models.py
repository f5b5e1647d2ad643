import ast
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from psdistill.core.errors import ConfigError
from psdistill.models import tiny
from psdistill.models.loading import ModelConfig, load_processor, load_vlm
from psdistill.models.processor import CHAT_TEMPLATE_SHA256, qwen3_vl_chat_template
from psdistill.models.readout_tokens import next_token_ids
from psdistill.models.tiny import save_tiny, tiny_clip, tiny_qwen3_vl, tiny_qwen3_vl_processor
from psdistill.pipeline.readout_check import bundled_readouts


def _images(n, size=64, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def _pair_inputs(processor):
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Which is better?"}]}]
    text = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    return processor(text=[text], images=[_images(2)], return_tensors="pt")


def test_tiny_model_reads_every_bundled_word_as_one_token_that_is_the_word():
    processor = tiny_qwen3_vl_processor()
    for where, prompt, word in bundled_readouts(processor):
        [token] = next_token_ids(processor.tokenizer, prompt, [word], where)
        assert processor.tokenizer.convert_ids_to_tokens(token) == word, where


def test_tiny_prompts_render_with_the_published_qwen3_vl_template():
    template = qwen3_vl_chat_template().encode()
    assert len(template) == 5292 and hashlib.sha256(template).hexdigest() == CHAT_TEMPLATE_SHA256
    # Hand-written: what Qwen3-VL's template makes of one system text and a user turn with an image.
    messages = [{"role": "system", "content": "S"},
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Rate it."}]}]
    assert tiny_qwen3_vl_processor().apply_chat_template(messages, add_generation_prompt=True, tokenize=False) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>"
        "Rate it.<|im_end|>\n<|im_start|>assistant\n")


def test_tiny_module_does_not_import_the_loader():
    # models/loading imports models/tiny (for name_or_path "tiny"); the other way round would be a circle.
    tree = ast.parse(Path(tiny.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "psdistill.models.loading" not in imported


def test_tiny_qwen3_vl_saved_locally_loads_back_through_from_pretrained(tmp_path):
    model, processor = tiny_qwen3_vl(seed=3)
    inputs = _pair_inputs(processor)
    # The image becomes (64/16)^2 / 2^2 = 4 merged tokens per image in the text.
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == 8
    with torch.no_grad():
        ref = model(**inputs).logits
    save_tiny(model, processor, tmp_path / "tiny")
    model2, processor2 = load_vlm(ModelConfig(name_or_path=str(tmp_path / "tiny"), dtype="float32",
                                              max_pixels=64 * 64))
    inputs2 = _pair_inputs(processor2)
    assert torch.equal(inputs["input_ids"], inputs2["input_ids"])
    with torch.no_grad():
        out = model2(**inputs2).logits
    torch.testing.assert_close(out, ref)


def test_tiny_models_differ_by_seed():
    a, _ = tiny_qwen3_vl(seed=0)
    b, _ = tiny_qwen3_vl(seed=1)
    assert not torch.equal(a.lm_head.weight, b.lm_head.weight)


def test_tiny_clip_embeds_images_and_text():
    model, processor = tiny_clip()
    inputs = processor(text=["a sharp photo", "a blurry photo"], images=_images(3), return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model(**inputs)
    assert out.logits_per_image.shape == (3, 2)
    assert torch.isfinite(out.image_embeds).all()


def test_missing_model_path_is_a_clear_error(tmp_path):
    from psdistill.core.errors import PsdistillError
    with pytest.raises(PsdistillError, match="cannot load"):
        load_vlm(ModelConfig(name_or_path=str(tmp_path / "nothing")))


def test_model_config_validation():
    with pytest.raises(ConfigError, match="model.min_pixels"):
        ModelConfig(min_pixels=10_000, max_pixels=100)
    with pytest.raises(ConfigError, match="model.min_pixels"):
        ModelConfig(name_or_path="Qwen/Qwen3-VL-8B-Instruct", max_pixels=0)


def test_pixel_bounds_default_to_the_checkpoints_own_and_to_small_ones_for_the_tiny_model(tmp_path):
    assert (ModelConfig().min_pixels, ModelConfig().max_pixels) == (32 * 32, 64 * 64)
    real = ModelConfig(name_or_path="Qwen/Qwen3-VL-8B-Instruct")
    assert (real.min_pixels, real.max_pixels) == (None, None)
    model, processor = tiny_qwen3_vl(image_size=96)  # a checkpoint whose own bounds are 32x32..96x96
    save_tiny(model, processor, tmp_path)
    size = load_processor(str(tmp_path), real.min_pixels, real.max_pixels).image_processor.size
    assert (size.shortest_edge, size.longest_edge) == (32 * 32, 96 * 96)
    size = load_processor(str(tmp_path), max_pixels=128 * 128).image_processor.size  # one bound set, the other kept
    assert (size.shortest_edge, size.longest_edge) == (32 * 32, 128 * 128)


def test_a_prefix_run_once_continues_as_the_full_forward_and_stays_reusable():
    """models/prefix_kv on transformers' public cache API: the text before the image runs once (batch 1),
    two images' continuations run on repeated copies of its cache; the independent computation is the
    plain forward of the full prompts. Fails if DynamicCache's copy (iterating a cache into the
    constructor), its batch repeat or Qwen-VL's get_rope_index change in a transformers upgrade."""
    from psdistill.models.prefix_kv import continue_prefix, mrope_positions, run_prefix

    model, processor = tiny_qwen3_vl(seed=0)
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Rate it."}]}]
    text = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text, text], images=_images(2), return_tensors="pt")
    ids, mask, types = inputs["input_ids"], inputs["attention_mask"], inputs["mm_token_type_ids"]
    cut = int(torch.nonzero(types[0] == 1)[0])  # the prefix: every token before the first image token
    positions = mrope_positions(model, ids, types, inputs["image_grid_thw"], mask)
    with torch.no_grad():
        full = model(**inputs).logits[:, -1]
        prefix = run_prefix(model, input_ids=ids[:1, :cut], attention_mask=mask[:1, :cut],
                            position_ids=positions[:, :1, :cut])
        runs = [continue_prefix(model, prefix, 2, input_ids=ids[:, cut:], attention_mask=mask,
                                position_ids=positions[..., cut:], pixel_values=inputs["pixel_values"],
                                image_grid_thw=inputs["image_grid_thw"]).logits[:, -1] for _ in range(2)]
    assert prefix.get_seq_length() == cut  # the continuations appended to copies, not to the prefix
    for logits in runs:
        np.testing.assert_allclose(logits.numpy(), full.numpy(), atol=1e-5)
    assert (full[0] - full[1]).abs().max() > 1e-4  # the two images read differently: the rows are not one row twice
