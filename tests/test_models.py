import numpy as np
import pytest
import torch
from PIL import Image

from psdistill.errors import ConfigError
from psdistill.models.loading import ModelConfig, load_vlm
from psdistill.models.tiny import save_tiny, tiny_clip, tiny_qwen3_vl


def _images(n, size=64, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def _pair_inputs(processor):
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Which is better?"}]}]
    text = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    return processor(text=[text], images=[_images(2)], return_tensors="pt")


def test_answer_and_level_words_are_single_tokens():
    _, processor = tiny_qwen3_vl()
    tok = processor.tokenizer
    for word in ["A", "B", "1", "2", "excellent", "good", "fair", "poor", "bad"]:
        assert len(tok.encode(word, add_special_tokens=False)) == 1, word


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
    from psdistill.errors import PsdistillError
    with pytest.raises(PsdistillError, match="cannot load"):
        load_vlm(ModelConfig(name_or_path=str(tmp_path / "nothing")))


def test_model_config_validation():
    with pytest.raises(ConfigError, match="model.min_pixels"):
        ModelConfig(min_pixels=10_000, max_pixels=100)
