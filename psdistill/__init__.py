"""psdistill: distill a VLM's pairwise aesthetic taste into a calibrated single-pass scorer.

    >>> import psdistill                                               # doctest: +SKIP
    >>> psdistill.load_scorer("runs/demo")(["a.jpg", "b.jpg"])         # doctest: +SKIP
    array([3.91, 2.47])
"""

__version__ = "0.1.0"
__all__ = ["__version__", "load_scorer", "list_scorers"]


def __getattr__(name):
    # Importing psdistill stays cheap (no torch): the registry loads when first asked for.
    if name in ("load_scorer", "list_scorers"):
        from psdistill.scoring import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'psdistill' has no attribute {name!r}")
