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
                  prediction_type: str, snr_gamma: float | None = None,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """MSE between `denoise(x_t, t)` and its target at a uniformly drawn timestep.

    x0: clean data (B, ...). prediction_type "sample" regresses x0 (the unCLIP prior),
    "epsilon" the noise, "v_prediction" v = sqrt(abar) noise - sqrt(1 - abar) x0.
    snr_gamma: Min-SNR-gamma weighting (Hang et al. 2023): each sample's loss is reweighted so
    that, in x0 terms, its weight is min(SNR, gamma). It stops the nearly clean timesteps (fine
    texture) from dominating and speeds up learning the layout and outlines."""
    b = x0.shape[0]
    t = torch.randint(0, len(alphas_cumprod), (b,), generator=generator).to(x0.device)
    noise = torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype)
    x_t = q_sample(x0, t, noise, alphas_cumprod)
    pred = denoise(x_t, t)
    abar = alphas_cumprod.to(x0.device, torch.float64)[t].float()
    if prediction_type == "sample":
        target, x0_weight = x0, torch.ones_like(abar)
    elif prediction_type == "epsilon":
        target, x0_weight = noise, abar / (1 - abar)  # = SNR
    elif prediction_type == "v_prediction":
        a = abar.view(-1, *([1] * (x0.dim() - 1)))
        target, x0_weight = a.sqrt() * noise - (1 - a).sqrt() * x0, 1 / (1 - abar)  # = SNR + 1
    else:
        raise ValueError(f"unknown prediction_type {prediction_type!r}; use sample, epsilon or v_prediction")
    per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").flatten(1).mean(1)
    if snr_gamma is None:
        return per_sample.mean()
    snr = abar / (1 - abar)
    return (per_sample * snr.clamp(max=snr_gamma) / x0_weight).mean()
