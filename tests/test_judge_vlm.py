import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from psdistill.data.records import ImageRecord
from psdistill.core.errors import ConfigError, PsdistillError
from psdistill.judge.base import prefer_both_orders
from psdistill.judge.cached import CachedJudge
from psdistill.judge.prompts import list_prompt_sets, load_prompt_set, prompt_hash
from psdistill.judge.store import JudgmentStore
from psdistill.judge.vlm import VLMJudge, VLMJudgeConfig
from psdistill.models.loading import ModelConfig
from psdistill.models.tiny import tiny_qwen3_vl

WORKER = Path(__file__).parent / "_judge_worker.py"
MODEL_ID = ModelConfig().model_id


@pytest.fixture(scope="module")
def tiny():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is faster, and the cores are shared
    yield tiny_qwen3_vl(seed=0)
    torch.set_num_threads(threads)


def _images(folder: Path, sizes) -> list[ImageRecord]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    records = []
    for k, (w, h) in enumerate(sizes):
        path = folder / f"img{k:02d}.png"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
        records.append(ImageRecord(id=path.stem, path=str(path)))
    return records


def _stock_reference(model, processor, text, answer_ids, pair) -> float:
    """One pair through the processor and the model's plain forward, as any user would run it."""
    inputs = processor(text=[text], images=[[Image.open(r.path).convert("RGB") for r in pair]], return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits[0, -1, answer_ids]
    return float(torch.softmax(logits.float(), -1)[0])


# Mixed sizes: 2x2, 3x1.5 (rounded), 1x2, ... merged-token grids, so batches mix sequence lengths.
SIZES = [(64, 64), (96, 48), (40, 80), (64, 64), (128, 96), (50, 50), (32, 128)]


def test_batched_vision_reuse_equals_one_pair_at_a_time(tiny, tmp_path):
    model, processor = tiny
    records = _images(tmp_path, SIZES)
    pairs = [(a, b) for a in records for b in records if a is not b]
    fast = VLMJudge(model, processor, VLMJudgeConfig(batch_size=5, vision_cache_images=3), model_id=MODEL_ID)
    assert fast.reuse_vision
    p_fast = fast.prefer(pairs, "overall")
    p_stock = VLMJudge(model, processor, VLMJudgeConfig(batch_size=5, reuse_vision=False), model_id=MODEL_ID) \
        .prefer(pairs, "overall")
    p_single = VLMJudge(model, processor, VLMJudgeConfig(batch_size=1, reuse_vision=False), model_id=MODEL_ID) \
        .prefer(pairs, "overall")
    text = fast.prompts.render(processor, "overall")
    reference = [_stock_reference(model, processor, text, fast.answer_ids, pair) for pair in pairs[::7]]
    np.testing.assert_allclose(p_fast, p_single, atol=1e-4)
    np.testing.assert_allclose(p_stock, p_single, atol=1e-4)
    np.testing.assert_allclose(p_fast[::7], reference, atol=1e-4)
    assert len(fast._encoded) == 3  # the LRU bound held, and results did not depend on it
    # A second call reuses the encoded images and gives the same answers.
    np.testing.assert_allclose(fast.prefer(pairs[:6], "overall"), p_fast[:6], atol=1e-6)
    # The readout is a probability that depends on the images, not a constant.
    assert np.all((p_fast > 0) & (p_fast < 1)) and np.ptp(p_fast) > 1e-4


def _reference_round(records, n_refs):
    """A reference pool's pairs: every item against one reference per order, as the adaptive pool's
    rounds ask them; (reference, x) pairs share their first image, (x, reference) pairs do not."""
    refs, items = records[:n_refs], records[n_refs:]
    placed = [(x, refs[n % n_refs]) for n, x in enumerate(items)]
    return placed + [(ref, x) for x, ref in placed] + [(a, b) for a in refs for b in refs if a is not b]


def _count_forwards(model):
    calls = []
    return calls, model.register_forward_pre_hook(lambda module, args: calls.append(1))


def _prefix_equals_full_forward(model, processor, records, batch_size, atol):
    """P(first) with prefix reuse against the full forward per pair (today's path), on a reference round."""
    pairs = _reference_round(records, 2)
    full = VLMJudge(model, processor, VLMJudgeConfig(batch_size=batch_size, reuse_prefix=False), model_id=MODEL_ID)
    reuse = VLMJudge(model, processor, VLMJudgeConfig(batch_size=batch_size), model_id=MODEL_ID)
    assert reuse._prefix is not None and full._prefix is None
    p_full = full.prefer(pairs, "overall")
    calls, hook = _count_forwards(model)
    try:
        p_reuse = reuse.prefer(pairs, "overall")
    finally:
        hook.remove()
    np.testing.assert_allclose(p_reuse, p_full, atol=atol)
    assert np.ptp(p_full) > 1e-4  # the images matter, so equal answers are not a constant's
    return pairs, len(calls)


def test_prefix_reuse_equals_the_full_forward(tiny, tmp_path):
    model, processor = tiny
    records = _images(tmp_path, SIZES)  # 2 references, 5 items
    pairs, forwards = _prefix_equals_full_forward(model, processor, records, batch_size=2, atol=1e-5)
    # Groups: reference 0 first in 3 + 1 pairs, reference 1 in 2 + 1; the 5 (x, reference) pairs
    # share only the text. Each group runs its prefix once, then its suffixes in batches of 2.
    assert len(pairs) == 12 and forwards == (1 + 2) + (1 + 2) + (1 + 3)
    # A caller handing over one reference's pairs in several calls (CachedJudge's chunks) runs its prefix once.
    judge = VLMJudge(model, processor, VLMJudgeConfig(batch_size=2), model_id=MODEL_ID)
    ref_pairs = [(records[0], x) for x in records[1:]]
    p_whole = VLMJudge(model, processor, VLMJudgeConfig(batch_size=6, reuse_prefix=False),
                       model_id=MODEL_ID).prefer(ref_pairs, "overall")
    calls, hook = _count_forwards(model)
    try:
        p_parts = np.concatenate([judge.prefer(ref_pairs[:4], "overall"), judge.prefer(ref_pairs[4:], "overall")])
    finally:
        hook.remove()
    np.testing.assert_allclose(p_parts, p_whole, atol=1e-5)
    assert len(calls) == 1 + 2 + 1


def test_prefix_tokens_saved_count_each_groups_prefix_for_every_pair_but_the_one_that_ran_it(tiny, tmp_path):
    model, processor = tiny
    records = _images(tmp_path, SIZES)
    pairs = _reference_round(records, 2)  # 12 pairs, one window at batch size 4
    judge = VLMJudge(model, processor, VLMJudgeConfig(batch_size=4), model_id=MODEL_ID)
    judge.prefer(pairs, "overall")
    text = judge.prompts.render(processor, "overall")
    pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")

    def image_starts(pair):  # where each image's tokens start in the processor's own sequence for the pair
        ids = processor(text=[text], images=[[Image.open(r.path).convert("RGB") for r in pair]],
                        return_tensors="pt")["input_ids"][0].tolist()
        return [n for n, t in enumerate(ids) if t == pad and ids[n - 1] != pad]

    ref0, ref1 = records[:2]
    # reference 0 first in 4 pairs, reference 1 in 3: text + first image + label run once per group;
    # the 5 (x, reference) pairs share the text before the first image (batches of 4 and 1, one prefix)
    expected = (3 * image_starts((ref0, ref1))[1] + 2 * image_starts((ref1, ref0))[1]
                + 4 * image_starts((records[2], ref0))[0])
    assert judge.prefix_tokens_saved == expected > 0
    plain = VLMJudge(model, processor, VLMJudgeConfig(batch_size=4, reuse_prefix=False), model_id=MODEL_ID)
    plain.prefer(pairs, "overall")
    assert plain.prefix_tokens_saved == 0


@pytest.mark.slow
def test_prefix_reuse_equals_the_full_forward_mid_size(tmp_path):
    """The mid-size random Qwen3-VL (35M parameters, 8 decoder layers, DeepStack into 2) at
    realistic token counts: 140-256 merged tokens per image."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "eval"))
    from _bench_common import random_qwen3_vl

    config = Path(__file__).resolve().parents[1] / "psdistill/models/configs/qwen3_vl_mid.json"
    model, processor = random_qwen3_vl(str(config), 512, torch.float32, seed=0)
    records = _images(tmp_path, [(512, 512), (640, 400), (400, 560), (512, 448), (600, 300), (480, 480)])
    _prefix_equals_full_forward(model.eval(), processor, records, batch_size=3, atol=1e-4)


def test_both_orders_are_stored_as_two_rows(tiny, tmp_path):
    model, processor = tiny
    records = _images(tmp_path / "img", SIZES[:4])
    pairs = [(records[0], records[1]), (records[2], records[3]), (records[1], records[3])]
    vlm = VLMJudge(model, processor, VLMJudgeConfig(prompt_set="photo"), model_id=MODEL_ID)
    store = JudgmentStore(tmp_path / "j.sqlite")
    judge = CachedJudge(vlm, store, chunk_size=2, progress=False)
    p, p_ab, p_ba = prefer_both_orders(judge, pairs, "composition")
    assert judge.computed == 6 and judge.hits == 0
    rows = {(r[3], r[4]): r for r in store.rows()}
    assert len(rows) == 6
    for (a, b), x, y in zip(pairs, p_ab, p_ba):
        ha, hb = store.content_hash(a.path), store.content_hash(b.path)
        assert rows[(ha, hb)][5] == pytest.approx(x) and rows[(hb, ha)][5] == pytest.approx(y)
        assert rows[(ha, hb)][1] == vlm.prompt_hash("composition") and rows[(ha, hb)][2] == "composition"
    assert rows[(ha, hb)][0] == vlm.judge_id and MODEL_ID in vlm.judge_id
    bias, n = judge.position_bias("composition")
    assert n == 3 and np.isfinite(bias)
    # Judging again: all from the store.
    prefer_both_orders(judge, pairs, "composition")
    assert judge.computed == 6 and judge.hits == 6


def test_multi_token_answer_word_fails_loudly(tiny, tmp_path):
    model, processor = tiny
    data = dict(name="bad", system="", labels=["Image A:", "Image B:"], question="Better in {criterion}?",
                answers=["zebra", "B"], dimensions={"overall": "overall quality"})
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps(data))  # JSON is YAML
    with pytest.raises(PsdistillError, match=r"answer word 'zebra' is [2-9] tokens \["):
        VLMJudge(model, processor, VLMJudgeConfig(prompt_set=str(path)), model_id=MODEL_ID)


def test_prompt_sets_render_with_the_chat_template(tiny):
    _, processor = tiny
    assert {"painting", "photo"} <= set(list_prompt_sets())
    painting = load_prompt_set("painting")
    assert len(painting.dimensions) == 5 and "overall" in painting.dimensions
    text = painting.render(processor, "brushwork")
    assert text.count("<|image_pad|>") == 2 and text.endswith("<|im_start|>assistant\n")
    assert "brush strokes" in text and painting.system in text
    hashes = {prompt_hash(painting.render(processor, d), painting.answers) for d in painting.dimensions}
    assert len(hashes) == 5
    assert prompt_hash(text, ("1", "2")) != prompt_hash(text, painting.answers)
    with pytest.raises(ConfigError, match="no dimension 'sharpness'"):
        painting.render(processor, "sharpness")
    with pytest.raises(ConfigError, match="neither a bundled prompt set"):
        load_prompt_set("no-such-set")


def _count_rows(path) -> int:
    try:
        with sqlite3.connect(path, timeout=10) as conn:
            return conn.execute("SELECT count(*) FROM judgments").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def test_sigkill_mid_run_then_resume_computes_only_the_missing_pairs(tmp_path):
    n = 10  # 90 ordered pairs in 45 batches
    records = _images(tmp_path / "img", [(64, 64)] * n)
    store_path, go = tmp_path / "j.sqlite", tmp_path / "go"
    cmd = [sys.executable, str(WORKER), str(store_path), str(tmp_path / "img"), "--batch-size", "2"]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    # The resuming process loads meanwhile (imports are most of its run time) and waits for `go`.
    resumed = subprocess.Popen(cmd + ["--start-when", str(go)], stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 90
    while _count_rows(store_path) < 10 and first.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait()
    done = _count_rows(store_path)
    assert 10 <= done < n * (n - 1), "the worker was not killed mid-run"
    assert done % 2 == 0  # whole batches only: the batch in flight is lost, never half-stored
    go.touch()
    out, _ = resumed.communicate(timeout=120)
    assert resumed.returncode == 0
    assert json.loads(out) == {"hits": done, "computed": n * (n - 1) - done, "known": n * (n - 1)}
    store = JudgmentStore(store_path)
    rows = store.rows()
    keys = {(r[3], r[4]) for r in rows}
    hashes = [store.content_hash(r.path) for r in records]
    assert len(rows) == len(keys) == n * (n - 1)
    assert keys == {(a, b) for a in hashes for b in hashes if a != b}
    assert all(0 < r[5] < 1 for r in rows)
