"""Priors: caption -> CLIP image embedding."""

from .ar_prior import ARPrior, ARPriorConfig
from .diffusion_prior import DiffusionPrior, PriorConfig

__all__ = ["ARPrior", "ARPriorConfig", "DiffusionPrior", "PriorConfig"]
