"""Samplers: small pure functions of (denoise, x_T, scheduler)."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch


@torch.no_grad()
def sample(denoise: Callable, x_T: torch.Tensor, scheduler, *, steps: int, eta: float = 0.0,
           generator: torch.Generator | None = None, callback: Callable | None = None) -> torch.Tensor:
    """Ancestral sampling with any diffusers scheduler (DDPM, DDIM with `eta`, DPM-Solver++),
    respaced to `steps`. `denoise(x_t, t)`, t of shape (B,), returns the model output the scheduler expects;
    `callback` gets {"i", "t", "x", "pred_x0"} after each step."""
    scheduler.set_timesteps(steps, device=x_T.device)
    takes = inspect.signature(scheduler.step).parameters
    extra = {k: v for k, v in (("eta", eta), ("generator", generator)) if k in takes}
    x = x_T * scheduler.init_noise_sigma
    for i, t in enumerate(scheduler.timesteps):
        model_out = denoise(scheduler.scale_model_input(x, t), t.expand(x.shape[0]))  # t: (B,)
        out = scheduler.step(model_out, t, x, **extra)
        x = out.prev_sample
        if callback is not None:
            callback({"i": i, "t": t, "x": x, "pred_x0": getattr(out, "pred_original_sample", None)})
    return x
