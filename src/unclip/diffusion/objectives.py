"""The one diffusion training objective, for every stage."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def q_sample(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, alphas_cumprod: torch.Tensor):
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise (Ho et al. 2020, eq. 4)."""
    abar = alphas_cumprod.to(x0.device, torch.float64)[t].float()
    abar = abar.view(-1, *([1] * (x0.dim() - 1)))
    return abar.sqrt() * x0 + (1 - abar).sqrt() * noise


def training_loss(denoise: Callable, x0: torch.Tensor, alphas_cumprod: torch.Tensor, *,
                  prediction_type: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """MSE between `denoise(x_t, t)` and its target at a uniformly drawn timestep.

    x0: clean data (B, ...). prediction_type "sample" regresses x0 (the unCLIP prior),
    "epsilon" the noise, "v_prediction" v = sqrt(abar) noise - sqrt(1 - abar) x0."""
    b = x0.shape[0]
    t = torch.randint(0, len(alphas_cumprod), (b,), generator=generator).to(x0.device)
    noise = torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype)
    x_t = q_sample(x0, t, noise, alphas_cumprod)
    pred = denoise(x_t, t)
    if prediction_type == "sample":
        target = x0
    elif prediction_type == "epsilon":
        target = noise
    elif prediction_type == "v_prediction":
        abar = alphas_cumprod.to(x0.device, torch.float64)[t].float().view(-1, *([1] * (x0.dim() - 1)))
        target = abar.sqrt() * noise - (1 - abar).sqrt() * x0
    else:
        raise ValueError(f"unknown prediction_type {prediction_type!r}; use sample, epsilon or v_prediction")
    return F.mse_loss(pred.float(), target.float())
