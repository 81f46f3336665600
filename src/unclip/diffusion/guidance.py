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


def composed(denoise: Callable, conds: list[dict[str, torch.Tensor]], null: dict[str, torch.Tensor],
             scales: list[float]) -> Callable:
    """Composable guidance (Liu et al. 2022, "Compositional Visual Generation with Composable
    Diffusion Models"): null + sum_i scale_i * (cond_i - null), every condition and the null pass
    in one batched call. Each condition is a full condition dict of the same batch size."""
    if len(conds) != len(scales) or not conds:
        raise ValueError("one scale per condition, at least one condition")
    keys = conds[0].keys()
    rows = [*conds, {k: null[k].to(conds[0][k].dtype).expand_as(conds[0][k]) if k in null else conds[0][k]
                     for k in keys}]
    batched = {k: torch.cat([c[k] for c in rows]) for k in keys}
    n = len(rows)

    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        outs = denoise(torch.cat([x] * n), torch.cat([t] * n), batched).chunk(n)
        base = outs[-1]
        return base + sum(w * (o - base) for w, o in zip(scales, outs[:-1]))

    return guided
