"""FGAesQ's network, as the official release builds it (FGAesQ_Inference/utils/FGAesQ.py of github
yzc-ippl/FG-IAA): the CLIP ViT-B/16 vision tower, CLIP's visual projection and an MLP score head.

    official tokens (official_tokens.py): CLS + 511 tokens, each a 16 px patch embedding (padding:
        mask_token) + scale_embedding[scale id] + its position (the pretrained grid interpolated
        to the token's grid) -> pre-LN -> encoder (no attention mask: the CLS attends to the
        padding, as the release) -> CLS -> post-LN
    resize path (single="resize"): HF CLIPVisionModel on the image resized to a 224 px long edge
    project DiffToken path (series="project", difftoken.py): tokens at sampled positions, padding masked
    -> visual_projection (E_v, the CLIP image embedding CTAlign aligns with text)
    -> iqa_head: Linear(E, 256) ReLU Dropout(0.2) Linear(256, 64) ReLU Dropout(0.1) Linear(64, 10)
    -> softmax -> score = sum_k k p_k, k = 1..10

Reference: Yang et al., "Fine-grained Image Aesthetic Assessment: Learning Discriminative Scores
from Relative Ranks" (FGAesQ), https://yzc-ippl.github.io/FG-IAA/. Official state dicts load through
`official.py` (strict) and `to_official_state_dict` writes ours in the release's format.

`config.single` / `config.series` say how images are tokenized for scoring and are saved with the
model: official checkpoints use "official"; recipes/fgaesq.py trains with "resize" / "project"
(at most 196 tokens instead of the release's 512 for every image: 122 vs 548 ms per 640x480
image for ViT-B/16 on CPU, eval/results/bench_fgaesq_cpu.md), so its checkpoints are scored as they were trained.

With ViT-B/16: 86.34M parameters (the paper: 86.3M).

Saved as `config.json` + `model.safetensors` (save_pretrained style); the text tower used by
CTAlign during training is not part of the scorer and is not saved.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from psdistill.baselines.fgaesq.difftoken import DiffTokenConfig, fit_long_edge, normalize, resize, to_tensor
from psdistill.baselines.fgaesq.losses import NUM_BINS, expected_score
from psdistill.baselines.fgaesq.official_tokens import MAX_SEQ_LEN
from psdistill.baselines.fgaesq.text import TextEncoder
from psdistill.core.errors import ConfigError, PsdistillError

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
TINY = "tiny"
FORMAT = "psdistill-fgaesq"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
HEAD_HIDDEN = (256, 64)  # the release's iqa_head widths
HEAD_DROPOUT = (0.2, 0.1)
NUM_SCALES = 2  # scale_embedding rows: coarse / single-scale, fine
# The published openai/clip-vit-base-patch16 architecture (random weights when built from it).
CLIP_VIT_B16_CONFIG = Path(__file__).resolve().parents[2] / "models" / "configs" / "clip_vit_b16.json"


@dataclass
class FGAesQModelConfig:
    vision_config: dict  # CLIPVisionConfig.to_dict()
    projection_dim: int
    num_bins: int = NUM_BINS
    head_input: Literal["projection", "pooled"] = "projection"
    image_mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    image_std: tuple[float, float, float] = OPENAI_CLIP_STD
    difftoken: DiffTokenConfig = field(default_factory=DiffTokenConfig)
    base: str = ""  # where the backbone came from (a hub id, a folder, "tiny"), for the record
    single: Literal["official", "resize"] = "resize"  # single-image tokenization for scoring
    series: Literal["official", "project"] = "project"  # series (DiffToken) tokenization for scoring
    max_seq_len: int = MAX_SEQ_LEN  # official tokens: CLS + max_seq_len - 1, always padded to that
    head_dropout: tuple[float, float] = HEAD_DROPOUT  # the release's; 0 makes training steps deterministic

    def __post_init__(self):
        if self.single not in ("official", "resize"):
            raise ConfigError(f"single: 'official' or 'resize', got {self.single!r}")
        if self.series not in ("official", "project"):
            raise ConfigError(f"series: 'official' or 'project', got {self.series!r}")
        if self.max_seq_len < 2:
            raise ConfigError(f"max_seq_len: must be >= 2, got {self.max_seq_len}")

    def to_json(self) -> dict:
        d = asdict(self)
        d["format"] = FORMAT
        return d

    @classmethod
    def from_json(cls, d: dict) -> "FGAesQModelConfig":
        d = dict(d)
        if d.pop("format", None) != FORMAT:
            raise PsdistillError(f"not an FGAesQ checkpoint config (expected format {FORMAT!r})")
        d["difftoken"] = DiffTokenConfig(**d.get("difftoken", {}))
        d["image_mean"], d["image_std"] = tuple(d["image_mean"]), tuple(d["image_std"])
        return cls(**d)


@dataclass
class FGAesQOutput:
    embeds: torch.Tensor  # [B, E] CLIP image embedding E_v (unnormalized)
    logits: torch.Tensor  # [B, num_bins]
    probs: torch.Tensor  # [B, num_bins]
    scores: torch.Tensor  # [B] expectation over 1..num_bins


class FGAesQModel(nn.Module):
    def __init__(self, config: FGAesQModelConfig, vision_model=None, visual_projection=None,
                 attn_implementation: Optional[str] = None):
        super().__init__()
        from transformers import CLIPVisionConfig, CLIPVisionModel

        self.config = config
        if vision_model is None:
            vc = CLIPVisionConfig.from_dict(config.vision_config)
            if attn_implementation:
                vc._attn_implementation = attn_implementation
            vision_model = CLIPVisionModel(vc)
        self.vision_model = vision_model
        hidden = self.vision_model.config.hidden_size
        self.visual_projection = visual_projection or nn.Linear(hidden, config.projection_dim, bias=False)
        head_in = config.projection_dim if config.head_input == "projection" else hidden
        # The release's parameters and their initialisation (FGAesQ.__init__).
        self.scale_embedding = nn.Parameter(torch.randn(1, NUM_SCALES, hidden) * 0.02)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, hidden))
        widths = (head_in, *HEAD_HIDDEN)
        layers: list[nn.Module] = []
        for a, b, p in zip(widths, widths[1:], config.head_dropout):
            layers += [nn.Linear(a, b), nn.ReLU(), nn.Dropout(p)]
        self.iqa_head = nn.Sequential(*layers, nn.Linear(widths[-1], config.num_bins))
        if config.single != "official" and config.series != "official":
            # The resize and project DiffToken paths read neither; frozen, DDP sees no trainable
            # parameter without a gradient (they keep the release's initial values).
            self.scale_embedding.requires_grad_(False)
            self.mask_token.requires_grad_(False)

    # -- geometry ------------------------------------------------------------------------------
    @property
    def image_size(self) -> int:
        return int(self.vision_model.config.image_size)

    @property
    def patch_size(self) -> int:
        return int(self.vision_model.config.patch_size)

    @property
    def device(self) -> torch.device:
        return self.mask_token.device

    @property
    def dtype(self) -> torch.dtype:
        """The backbone's dtype (what pixels are cast to)."""
        return self.vision_model.embeddings.patch_embedding.weight.dtype

    # -- forward -------------------------------------------------------------------------------
    def forward(self, pixel_values=None, patches=None, centres=None, token_mask=None, scale_ids=None,
                pos_grid=None, pos_cell=None, padding=None) -> FGAesQOutput:
        """One of: `pixel_values` ([B, 3, H, W], or a list of such batches of different shapes, whose
        outputs are concatenated in order) for the resize path; `patches`/`scale_ids`/`pos_grid`/
        `pos_cell`/`padding` (`official_tokens.collate`) for official tokens; `patches`/`centres`/
        `token_mask` (`difftoken.collate_tokens`) for the project's DiffToken tokens. One call per
        step keeps DistributedDataParallel to one forward per backward."""
        if pixel_values is not None:
            groups = pixel_values if isinstance(pixel_values, (list, tuple)) else [pixel_values]
            pooled = torch.cat([self.vision_model(pixel_values=g.to(self.dtype), interpolate_pos_encoding=True)
                                .pooler_output for g in groups], dim=0)
        elif padding is not None:
            pooled = self.encode_official(patches, scale_ids, pos_grid, pos_cell, padding)
        elif patches is not None:
            pooled = self.encode_tokens(patches, centres, token_mask)
        else:
            raise ValueError("FGAesQModel.forward: pass pixel_values, official tokens or DiffToken tokens")
        embeds = self.visual_projection(pooled)
        feats = embeds if self.config.head_input == "projection" else pooled
        with torch.autocast(feats.device.type, enabled=False):  # the head in float32: scores need resolution
            logits = feats.float()
            for layer in self.iqa_head:
                logits = F.linear(logits, layer.weight.float(), layer.bias.float()) \
                    if isinstance(layer, nn.Linear) else layer(logits)
        probs = logits.softmax(dim=-1)
        return FGAesQOutput(embeds=embeds, logits=logits, probs=probs, scores=expected_score(probs))

    def position_grid(self, rows: int, cols: int) -> torch.Tensor:
        """[rows * cols, D] patch position embeddings for a rows x cols grid, interpolated as the release
        does (data_utils.interpolate_positional_embedding): bicubic with scale factor (n + 0.1) / G."""
        pos = self.vision_model.embeddings.position_embedding.weight.float()
        root = math.sqrt(pos.shape[0] - 1)
        g = int(root)
        grid = pos[1:].reshape(1, g, g, -1).permute(0, 3, 1, 2)
        out = F.interpolate(grid, scale_factor=((rows + 0.1) / root, (cols + 0.1) / root),
                            mode="bicubic", align_corners=False)
        if tuple(out.shape[-2:]) != (rows, cols):
            raise ValueError(f"position_grid: interpolation gave {tuple(out.shape[-2:])}, not {(rows, cols)}")
        return out.permute(0, 2, 3, 1).reshape(rows * cols, -1)

    def encode_official(self, patches, scale_ids, pos_grid, pos_cell, padding) -> torch.Tensor:
        """Pooled (post-LN CLS) features of official tokens (FGAesQ.patches_to_tokens + extract_features):
        patches [B, L, 3, P, P], scale_ids/pos_cell [B, L], pos_grid [B, L, 2], padding [B, L] bool."""
        vm = self.vision_model
        emb = vm.embeddings
        b, n = padding.shape
        d = emb.embed_dim
        x = emb.patch_embedding(patches.reshape(b * n, *patches.shape[2:]).to(self.dtype)).reshape(b, n, d)
        x = torch.where(padding[..., None], self.mask_token.to(x.dtype), x)
        x = x + self.scale_embedding[0, scale_ids].to(x.dtype)
        pos = x.new_zeros(b, n, d)  # padding has no position
        real = ~padding
        for rows, cols in torch.unique(pos_grid[real], dim=0).tolist():
            sel = real & (pos_grid[..., 0] == rows) & (pos_grid[..., 1] == cols)
            pos[sel] = self.position_grid(rows, cols).to(x.dtype)[pos_cell[sel]]
        cls = (emb.class_embedding + emb.position_embedding.weight[0]).to(x.dtype).expand(b, 1, d)
        h = vm.pre_layrnorm(torch.cat([cls, x + pos], dim=1))
        h = vm.encoder(inputs_embeds=h).last_hidden_state
        return vm.post_layernorm(h[:, 0])

    def encode_tokens(self, patches: torch.Tensor, centres: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        """Pooled (post-LN CLS) features of padded token sets: patches [B, N, 3, P, P], centres [B, N, 2]
        as (y, x) fractions of the canvas, token_mask [B, N] (True = real token)."""
        vm = self.vision_model
        emb = vm.embeddings
        b, n = token_mask.shape
        d = emb.embed_dim
        # A P x P patch through the P-stride conv is exactly the ViT patch embedding: [B*N, D].
        x = emb.patch_embedding(patches.reshape(b * n, *patches.shape[2:]).to(emb.patch_embedding.weight.dtype))
        x = x.reshape(b, n, d)
        pos = emb.position_embedding.weight  # [1 + G*G, D]
        g = int(round((pos.shape[0] - 1) ** 0.5))
        grid = pos[1:].T.reshape(1, d, g, g)
        # Bilinear position embedding at each token centre: grid_sample with align_corners=False
        # maps a fraction f of the canvas to grid coordinate f*G - 0.5, i.e. the same values as
        # interpolating the G x G grid to the canvas's patch grid and reading the token's cell.
        xy = torch.stack([centres[..., 1], centres[..., 0]], dim=-1).to(grid.dtype) * 2 - 1
        sampled = F.grid_sample(grid, xy.reshape(1, b * n, 1, 2), mode="bilinear",
                                padding_mode="border", align_corners=False)  # [1, D, B*N, 1]
        x = x + sampled[0, :, :, 0].T.reshape(b, n, d)
        cls = (emb.class_embedding + pos[0]).to(x.dtype).expand(b, 1, d)
        h = vm.pre_layrnorm(torch.cat([cls, x], dim=1))
        keep = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=token_mask.device), token_mask.bool()], dim=1)
        # Additive key mask [B, 1, 1, 1+N]: padded tokens are never attended to.
        attn = torch.zeros(b, 1, 1, n + 1, dtype=h.dtype, device=h.device)
        attn = attn.masked_fill(~keep[:, None, None, :].to(h.device), torch.finfo(h.dtype).min)
        h = vm.encoder(inputs_embeds=h, attention_mask=attn).last_hidden_state
        return vm.post_layernorm(h[:, 0])

    # -- preprocessing -------------------------------------------------------------------------
    def single_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """Single-image path: longer edge = the ViT input size, aspect kept, sides multiples of the patch."""
        return fit_long_edge(size, self.image_size, self.patch_size)

    def preprocess(self, images: Sequence[Image.Image]) -> tuple[list[torch.Tensor], list[list[int]]]:
        """Group images of equal preprocessed shape: ([G_k, 3, H, W] batches, indices per batch)."""
        by_shape: dict[tuple[int, int], list[int]] = {}
        tensors = []
        for k, im in enumerate(images):
            size = self.single_size(im.size)
            tensors.append(normalize(to_tensor(resize(im, size)), self.config.image_mean, self.config.image_std))
            by_shape.setdefault(size, []).append(k)
        groups = list(by_shape.values())
        return [torch.stack([tensors[k] for k in idx]) for idx in groups], groups

    def official_batch(self, images: Sequence[Image.Image], seed: int = 0) -> dict[str, torch.Tensor]:
        """Official single-image tokens of `images` (`official_tokens.single_tokens`, each seeded by `seed`)."""
        from psdistill.baselines.fgaesq.official_tokens import collate, single_tokens

        c = self.config
        return collate([single_tokens(im, self.patch_size, c.image_mean, c.image_std, seed, c.max_seq_len)
                        for im in images], c.max_seq_len)

    # -- save / load ---------------------------------------------------------------------------
    def save_pretrained(self, path: str | Path) -> Path:
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(path / WEIGHTS_NAME), metadata={"format": "pt"})
        (path / CONFIG_NAME).write_text(json.dumps(self.config.to_json(), indent=2))
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path, attn_implementation: Optional[str] = None) -> "FGAesQModel":
        from safetensors.torch import load_file

        path = Path(path)
        if not (path / CONFIG_NAME).is_file() or not (path / WEIGHTS_NAME).is_file():
            raise PsdistillError(f"{path}: not an FGAesQ checkpoint (needs {CONFIG_NAME} and {WEIGHTS_NAME}; "
                                 "train one with recipes/fgaesq.py or load official weights with "
                                 "FGAesQScorer.from_official)")
        config = FGAesQModelConfig.from_json(json.loads((path / CONFIG_NAME).read_text()))
        model = cls(config, attn_implementation=attn_implementation)
        missing, unexpected = model.load_state_dict(load_file(str(path / WEIGHTS_NAME)), strict=False)
        if missing or unexpected:
            raise PsdistillError(f"{path / WEIGHTS_NAME}: weights do not match the config "
                                 f"(missing {missing[:10]}, unexpected {unexpected[:10]})")
        return model.eval()


# ---- building from a CLIP checkpoint ---------------------------------------------------------

def load_base(name_or_path: str, *, seed: int = 0, image_size: int = 64, with_text: bool = True,
              difftoken: Optional[DiffTokenConfig] = None, head_input: str = "projection",
              attn_implementation: Optional[str] = None,
              head_dropout: tuple[float, float] = HEAD_DROPOUT) -> tuple[FGAesQModel, Optional[TextEncoder]]:
    """FGAesQ initialised from CLIP: `name_or_path` is "tiny" (random tiny CLIP, tests and demo),
    a hub id or local folder of a CLIPModel (e.g. "openai/clip-vit-base-patch16"), or a CLIPConfig
    .json (random weights at that size, e.g. for speed and memory benchmarks)."""
    from transformers import CLIPConfig, CLIPModel

    tokenizer = None
    mean, std = OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
    if name_or_path == TINY:
        from psdistill.models.tiny import tiny_clip

        clip, processor = tiny_clip(seed=seed, image_size=image_size)
        tokenizer = processor.tokenizer
    elif name_or_path.endswith(".json") and Path(name_or_path).is_file():
        torch.manual_seed(seed)
        clip = CLIPModel(CLIPConfig.from_dict(json.loads(Path(name_or_path).read_text())))
    else:
        kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
        try:
            clip = CLIPModel.from_pretrained(name_or_path, **kwargs)
        except OSError as e:
            raise PsdistillError(f"model.name_or_path: cannot load CLIP {name_or_path!r}: {e}") from None
        if with_text:
            from transformers import AutoTokenizer

            try:
                tokenizer = AutoTokenizer.from_pretrained(name_or_path)
            except (OSError, ValueError) as e:
                raise PsdistillError(f"model.name_or_path: no tokenizer in {name_or_path!r} for CTAlign "
                                     f"(set loss.ctalign=false to train without it): {e}") from None
        mean, std = _processor_stats(name_or_path, mean, std)
    if attn_implementation:
        clip.vision_model.config._attn_implementation = attn_implementation
    config = FGAesQModelConfig(
        vision_config=clip.vision_model.config.to_dict(), projection_dim=clip.config.projection_dim,
        head_input=head_input, image_mean=tuple(mean), image_std=tuple(std),
        difftoken=difftoken or DiffTokenConfig(), base=name_or_path, head_dropout=tuple(head_dropout))
    model = FGAesQModel(config, vision_model=clip.vision_model, visual_projection=clip.visual_projection)
    text = None
    if with_text and tokenizer is not None:
        text = TextEncoder(clip.text_model, clip.text_projection, tokenizer,
                           max_length=int(clip.config.text_config.max_position_embeddings))
    return model, text


def _processor_stats(path: str, mean, std):
    """image_mean/std from a local preprocessor_config.json, else OpenAI CLIP's."""
    file = Path(path) / "preprocessor_config.json"
    if file.is_file():
        d = json.loads(file.read_text())
        return tuple(d.get("image_mean", mean)), tuple(d.get("image_std", std))
    if not Path(path).exists():  # a hub id: the cached processor config when present
        try:
            from huggingface_hub import hf_hub_download

            d = json.loads(Path(hf_hub_download(path, "preprocessor_config.json")).read_text())
            return tuple(d.get("image_mean", mean)), tuple(d.get("image_std", std))
        except Exception:  # offline without a cached copy: OpenAI CLIP's values
            pass
    return mean, std

