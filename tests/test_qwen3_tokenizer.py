"""The real Qwen3 tokenizer (installed by setup.sh) with Qwen3-VL's chat template: prompt rendering,
the single-token checks, and the tiny tokenizer against it. Skips when the file is absent, fails under CI."""
import hashlib
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from psdistill.distill.config import DistillConfig
from psdistill.scoring.readout import level_token_ids, render_prompt
from psdistill.core.errors import ConfigError
from psdistill.judge.prompts import load_prompt_set
from psdistill.models import tiny
from psdistill.models.qwen3_reference import (TOKENIZER_SHA256, qwen3_vl_text_processor, restricted_vocabulary,
                                              tokenizer_file)
from psdistill.models.readout_tokens import next_token_ids
from psdistill.judge.registry import JudgeConfig
from psdistill.pipeline import PipelineConfig
from psdistill.pipeline.readout_check import check_readout_tokens, tiny_vocabulary_texts

PUBLISHED_CONFIG = Path(tiny.__file__).parent / "configs" / "qwen3_vl_8b.json"


@pytest.fixture(scope="module")
def real():
    try:
        tokenizer_file()
    except FileNotFoundError as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{e}; CI runs setup.sh, so this is a broken set-up")
        pytest.skip(f"{e} (under CI=true this fails instead)")
    return qwen3_vl_text_processor()


def _pieces(tokenizer, text):
    return tokenizer.convert_ids_to_tokens(tokenizer.encode(text, add_special_tokens=False))


def test_the_installed_file_is_the_pinned_qwen3_tokenizer(real):
    assert hashlib.sha256(tokenizer_file().read_bytes()).hexdigest() == TOKENIZER_SHA256
    # Its vision tokens are the ids the published Qwen3-VL-8B config gives them.
    published = json.loads(PUBLISHED_CONFIG.read_text())
    for token, key in [("<|image_pad|>", "image_token_id"), ("<|video_pad|>", "video_token_id"),
                       ("<|vision_start|>", "vision_start_token_id"), ("<|vision_end|>", "vision_end_token_id")]:
        assert real.tokenizer.convert_tokens_to_ids(token) == published[key], token


def test_a_judge_prompt_renders_and_expands_as_qwen3_vl_does(real):
    text = load_prompt_set("painting").render(real, "composition")
    assert text == (  # by hand, from painting.yaml and Qwen3-VL's template
        "<|im_start|>system\nYou are an expert critic of traditional Chinese painting.<|im_end|>\n"
        "<|im_start|>user\nImage A:<|vision_start|><|image_pad|><|vision_end|>"
        "Image B:<|vision_start|><|image_pad|><|vision_end|>Which of the two paintings is better in terms of "
        "composition (the arrangement of forms, the use of empty space and the balance of the picture)? "
        "Answer with one letter only: A or B.<|im_end|>\n<|im_start|>assistant\n")
    # At the published bounds a 768x512 painting keeps its size: (768/16 * 512/16) / 2^2 = 384 merged tokens.
    images = [Image.new("RGB", (768, 512)), Image.new("RGB", (512, 512))]
    ids = real(text=[text], images=[images], return_tensors="pt")["input_ids"][0].tolist()
    assert ids.count(real.tokenizer.convert_tokens_to_ids("<|image_pad|>")) == 384 + 256
    assert real.tokenizer.convert_ids_to_tokens(ids[-3:]) == ["<|im_start|>", "assistant", "Ċ"]


def test_the_default_read_words_are_one_token_each_where_they_are_read(real):
    cfg = PipelineConfig(judge=JudgeConfig(kind="vlm"))
    ids = check_readout_tokens(real, cfg)
    # Byte-level BPE numbers the printable ASCII bytes from '!' (0x21) on: 'A' (0x41) is id 32.
    assert ids["answers"] == [0x41 - 0x21, 0x42 - 0x21]
    assert real.tokenizer.convert_ids_to_tokens(ids["levels"]) == cfg.distill.level_words


def test_lower_case_level_words_fail_before_any_judging_naming_words_that_fit(real):
    words = ["excellent", "good", "fair", "poor", "bad"]
    cfg = PipelineConfig(judge=JudgeConfig(kind="vlm"), distill=DistillConfig(level_words=words))
    with pytest.raises(ConfigError) as e:
        check_readout_tokens(real, cfg)
    msg = str(e.value)
    assert msg.startswith("distill.level_words: ")
    assert "'excellent' is 2 tokens ['ex', 'cellent'] (one token: 'Excellent')" in msg
    assert "'poor' is 2 tokens ['po', 'or'] (one token: 'Poor'" in msg
    assert "'good'" not in msg and "'fair'" not in msg and "'bad'" not in msg
    text = cfg.distill.rendered_prompt("overall")
    assert len(level_token_ids(real, ["Excellent", "good", "fair", "Poor", "bad"], text)) == 5
    # Q-Align's reading: the leading-space words after a fixed answer prefix are one token each.
    prefix = render_prompt(real, text) + "The aesthetic quality of this image is"
    ids = next_token_ids(real.tokenizer, prefix, [" " + w for w in words], "q-align")
    assert real.tokenizer.convert_ids_to_tokens(ids) == ["Ġ" + w for w in words]


def test_the_tiny_tokenizer_splits_every_project_text_as_qwen3_does(real):
    small = tiny.tiny_tokenizer()
    texts = tiny_vocabulary_texts(real)
    for text in texts:
        assert _pieces(small, text) == _pieces(real.tokenizer, text), text[-60:]
    expected = restricted_vocabulary(tokenizer_file().read_text(), texts)
    assert json.loads(tiny.TOKENIZER_FILE.read_text()) == json.loads(expected), \
        "the bundled prompts changed: run python eval/tokenization.py --write-tiny-vocabulary"
