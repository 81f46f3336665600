"""Samplers: small pure functions of (denoise, x_T, scheduler)."""

from __future__ import annotations

import inspect
from itertools import pairwise
from collections.abc import Callable, Sequence

import torch

Generators = torch.Generator | Sequence[torch.Generator] | None


def randn(shape: tuple[int, ...], generator: Generators = None, device=None) -> torch.Tensor:
    """Standard normal noise. With a list of generators (one per batch row) each row comes
    from its own, so an image depends on its seed alone, not on the batch it is drawn in."""
    return _per_row(torch.randn, shape, generator, device)


def rand(shape: tuple[int, ...], generator: Generators = None, device=None) -> torch.Tensor:
    """Uniform [0, 1) draws, per row as `randn`."""
    return _per_row(torch.rand, shape, generator, device)


def _per_row(fn, shape, generator: Generators, device) -> torch.Tensor:
    if isinstance(generator, Sequence):
        if len(generator) != shape[0]:
            raise ValueError(f"{len(generator)} generators for a batch of {shape[0]}")
        return torch.cat([fn((1, *shape[1:]), generator=g) for g in generator]).to(device)
    return fn(shape, generator=generator).to(device)


def repeat_generators(generator: Generators, n: int) -> Generators:
    """Per-row generators for a batch whose rows were repeated n times each."""
    return [g for g in generator for _ in range(n)] if isinstance(generator, Sequence) else generator


@torch.no_grad()
def sample(denoise: Callable, x_T: torch.Tensor, scheduler, *, steps: int, eta: float = 0.0,
           generator: Generators = None, callback: Callable | None = None) -> torch.Tensor:
    """Ancestral sampling with any diffusers scheduler (DDPM, DDIM with `eta`, DPM-Solver++),
    respaced to `steps`. `denoise(x_t, t)`, t of shape (B,), returns the model output the scheduler expects;
    `callback` gets {"i", "t", "x", "pred_x0"} after each step."""
    scheduler.set_timesteps(steps, device=x_T.device)
    takes = inspect.signature(scheduler.step).parameters
    gen = list(generator) if isinstance(generator, Sequence) else generator  # diffusers wants a list
    extra = {k: v for k, v in (("eta", eta), ("generator", gen)) if k in takes}
    x = x_T * scheduler.init_noise_sigma
    for i, t in enumerate(scheduler.timesteps):
        model_out = denoise(scheduler.scale_model_input(x, t), t.expand(x.shape[0]))  # t: (B,)
        out = scheduler.step(model_out, t, x, **extra)
        x = out.prev_sample
        if callback is not None:
            callback({"i": i, "t": t, "x": x, "pred_x0": getattr(out, "pred_original_sample", None)})
    return x


def split_prediction(model_out: torch.Tensor, x_t: torch.Tensor, abar: torch.Tensor, prediction_type: str):
    """(x0, eps) from a model output at noise level abar (a float tensor, broadcastable)."""
    a, s = abar.sqrt(), (1 - abar).sqrt()
    if prediction_type == "epsilon":
        return (x_t - s * model_out) / a, model_out
    if prediction_type == "v_prediction":
        return a * x_t - s * model_out, a * model_out + s * x_t
    if prediction_type == "sample":
        return model_out, (x_t - a * model_out) / s
    raise ValueError(f"unknown prediction_type {prediction_type!r}")


@torch.no_grad()
def ddim_invert(denoise: Callable, x0: torch.Tensor, scheduler, *, steps: int) -> torch.Tensor:
    """DDIM inversion (Song et al. 2021; unCLIP Sec. 3): the deterministic DDIM sampler run
    backwards, from a clean image to the noise x_T from which DDIM at eta 0 with the same
    `steps` draws it again. It visits the sampler's noise levels in reverse, from the one its
    last step lands on (t = 0) up to its first timestep."""
    scheduler.set_timesteps(steps, device=x0.device)
    levels = [0] + sorted(int(t) for t in scheduler.timesteps)
    abar = scheduler.alphas_cumprod.to(x0.device, torch.float32)
    x = x0
    for t, t_next in pairwise(levels):
        out = denoise(x, torch.full((x.shape[0],), t, device=x.device, dtype=torch.long))
        pred_x0, eps = split_prediction(out.float(), x, abar[t], scheduler.config.prediction_type)
        x = abar[t_next].sqrt() * pred_x0 + (1 - abar[t_next]).sqrt() * eps
    return x
