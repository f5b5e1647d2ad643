"""FGAesQ baseline: DiffToken, losses, model paths, official weights, scorer, config (fast, tiny CLIP)."""
import math

import numpy as np
import pytest
import torch
from PIL import Image

from psdistill.baselines.fgaesq.difftoken import (DiffTokenConfig, align_reference, collate_tokens, difftoken,
                                                  make_tokens, region_similarity, select_regions, ssim_map,
                                                  to_tensor)
from psdistill.baselines.fgaesq.losses import (BETTER, SIMILAR, WORSE, ctalign_loss, describe_pair,
                                               direct_rank_loss, emd_loss, expected_score, gaussian_target,
                                               listmle, rankreg_loss)
from psdistill.baselines.fgaesq.model import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, FGAesQModel, load_base
from psdistill.errors import ConfigError, PsdistillError


def _photo(size=128, seed=0):
    """A textured RGB image (SSIM needs structure; a flat image is trivially similar to anything)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    base = np.stack([np.sin(12 * x + 3 * y), np.cos(9 * y - 4 * x), np.sin(7 * (x + y))], -1) * 0.35 + 0.5
    arr = np.clip(base + rng.normal(0, 0.05, base.shape), 0, 1)
    return Image.fromarray((arr * 255).astype(np.uint8))


@pytest.fixture(scope="module")
def tiny():
    model, text = load_base("tiny", seed=0, image_size=64)
    return model.eval(), text


# ---- DiffToken --------------------------------------------------------------------------------

def test_identical_images_are_similar_everywhere_and_nothing_is_decisive():
    x = to_tensor(_photo())
    sim = region_similarity(x, x.clone(), region=32)
    assert sim.shape == (4, 4)
    np.testing.assert_allclose(sim, 1.0, atol=1e-6)
    sel = select_regions(sim, p=0.5)
    assert not sel.decisive.any() and len(sel.order) == 0
    toks = make_tokens(x, sel, patch=16, region_factor=2, max_tokens=100)
    assert toks.patches.shape == (16, 3, 16, 16) and not toks.full_res.any()  # one downsampled token per region


def test_one_changed_region_is_selected_first():
    im = _photo()
    arr = np.asarray(im).copy()
    arr[64:96, 32:64] = 255 - arr[64:96, 32:64]  # invert region (row 2, col 1)
    x, y = to_tensor(Image.fromarray(arr)), to_tensor(im)
    sim = region_similarity(x, y, region=32)
    sel = select_regions(sim, p=0.5)
    assert sel.order[0] == 2 * 4 + 1
    assert sel.decisive[2, 1] and sim[2, 1] == sim.min()
    # Regions far from the change (beyond the 11x11 SSIM window) stay exactly similar.
    assert sim[0, 3] == pytest.approx(1.0, abs=1e-6)
    toks = make_tokens(x, sel, patch=16, region_factor=2, max_tokens=100)
    full = toks.centres[toks.full_res]
    # The changed region gives 4 full-resolution patches centred inside rows 64..96, cols 32..64.
    inside = ((full[:, 0] * 128 > 64) & (full[:, 0] * 128 < 96) & (full[:, 1] * 128 > 32) & (full[:, 1] * 128 < 64))
    assert int(inside.sum()) == 4


def test_decisive_set_follows_the_percentile_rule():
    sim = np.array([[0.1, 0.9, 0.5, 0.7], [0.3, 0.2, 0.8, 0.6]])
    sel = select_regions(sim, p=0.5)  # tau = median = 0.55: the four lowest
    assert sel.decisive.sum() == 4
    np.testing.assert_array_equal(sel.order, [0, 5, 4, 2])


def test_ssim_matches_skimage_inside_the_border():
    from skimage.metrics import structural_similarity

    a = np.asarray(_photo(64, 1), dtype=np.float32) / 255
    b = np.clip(a + np.random.default_rng(2).normal(0, 0.1, a.shape), 0, 1).astype(np.float32)
    ours = ssim_map(torch.from_numpy(a).permute(2, 0, 1), torch.from_numpy(b).permute(2, 0, 1))
    _, full = structural_similarity(a, b, channel_axis=2, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, data_range=1.0, full=True)
    np.testing.assert_allclose(ours.permute(1, 2, 0).numpy()[5:-5, 5:-5], full[5:-5, 5:-5], atol=1e-4)


def test_token_budget_drops_downsampled_tokens_and_demotes_the_least_different():
    x = to_tensor(_photo())
    sim = np.linspace(0, 1, 16).reshape(4, 4)
    sel = select_regions(sim, p=0.5)  # 8 decisive regions -> 32 full-res tokens + 8 downsampled
    gen = torch.Generator().manual_seed(0)
    t = make_tokens(x, sel, 16, 2, max_tokens=36, generator=gen)
    assert len(t.patches) == 36 and int(t.full_res.sum()) == 32  # 4 of the 8 downsampled tokens dropped
    t = make_tokens(x, sel, 16, 2, max_tokens=13)  # only 3 regions fit at full resolution
    assert len(t.patches) == 13 and int(t.full_res.sum()) == 12
    # ...and they are the three most different (regions 0, 1, 2 of the top row)
    assert torch.all(t.centres[t.full_res][:, 0] < 0.25)


def test_reference_is_aligned_on_the_longer_edge_and_uncovered_regions_are_different():
    ref = _photo(128).crop((0, 0, 128, 64))  # 2:1 reference for a square target
    pix, cover = align_reference(ref, (128, 128))
    assert pix.shape == (3, 128, 128)
    assert cover[32:96].all() and not cover[:32].any() and not cover[96:].any()
    tokens, sel = difftoken(_photo(128), ref, DiffTokenConfig(), image_size=64, patch=16,
                            mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD)
    assert (sel.similarity[0] == -1).all() and (sel.similarity[3] == -1).all()
    assert sel.decisive[0].all() or sel.decisive[3].all()


def test_token_path_equals_the_standard_path_on_the_native_grid(tiny):
    model, _ = tiny
    x = torch.randn(2, 3, 64, 64)
    p = x.reshape(2, 3, 4, 16, 4, 16).permute(0, 2, 4, 1, 3, 5).reshape(2, 16, 3, 16, 16)
    cy, cx = torch.meshgrid((torch.arange(4) + 0.5) / 4, (torch.arange(4) + 0.5) / 4, indexing="ij")
    centres = torch.stack([cy.flatten(), cx.flatten()], -1).expand(2, 16, 2)
    with torch.no_grad():
        a = model(pixel_values=x)
        b = model(patches=p, centres=centres, token_mask=torch.ones(2, 16, dtype=torch.bool))
        # Padding tokens are masked out: the same result with 5 junk tokens appended.
        mask = torch.zeros(2, 21, dtype=torch.bool)
        mask[:, :16] = True
        c = model(patches=torch.cat([p, torch.randn(2, 5, 3, 16, 16)], 1),
                  centres=torch.cat([centres, torch.rand(2, 5, 2)], 1), token_mask=mask)
    torch.testing.assert_close(b.embeds, a.embeds, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(c.embeds, a.embeds, atol=1e-5, rtol=1e-5)
    assert torch.all((a.scores >= 1) & (a.scores <= 10))


def test_difftoken_batch_of_mixed_aspect_ratios_runs(tiny):
    model, _ = tiny
    cfg = DiffTokenConfig(max_tokens_factor=2.25)
    pairs = [(_photo(128), _photo(128, 1)), (_photo(128).crop((0, 0, 128, 80)), _photo(128, 3))]
    toks = [difftoken(x, y, cfg, 64, 16, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)[0] for x, y in pairs]
    assert len(toks[0].patches) <= cfg.max_tokens(64, 16) == 36
    batch = collate_tokens(toks)
    with torch.no_grad():
        out = model(**batch)
    assert out.scores.shape == (2,) and torch.isfinite(out.scores).all()


# ---- losses -----------------------------------------------------------------------------------

def test_emd_matches_a_hand_computation():
    p = torch.tensor([[0.5, 0.5, 0.0]])
    q = torch.tensor([[0.0, 0.5, 0.5]])
    # CDFs: p = (0.5, 1, 1), q = (0, 0.5, 1) -> |diff| = (0.5, 0.5, 0); r = 2: sqrt((0.25 + 0.25 + 0) / 3)
    assert emd_loss(p, q).item() == pytest.approx(math.sqrt(0.5 / 3), rel=1e-6)
    # r = 1: mean |diff| = 1/3
    assert emd_loss(p, q, r=1).item() == pytest.approx(1 / 3, rel=1e-6)
    assert emd_loss(q, q).item() == pytest.approx(0.0, abs=1e-5)


def test_gaussian_target_has_the_score_as_expectation():
    t = gaussian_target([1.5, 5.5, 7.25, 9.9], sigma=1.0)
    assert t.shape == (4, 10)
    np.testing.assert_allclose(t.sum(1), 1.0)
    np.testing.assert_allclose(t @ np.arange(1, 11), [1.5, 5.5, 7.25, 9.9], atol=1e-6)
    assert expected_score(torch.tensor(t)).numpy() == pytest.approx([1.5, 5.5, 7.25, 9.9], abs=1e-6)


def test_listmle_matches_its_formula_by_hand():
    v = torch.tensor([0.2, 1.0, -0.5])
    order = torch.tensor([1, 0, 2])  # v[1] should be first, then v[0], then v[2]
    a, b, c = 1.0, 0.2, -0.5
    hand = -(math.log(math.exp(a) / (math.exp(a) + math.exp(b) + math.exp(c)))
             + math.log(math.exp(b) / (math.exp(b) + math.exp(c)))
             + math.log(1.0))
    assert listmle(v, order).item() == pytest.approx(hand, rel=1e-6)


def test_rankreg_on_a_pair_matches_the_hand_formula_and_prefers_the_right_order():
    s = torch.tensor([6.0, 5.0])  # ranks: image 0 is better
    p01 = 1 / (1 + math.exp(-(6.0 - 5.0)))  # eq. 4: P(0 > 1)
    p10 = 1 - p01
    # Ordered pairs (0,1) then (1,0); ground truth puts (0,1) first; ListMLE over two items, / 2 pairs.
    hand = -math.log(math.exp(p01) / (math.exp(p01) + math.exp(p10))) / 2
    assert rankreg_loss(s, [0, 1]).item() == pytest.approx(hand, rel=1e-6)
    assert rankreg_loss(s, [0, 1]).item() < rankreg_loss(s, [1, 0]).item()
    # Three images: clear pairs (rank gap 2) must come first.
    s3 = torch.tensor([3.0, 2.0, 1.0], requires_grad=True)
    rankreg_loss(s3, [0, 1, 2]).backward()
    assert s3.grad[0] < 0 < s3.grad[2]  # gradient descent raises the best and lowers the worst


def test_direct_rank_loss_is_listmle_on_scores_best_first():
    s = torch.tensor([1.0, 3.0, 2.0])
    expected = listmle(s, torch.tensor([1, 2, 0])).item() / 3
    assert direct_rank_loss(s, [2, 0, 1]).item() == pytest.approx(expected)


def test_ctalign_gradient_step_aligns_the_difference_with_the_text():
    torch.manual_seed(0)
    ex = torch.randn(4, 8, requires_grad=True)
    ey = torch.randn(4, 8)
    text = torch.randn(4, 8)
    loss = ctalign_loss(ex, ey, text)
    assert 0.0 <= loss.item() <= 2.0
    loss.backward()
    with torch.no_grad():
        after = ctalign_loss(ex - 0.1 * ex.grad, ey, text)
    assert after.item() < loss.item()
    # Perfect alignment costs 0, anti-alignment 2.
    assert ctalign_loss(ey + text, ey, text).item() == pytest.approx(0.0, abs=1e-6)
    assert ctalign_loss(ey - text, ey, text).item() == pytest.approx(2.0, abs=1e-6)


def test_descriptions_come_from_comments_or_the_ground_truth_order():
    assert describe_pair(0, 2) == BETTER
    assert describe_pair(3, 1) == WORSE
    assert describe_pair(1, 1) == SIMILAR and describe_pair(None, 1) == SIMILAR
    assert describe_pair(3, 1, "blurrier than the others") == "blurrier than the others"


def test_text_encoder_embeds_descriptions(tiny):
    _, text = tiny
    e = text.encode([BETTER, WORSE, BETTER])
    assert e.shape == (3, 32)
    torch.testing.assert_close(e[0], e[2])
    assert not torch.allclose(e[0], e[1])


# ---- saving, loading, official weights --------------------------------------------------------

def test_save_and_load_roundtrip_and_the_registry(tmp_path, tiny):
    from psdistill.registry import create_scorer

    model, _ = tiny
    model.save_pretrained(tmp_path / "ck")
    assert (tmp_path / "ck" / "model.safetensors").is_file() and (tmp_path / "ck" / "config.json").is_file()
    ims = [_photo(96, 0), _photo(128, 1).crop((0, 0, 128, 64))]
    scorer = create_scorer("fgaesq", path=str(tmp_path / "ck"), device="cpu")
    assert scorer.score_range == (1.0, 10.0) and scorer.lower_better is False and scorer.name == "fgaesq"
    s = scorer.score(ims)
    with torch.no_grad():
        groups, idx = model.preprocess(ims)
        ref = model(pixel_values=groups).scores.numpy()
    flat = [k for ks in idx for k in ks]
    np.testing.assert_allclose(s[flat], ref, rtol=1e-5)
    pair = scorer.score_pairs(ims, ims[::-1])
    series = scorer.score_series(ims)
    np.testing.assert_allclose(series, pair, rtol=1e-5)  # two images: one reference each
    with pytest.raises(PsdistillError, match="not an FGAesQ checkpoint"):
        FGAesQModel.from_pretrained(tmp_path)


def test_base_clip_saved_locally_loads_through_from_pretrained(tmp_path):
    from psdistill.models.tiny import save_tiny, tiny_clip

    clip, processor = tiny_clip(seed=1, image_size=64)
    save_tiny(clip, processor, tmp_path / "clip")
    model, text = load_base(str(tmp_path / "clip"))
    ref, _ = load_base("tiny", seed=1, image_size=64)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(pixel_values=x).embeds, ref(pixel_values=x).embeds)
    assert text is not None and text.encode(["a photo"]).shape == (1, 32)


def _to_openai(state, prefix="visual."):
    """Write an FGAesQModel state dict in OpenAI-CLIP naming, by hand (the inverse of the loader's mapping)."""
    out = {}
    vm = "vision_model."
    out[prefix + "class_embedding"] = state[vm + "embeddings.class_embedding"]
    out[prefix + "positional_embedding"] = state[vm + "embeddings.position_embedding.weight"]
    out[prefix + "conv1.weight"] = state[vm + "embeddings.patch_embedding.weight"]
    for a, b in (("ln_pre", "pre_layrnorm"), ("ln_post", "post_layernorm")):
        for leaf in ("weight", "bias"):
            out[f"{prefix}{a}.{leaf}"] = state[f"{vm}{b}.{leaf}"]
    n = 0
    while f"{vm}encoder.layers.{n}.self_attn.q_proj.weight" in state:
        L, R = f"{vm}encoder.layers.{n}.", f"{prefix}transformer.resblocks.{n}."
        for leaf in ("weight", "bias"):
            out[f"{R}attn.in_proj_{leaf}"] = torch.cat([state[f"{L}self_attn.{p}_proj.{leaf}"] for p in "qkv"])
            out[f"{R}attn.out_proj.{leaf}"] = state[f"{L}self_attn.out_proj.{leaf}"]
            out[f"{R}ln_1.{leaf}"] = state[f"{L}layer_norm1.{leaf}"]
            out[f"{R}ln_2.{leaf}"] = state[f"{L}layer_norm2.{leaf}"]
            out[f"{R}mlp.c_fc.{leaf}"] = state[f"{L}mlp.fc1.{leaf}"]
            out[f"{R}mlp.c_proj.{leaf}"] = state[f"{L}mlp.fc2.{leaf}"]
        n += 1
    out[prefix + "proj"] = state["visual_projection.weight"].t()
    out["score_head.weight"] = state["head.weight"]
    out["score_head.bias"] = state["head.bias"]
    return out


def test_official_openai_naming_maps_onto_the_model(tmp_path):
    from psdistill.baselines.fgaesq.official import load_official_weights

    src, _ = load_base("tiny", seed=3, with_text=False)
    torch.nn.init.normal_(src.head.weight)
    official = _to_openai(src.state_dict(), prefix="module.clip.visual.")
    assert "module.clip.visual.transformer.resblocks.1.attn.in_proj_weight" in official
    torch.save(official, tmp_path / "fgaesq.pth")
    dst, _ = load_base("tiny", seed=7, with_text=False)
    report = load_official_weights(dst, tmp_path / "fgaesq.pth")
    assert report.ok and report.mapped["module.clip.visual.transformer.resblocks.0.attn.in_proj_weight"] == [
        f"vision_model.encoder.layers.0.self_attn.{p}_proj.weight" for p in "qkv"]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(dst.eval()(pixel_values=x).scores, src.eval()(pixel_values=x).scores)


def test_official_loading_reports_missing_and_unexpected_keys():
    from psdistill.baselines.fgaesq.official import load_official_weights

    src, _ = load_base("tiny", seed=3, with_text=False)
    official = _to_openai(src.state_dict())
    del official["visual.ln_post.bias"]
    official["visual.attnpool.weight"] = torch.zeros(3)
    official["text_projection"] = torch.zeros(4, 4)
    dst, _ = load_base("tiny", seed=7, with_text=False)
    before = dst.head.weight.clone()
    with pytest.raises(PsdistillError, match=r"missing \(1\): vision_model.post_layernorm.bias.*unexpected \(2\)"):
        load_official_weights(dst, official)
    torch.testing.assert_close(dst.head.weight, before)  # strict: nothing loaded
    with pytest.warns(UserWarning, match="loaded partially"):
        report = load_official_weights(dst, official, strict=False)
    assert report.missing == ["vision_model.post_layernorm.bias"]
    assert set(report.unexpected) == {"visual.attnpool.weight", "text_projection"}
    torch.testing.assert_close(dst.head.weight, src.head.weight)


def test_official_head_on_the_pooled_features_is_detected(tmp_path):
    from psdistill.baselines.fgaesq.scorer import FGAesQScorer
    from psdistill.models.tiny import save_tiny, tiny_clip

    from transformers import CLIPModel

    _, processor = tiny_clip(seed=0)
    config = tiny_clip(seed=0)[0].config
    config.projection_dim = 24  # head widths differ: 32 (pooled) vs 24 (projection)
    save_tiny(CLIPModel(config), processor, tmp_path / "clip")
    src, _ = load_base(str(tmp_path / "clip"), with_text=False, head_input="pooled")
    torch.nn.init.normal_(src.head.weight)
    torch.save(_to_openai(src.state_dict()), tmp_path / "w.pt")
    scorer = FGAesQScorer.from_official(tmp_path / "w.pt", base=tmp_path / "clip", device="cpu")
    assert scorer.model.config.head_input == "pooled" and scorer.load_report.ok
    x = [_photo(64)]
    with torch.no_grad():
        ref = src.eval()(pixel_values=src.preprocess(x)[0]).scores.numpy()
    np.testing.assert_allclose(scorer.score(x), ref, rtol=1e-5)


# ---- config, data, metrics --------------------------------------------------------------------

def test_yaml_configs_parse_and_paper_defaults():
    from psdistill.baselines.fgaesq.config import FGAesQConfig
    from psdistill.baselines.fgaesq.train import train_fingerprint
    from psdistill.config import parse_config

    paper = parse_config(FGAesQConfig, ["--config", "recipes/configs/fgaesq.yaml"])
    assert paper.train.lr == 2e-5 and paper.train.coarse_batch_size == 128 and paper.train.pretrain_epochs == 3
    assert paper.train.joint_epochs == 7 and paper.train.weight_decay == 5e-5 and paper.loss.ctalign_weight == 10
    assert (paper.train.fine_momentum, paper.train.coarse_momentum) == (0.615, 0.8)
    assert paper.difftoken.p == 0.5 and paper.difftoken.region_factor == 2
    assert paper.model.name_or_path == "openai/clip-vit-base-patch16"
    demo = parse_config(FGAesQConfig, ["--config", "recipes/configs/fgaesq_demo.yaml", "loss.rank=direct"])
    assert demo.model.name_or_path == "tiny" and demo.loss.rank == "direct"
    assert train_fingerprint(demo) != train_fingerprint(paper)


@pytest.mark.parametrize("override, key", [
    ("difftoken.p=1.5", "difftoken.p"), ("loss.rank=listnet", "loss.rank"),
    ("train.fine_momentum=1.0", "train.fine_momentum"), ("train.lerning_rate=0.1", "train.lerning_rate"),
])
def test_bad_config_values_name_the_key(override, key):
    from psdistill.baselines.fgaesq.config import FGAesQConfig
    from psdistill.config import parse_config

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        parse_config(FGAesQConfig, [override])


def test_targets_and_series(tmp_path):
    from psdistill.baselines.fgaesq.data import coarse_items, fine_series
    from psdistill.data.records import ImageRecord

    recs = [ImageRecord(id=f"a{k}", path="x", category="a", series="s1", rank=k, scores={"overall": 9 - 2 * k})
            for k in range(3)]
    recs += [ImageRecord(id="b0", path="x", category="b", scores={f"votes_{k}": float(k == 3) for k in range(1, 11)}),
             ImageRecord(id="b1", path="x", category="b", series="lonely", rank=0)]
    items = coarse_items(recs, "overall", (1.0, 10.0), 1.0)
    assert [it.record.id for it in items] == ["a0", "a1", "a2", "b0"]
    assert items[0].target @ np.arange(1, 11) == pytest.approx(9.0)
    np.testing.assert_array_equal(items[3].target, np.eye(10)[2])  # the vote histogram, as is
    assert [[r.id for r in s] for s in fine_series(recs)] == [["a0", "a1", "a2"]]
