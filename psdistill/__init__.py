"""psdistill: distill a VLM's pairwise aesthetic taste into a calibrated single-pass scorer."""

__version__ = "0.1.0"
