"""FGAesQ as a baseline: Yang et al., "Fine-grained Image Aesthetic Assessment: Learning Discriminative
Scores from Relative Ranks" (https://yzc-ippl.github.io/FG-IAA/).

    model.py      CLIP ViT-B/16 vision tower + the release's MLP head, official/resize/DiffToken paths, save/load
    text.py       CLIP's frozen text tower (CTAlign's text embeddings, training only)
    official_tokens.py  the release's tokenization (single images, series pairs), seeded
    difftoken.py  Difference-preserved Tokenization (Sec. 4.1) as the project reads the paper
    losses.py     EMD, CTAlign, RankReg (Sec. 4.2-4.4)
    official.py   the release's state dicts <-> this model, strictly, with a key report
    config.py     FGAesQConfig (paper defaults) ; data.py batches ; scorer.py FGAesQScorer ("fgaesq" in the registry)
    train.py      the training loop (`train_fgaesq`: records, config, accelerator, output folder)
    predict.py    a checkpoint's predictions files of a data set

The run (data, train, score, evaluate stages; recipes/fgaesq.py) is `psdistill.pipeline.fgaesq.run_fgaesq`.
Imports are lazy: `import psdistill.baselines.fgaesq` loads no torch model code.
"""
__all__ = ["FGAesQConfig", "FGAesQModel", "FGAesQScorer", "DiffTokenConfig", "load_base"]


def __getattr__(name):
    if name == "FGAesQConfig":
        from psdistill.baselines.fgaesq.config import FGAesQConfig
        return FGAesQConfig
    if name in ("FGAesQModel", "load_base"):
        from psdistill.baselines.fgaesq import model
        return getattr(model, name)
    if name == "FGAesQScorer":
        from psdistill.baselines.fgaesq.scorer import FGAesQScorer
        return FGAesQScorer
    if name == "DiffTokenConfig":
        from psdistill.baselines.fgaesq.difftoken import DiffTokenConfig
        return DiffTokenConfig
    raise AttributeError(name)
