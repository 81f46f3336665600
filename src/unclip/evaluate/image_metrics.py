"""Pixel-level image metrics."""

from __future__ import annotations

import torch


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean PSNR in dB of image batches (B, 3, H, W) in [-1, 1] (peak-to-peak 2)."""
    mse = (a.float() - b.float()).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return (10 * torch.log10(4 / mse)).mean().item()
