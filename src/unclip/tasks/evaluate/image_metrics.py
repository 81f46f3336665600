"""Pixel-level image metrics."""

from __future__ import annotations

import torch


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean PSNR in dB of image batches (B, 3, H, W) in [-1, 1] (peak-to-peak 2)."""
    mse = (a.float() - b.float()).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return (10 * torch.log10(4 / mse)).mean().item()


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean SSIM (Wang et al. 2004: 11 x 11 Gaussian window, sigma 1.5) of image batches
    (B, 3, H, W) in [-1, 1], per channel, averaged over pixels, channels and images."""
    from unclip.data.degrade import blur, gaussian_kernel

    a, b = (a.float() + 1) / 2, (b.float() + 1) / 2
    window = gaussian_kernel(11, 1.5)
    mu_a, mu_b = blur(a, window), blur(b, window)
    var_a, var_b = blur(a * a, window) - mu_a**2, blur(b * b, window) - mu_b**2
    cov = blur(a * b, window) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    ssim_map = (2 * mu_a * mu_b + c1) * (2 * cov + c2) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return ssim_map.mean().item()
