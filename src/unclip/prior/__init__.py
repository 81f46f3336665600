"""Priors: caption -> CLIP image embedding."""

from .ar_prior import ARPrior, ARPriorConfig
from .diffusion_prior import DiffusionPrior, PriorConfig
from .eclipse import EclipseConfig, EclipsePrior

__all__ = ["ARPrior", "ARPriorConfig", "DiffusionPrior", "EclipseConfig", "EclipsePrior", "PriorConfig"]
