"""psdistill: distill a VLM's pairwise aesthetic taste into a calibrated single-pass scorer.

    >>> import psdistill                                               # doctest: +SKIP
    >>> psdistill.load_scorer("runs/demo")(["a.jpg", "b.jpg"])         # doctest: +SKIP
    array([3.91, 2.47])
"""

__version__ = "0.1.0"
__all__ = ["__version__", "load_scorer", "list_scorers", "load_reward"]


def __getattr__(name):
    # Importing psdistill stays cheap (no torch): the registry loads when first asked for.
    if name in ("load_scorer", "list_scorers"):
        from psdistill.scoring import registry

        return getattr(registry, name)
    if name == "load_reward":
        from psdistill.scoring.reward import load_reward

        return load_reward
    raise AttributeError(f"module 'psdistill' has no attribute {name!r}")
