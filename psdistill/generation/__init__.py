"""Fine-tuning an image generator on a psdistill scorer's reward (DRaFT-K / AlignProp): needs the
`generate` extra (diffusers), imported on first use."""
from psdistill.generation.config import RewardFinetuneConfig
from psdistill.generation.draft import finetune, load_finetuned

__all__ = ["RewardFinetuneConfig", "finetune", "load_finetuned"]
