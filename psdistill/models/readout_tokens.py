"""Words read out of next-token probabilities must be one token where they are read.

The judge compares the probabilities of its two answer words, the levels head those of its level
words, each at the position right after the rendered prompt (the chat template's generation prompt,
"<|im_start|>assistant\\n" for Qwen). What counts is how the tokenizer splits the prompt followed by
the word, not the word alone: in Qwen3's vocabulary "excellent" is two tokens ("ex", "cellent"),
" excellent" one, "Excellent" one, and a word could also merge with the end of the prompt.
"""
from __future__ import annotations

from typing import Sequence

from psdistill.core.errors import ConfigError


def next_token_ids(tokenizer, prompt: str, words: Sequence[str], field: str, what: str = "word") -> list[int]:
    """The token id of each word as the model emits it right after `prompt`.

    Raises ConfigError naming `field` and every word that is not one new token there (with other
    casings of it that are), or words that share a token.
    """
    base = tokenizer.encode(prompt, add_special_tokens=False)
    ids, bad = [], []
    for word in words:
        new = _after(tokenizer, base, prompt, word)
        if new is not None and len(new) == 1:
            ids.append(new[0])
            continue
        if new is None:
            bad.append(f"{what} {word!r} merges with the end of the prompt")
        else:
            bad.append(f"{what} {word!r} is {len(new)} tokens {tokenizer.convert_ids_to_tokens(new)}")
        fits = [w for w in dict.fromkeys((word.capitalize(), word.lower(), word.upper())) if w != word
                and len(_after(tokenizer, base, prompt, w) or ()) == 1]
        if fits:
            bad[-1] += f" (one token: {', '.join(map(repr, fits))})"
    if bad:
        raise ConfigError(f"{field}: " + "; ".join(bad) + " right after the prompt for this tokenizer; the readout "
                          "compares one next-token probability per word, so each must be one token there")
    if len(set(ids)) < len(ids):
        raise ConfigError(f"{field}: the {what}s {list(words)} share a token for this tokenizer")
    return ids


def _after(tokenizer, base: list[int], prompt: str, word: str):
    """The tokens `word` adds after `prompt`, or None where it changes the prompt's own last tokens."""
    full = tokenizer.encode(prompt + word, add_special_tokens=False)
    return full[len(base):] if full[:len(base)] == base else None
