"""Classifier-free guidance (Ho & Salimans 2022): condition dropout for training and a
wrapper around the denoiser for sampling. Conditions are dicts of batched tensors."""

from __future__ import annotations

from collections.abc import Callable

import torch


def drop_cond(cond: dict[str, torch.Tensor], null: dict[str, torch.Tensor], p: float,
              generator: torch.Generator | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Replace each example's condition by `null` (batch-1 tensors) with probability `p`.
    Only the keys of `null` are touched. Returns the new condition and the (B,) drop mask."""
    b = next(iter(cond.values())).shape[0]
    dropped = (torch.rand(b, generator=generator) < p).to(next(iter(cond.values())).device)
    out = dict(cond)
    for k, v in null.items():
        mask = dropped.view(-1, *([1] * (cond[k].dim() - 1)))
        out[k] = torch.where(mask, v.to(cond[k].dtype).expand_as(cond[k]), cond[k])
    return out, dropped


def cfg(denoise: Callable, cond: dict[str, torch.Tensor], null: dict[str, torch.Tensor],
        scale: float) -> Callable:
    """A denoiser `f(x_t, t)` that runs the conditional and the null pass in one batched call
    and returns null + scale * (cond - null). scale 1 is the plain conditional model, in one
    pass; everything but the keys of `null` is shared by both passes."""
    if scale == 1.0:
        return lambda x, t: denoise(x, t, cond)
    both = {k: torch.cat([v, null[k].to(v.dtype).expand_as(v)]) if k in null else torch.cat([v, v])
            for k, v in cond.items()}

    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # x (B, ...), t (B,)
        out_cond, out_null = denoise(torch.cat([x, x]), torch.cat([t, t]), both).chunk(2)
        return out_null + scale * (out_cond - out_null)

    return guided
