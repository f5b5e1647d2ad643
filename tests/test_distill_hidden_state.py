"""The hidden-state layout the scalar head relies on (psdistill/models/hidden_state.py), checked on the tiny
Qwen3-VL against the inner model's own `last_hidden_state` and against each row run alone: a transformers
upgrade that moves the final norm out of `hidden_states[-1]` or pads on the right fails here."""
import numpy as np
import torch
from PIL import Image

from psdistill.models.hidden_state import last_token_state
from psdistill.models.loading import ModelConfig, load_vlm
from psdistill.scoring.readout import processor_inputs, render_prompt


def _images():
    rng = np.random.default_rng(0)
    # Two sizes: different numbers of image tokens, so the shorter row is padded.
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in ((32, 32), (64, 64))]


def test_last_token_state_is_the_normed_output_at_each_rows_last_real_token():
    torch.manual_seed(0)
    model, processor = load_vlm(ModelConfig())
    model.eval()
    text = render_prompt(processor, "Rate the aesthetic quality of this image. Answer with one word.")
    images = _images()
    inputs = processor_inputs(processor, text, images)
    mask = inputs["attention_mask"]
    assert mask[:, -1].all() and not mask[0, 0]  # left padding: the short row's pad is in front
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
        h = last_token_state(out)
        assert len(out.hidden_states) == model.config.get_text_config().num_hidden_layers + 1
        inner = model.model(**inputs).last_hidden_state[:, -1]
        alone = torch.cat([last_token_state(model(**processor_inputs(processor, text, [im]), output_hidden_states=True))
                           for im in images])
    assert h.shape == (2, model.config.get_text_config().hidden_size)
    torch.testing.assert_close(h, inner)  # after the final norm, as lm_head reads it
    torch.testing.assert_close(h, alone, atol=1e-4, rtol=1e-4)  # the last position is the last real token
    # and not the pre-norm state of the last layer: the norm changes it
    assert not torch.allclose(out.hidden_states[-2][:, -1], h, atol=1e-3)
