"""FGAesQConfig: the baseline's settings, defaulting to the paper's (Sec. 5.1).

Groups:
- `data`: the pipeline's `DataConfig` (manifest or the demo, the category split) and the EMD target of a score;
- `model`: the CLIP backbone ("openai/clip-vit-base-patch16", a local folder, "tiny", or a CLIPConfig .json);
- `difftoken`: DiffToken (Sec. 4.1), saved with the checkpoint;
- `loss`: the ablation switches (Tab. 5) and lambda;
- `train`: optimisation (paper: lr 2e-5, batch 128 coarse / ~64 fine, 3 + 7 epochs, wd 5e-5,
  "momentum update coefficients 0.615 and 0.8", see `FGAesQTrainConfig`).

Values marked [our choice] are not given in the paper.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from psdistill.baselines.fgaesq.difftoken import DiffTokenConfig
from psdistill.baselines.fgaesq.model import HEAD_DROPOUT
from psdistill.core.errors import ConfigError
from psdistill.data.config import DataConfig


@dataclass
class FGAesQDataConfig(DataConfig):
    """The pipeline's data section (manifest or demo, image check, category split, scale) and how
    FGAesQ turns a score into its EMD target. Unlike the pipeline, `train_categories` is required:
    every other category is the test split."""

    target_sigma: float = field(default=1.0, metadata={
        "help": "[our choice] std (in bins) of the discretised Gaussian EMD target of a score without votes"})
    histogram_prefix: str = field(default="votes_", metadata={
        "help": "score columns <prefix>1..<prefix>10 are a vote histogram and become the EMD target as is"})
    image_cache: int = field(default=1024, metadata={"help": "decoded images kept in memory (LRU)"})

    def __post_init__(self):
        super().__post_init__()
        if len(self.dimensions) != 1:
            raise ConfigError(f"data.dimensions: FGAesQ trains one dimension (one EMD target), got {list(self.dimensions)}")
        if self.target_sigma <= 0:
            raise ConfigError(f"data.target_sigma: must be > 0, got {self.target_sigma}")


@dataclass
class FGAesQModelSection:
    name_or_path: str = field(default="openai/clip-vit-base-patch16", metadata={
        "help": "CLIP to start from: hub id, local folder, 'tiny' (random, tests/demo) or a CLIPConfig .json (random)"})
    seed: int = field(default=0, metadata={"help": "random weights of 'tiny' / a .json config"})
    tiny_image_size: int = field(default=64, metadata={"help": "input size of the 'tiny' CLIP"})
    head_input: Literal["projection", "pooled"] = "projection"
    attn_implementation: Optional[str] = None
    head_dropout: tuple[float, float] = field(default=HEAD_DROPOUT, metadata={
        "help": "dropout after the head's two hidden layers (the release's 0.2, 0.1)"})
    init_weights: Optional[str] = field(default=None, metadata={
        "help": "an official FGAesQ state dict (OpenAI-CLIP naming) to start from; loaded strictly"})


@dataclass
class FGAesQLossConfig:
    emd: bool = field(default=True, metadata={"help": "coarse batches with the EMD loss (False: 'w/o Coarse')"})
    emd_r: float = 2.0  # NIMA's r
    ctalign: bool = field(default=True, metadata={"help": "CTAlign (False: 'w/o CTAlign')"})
    ctalign_weight: float = 10.0  # lambda of eq. 6
    rank: Literal["rankreg", "direct", "none"] = field(default="rankreg", metadata={
        "help": "rankreg: BT pair probabilities + ListMLE (eq. 4-5); direct: ListMLE on the scores "
                "('w/o RankReg refers to direct ranking training'); none: no ranking loss"})

    def __post_init__(self):
        if self.emd_r <= 0:
            raise ConfigError(f"loss.emd_r: must be > 0, got {self.emd_r}")
        if self.ctalign_weight < 0:
            raise ConfigError(f"loss.ctalign_weight: must be >= 0, got {self.ctalign_weight}")


@dataclass
class FGAesQTrainConfig:
    """Optimisation. AdamW, constant lr [our choice: the paper names no schedule, "maintain a
    learning rate of 2e-5"], weight decay 5e-5 in both stages [the paper gives it for joint learning].

    "The momentum update coefficients are set to 0.615 and 0.8 respectively" (Sec. 5.1), right after
    the fine (~64) and coarse (128) batch sizes, and Sec. 4.4: "the optimization of FGAesQ proceeds
    through momentum-based updates, ensuring smooth optimization across different learning
    objectives". Our reading: one momentum coefficient per objective, Adam's beta1 = 0.615 for
    the fine-grained objective and 0.8 for the coarse one (coarse pre-training included); beta2
    stays 0.999. `momentum` says how the two objectives share the optimizer:
    - "per_objective" (default): two AdamW optimizers over the same weights, one per objective,
      each with its own moment estimates. The fine loss (lambda = 10 times a cosine term) has far
      larger gradients than the EMD; in one shared Adam its second moment would shrink every
      coarse step, and the coarse fit (what keeps coarse-grained SRCC, Tab. 3) would decay;
    - "shared": one AdamW whose beta1 is switched per step, one first-moment buffer carried across
      the alternating objectives.
    Rejected readings: Adam betas (0.615, 0.8) (beta2 = 0.8 averages the second moment over ~5
    steps, close to sign-SGD, implausible for ViT fine-tuning) and a weight EMA (0.615 and 0.8 are
    far below usual EMA decays, 0.99-0.9999, and would only rescale the learning rate).
    """

    lr: float = 2e-5
    weight_decay: float = 5e-5
    coarse_batch_size: int = 128
    fine_batch_images: int = field(default=64, metadata={
        "help": "series are packed into a fine batch until it holds at least this many images (paper: ~64)"})
    pretrain_epochs: int = 3  # coarse-only pre-training
    joint_epochs: int = field(default=7, metadata={
        "help": "alternating coarse/fine epochs; one epoch = one pass over the fine series [our choice], "
                "each fine batch preceded by one coarse batch (delta alternates, eq. 6)"})
    fine_momentum: float = 0.615
    coarse_momentum: float = 0.8
    adam_beta2: float = 0.999
    momentum: Literal["per_objective", "shared"] = "per_objective"
    max_grad_norm: Optional[float] = field(default=None, metadata={"help": "[our choice] no clipping by default"})
    max_steps: Optional[int] = field(default=None, metadata={"help": "stop after this many optimizer steps (quick runs)"})
    log_every: int = 10
    eval_batch_size: int = 32
    eval_difftoken: bool = field(default=True, metadata={
        "help": "also score each series image against the others through DiffToken (predictions/fgaesq-difftoken.csv)"})

    def __post_init__(self):
        for name in ("coarse_batch_size", "fine_batch_images", "eval_batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("pretrain_epochs", "joint_epochs"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name}: must be >= 0, got {getattr(self, name)}")
        for name in ("fine_momentum", "coarse_momentum", "adam_beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"train.{name}: must be in [0, 1), got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"train.lr: must be > 0, got {self.lr}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"train.max_steps: must be >= 1 or null, got {self.max_steps}")


@dataclass
class FGAesQConfig:
    run_dir: str = "runs/fgaesq"
    seed: int = 0
    overwrite: bool = field(default=False, metadata={
        "help": "retrain although <run_dir>/checkpoint holds a model trained with another config or data"})
    data: FGAesQDataConfig = field(default_factory=FGAesQDataConfig)
    model: FGAesQModelSection = field(default_factory=FGAesQModelSection)
    difftoken: DiffTokenConfig = field(default_factory=DiffTokenConfig)
    loss: FGAesQLossConfig = field(default_factory=FGAesQLossConfig)
    train: FGAesQTrainConfig = field(default_factory=FGAesQTrainConfig)
    compare_predictions: tuple[str, ...] = field(default=(), metadata={
        "help": "predictions CSVs of other scorers (e.g. <psdistill run>/predictions/student.csv) to put in "
                "the same evaluation table; named by file stem"})

    def __post_init__(self):
        if not (self.loss.emd or self.loss.ctalign or self.loss.rank != "none"):
            raise ConfigError("loss: every loss is switched off (loss.emd, loss.ctalign, loss.rank); nothing to train")
