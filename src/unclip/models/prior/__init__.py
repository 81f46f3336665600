"""Priors: caption -> CLIP image embedding."""

from unclip.models.prior.ar_prior import ARPrior, ARPriorConfig
from unclip.models.prior.diffusion_prior import DiffusionPrior, PriorConfig
from unclip.models.prior.eclipse import EclipseConfig, EclipsePrior

__all__ = ["ARPrior", "ARPriorConfig", "DiffusionPrior", "EclipseConfig", "EclipsePrior", "PriorConfig"]
