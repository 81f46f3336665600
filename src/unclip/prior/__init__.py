"""Priors: caption -> CLIP image embedding."""

from .diffusion_prior import DiffusionPrior, PriorConfig

__all__ = ["DiffusionPrior", "PriorConfig"]
