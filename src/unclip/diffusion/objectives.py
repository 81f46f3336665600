"""The diffusion training objectives: MSE for every stage of our own, and the hybrid loss of
models with a learned variance (Karlo's decoder)."""

from __future__ import annotations

import math
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


def _normal_kl(mean1, logvar1, mean2, logvar2):
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _discretized_gaussian_nll(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """-log p(x) of 8-bit pixels x in [-1, 1] under N(mean, exp(log_scale)^2) binned to 2/255."""
    cdf = lambda v: 0.5 * (1.0 + torch.erf(v / 2 ** 0.5))
    inv = torch.exp(-log_scale)
    plus, minus = cdf(inv * (x - mean + 1 / 255)), cdf(inv * (x - mean - 1 / 255))
    log_p = torch.where(x < -0.999, torch.log(plus.clamp(min=1e-12)),
                        torch.where(x > 0.999, torch.log((1 - minus).clamp(min=1e-12)),
                                    torch.log((plus - minus).clamp(min=1e-12))))
    return -log_p


def hybrid_loss(model_out: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Improved DDPM's hybrid objective (Nichol & Dhariwal 2021) for an epsilon model with a
    learned variance range, as GLIDE and Karlo's decoder were trained: MSE on epsilon plus the
    variational bound in bits per dimension, with the mean's gradient stopped in the bound so
    that it trains the variance alone. `model_out` (B, 2C, ...): epsilon, then v in [-1, 1]
    interpolating log variance between the posterior's (clipped) and beta_t."""
    c = x0.shape[1]
    eps, v = model_out[:, :c].float(), model_out[:, c:].float()
    abar_all = alphas_cumprod.to(x0.device, torch.float64)
    view = (-1, *([1] * (x0.dim() - 1)))
    abar = abar_all[t]
    abar_prev = torch.where(t > 0, abar_all[(t - 1).clamp(min=0)], torch.ones_like(abar))
    beta = 1 - abar / abar_prev
    post_var = beta * (1 - abar_prev) / (1 - abar)
    post_var_1 = (1 - abar_all[1] / abar_all[0]) * (1 - abar_all[0]) / (1 - abar_all[1])  # t = 0 has none: use t = 1's
    post_logvar = torch.log(torch.where(t > 0, post_var, post_var_1)).float().view(view)
    abar, abar_prev, beta = abar.float().view(view), abar_prev.float().view(view), beta.float().view(view)
    coef_x0 = beta * abar_prev.sqrt() / (1 - abar)
    coef_xt = (1 - abar_prev) * (1 - beta).sqrt() / (1 - abar)
    true_mean = coef_x0 * x0 + coef_xt * x_t
    x0_pred = (x_t - (1 - abar).sqrt() * eps.detach()) / abar.sqrt()
    model_mean = coef_x0 * x0_pred + coef_xt * x_t
    frac = (v + 1) / 2
    model_logvar = frac * torch.log(beta.clamp(min=1e-20)) + (1 - frac) * post_logvar
    kl = _normal_kl(true_mean, post_logvar, model_mean, model_logvar).flatten(1).mean(1) / math.log(2.0)
    nll = _discretized_gaussian_nll(x0, model_mean, 0.5 * model_logvar).flatten(1).mean(1) / math.log(2.0)
    vb = torch.where(t == 0, nll, kl)
    mse = F.mse_loss(eps, noise.float(), reduction="none").flatten(1).mean(1)
    return (mse + vb).mean()
