"""Samplers: small pure functions of (denoise, x_T, scheduler)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from itertools import pairwise

import torch
from tqdm.auto import tqdm

Generators = torch.Generator | Sequence[torch.Generator] | None
STEP_BARS: ContextVar[bool] = ContextVar("unclip_step_bars", default=False)  # a bar per sampling loop (the web page sets it)


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


def stepping(timesteps):
    """`timesteps` to loop over; with a progress bar where STEP_BARS is set (the web app: gradio
    shows tqdm bars as the request's progress)."""
    return tqdm(timesteps, desc="sampling", leave=False, disable=not STEP_BARS.get())


def repeat_generators(generator: Generators, n: int) -> Generators:
    """Per-row generators for a batch whose rows were repeated n times each."""
    return [g for g in generator for _ in range(n)] if isinstance(generator, Sequence) else generator


STATELESS = ("ddpm", "ddim")  # samplers whose steps keep no state, so that a draw can jump back (RePaint)


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
    for i, t in enumerate(stepping(scheduler.timesteps)):
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


def sample_or_repaint(denoise: Callable, x_T: torch.Tensor, scheduler, *, inpaint: tuple | None = None,
                      **kw) -> torch.Tensor:
    """`sample`, or `repaint` when `inpaint` = (known, keep, resample) is given."""
    if inpaint is None:
        return sample(denoise, x_T, scheduler, **kw)
    known, keep, resample = inpaint
    return repaint(denoise, x_T, scheduler, known=known, keep=keep, resample=resample, **kw)


def keep_known(x: torch.Tensor, known: torch.Tensor, keep: torch.Tensor, abar: torch.Tensor,
               generator: Generators) -> torch.Tensor:
    """x with the pixels where `keep` is 1 replaced by `known` noised to level `abar` (RePaint)."""
    noise = randn(tuple(x.shape), generator, x.device)
    return keep * (abar.sqrt() * known + (1 - abar).sqrt() * noise) + (1 - keep) * x


def jump_back(x: torch.Tensor, ratio: torch.Tensor, generator: Generators) -> torch.Tensor:
    """A draw of q(x_t | x_s) for s < t, `ratio` = abar_t / abar_s: RePaint's resampling jump."""
    return ratio.sqrt() * x + (1 - ratio).sqrt() * randn(tuple(x.shape), generator, x.device)


@torch.no_grad()
def repaint(denoise: Callable, x_T: torch.Tensor, scheduler, *, steps: int, known: torch.Tensor,
            keep: torch.Tensor, eta: float = 0.0, generator: Generators = None, resample: int = 1) -> torch.Tensor:
    """Inpainting by RePaint (Lugmayr et al. 2022): `sample`, with the pixels where `keep` is 1
    replaced after every step by `known` noised to the step's level, so the network fills the
    rest in harmony with them. With `resample` R > 1 each step is taken R times, jumping back to
    its noise level in between (x_t drawn from q(x_t | x_{t-1})), which lets the two parts
    agree. `keep` (B or 1, 1, H, W) in {0, 1}; schedulers with state across steps (multistep
    solvers) cannot jump back: use DDPM or DDIM."""
    scheduler.set_timesteps(steps, device=x_T.device)
    takes = inspect.signature(scheduler.step).parameters
    gen = list(generator) if isinstance(generator, Sequence) else generator
    extra = {k: v for k, v in (("eta", eta), ("generator", gen)) if k in takes}
    abar = scheduler.alphas_cumprod.to(x_T.device, torch.float32)
    ts = [int(t) for t in scheduler.timesteps]
    x = x_T * scheduler.init_noise_sigma
    for i, t in enumerate(stepping(ts)):
        a_prev = abar[ts[i + 1]] if i + 1 < len(ts) else torch.ones((), device=x.device)
        for r in range(resample):
            t_b = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
            x_prev = scheduler.step(denoise(scheduler.scale_model_input(x, t), t_b), t, x, **extra).prev_sample
            x_prev = keep_known(x_prev, known, keep, a_prev, generator)
            x = jump_back(x_prev, abar[t] / a_prev, generator) if r + 1 < resample else x_prev
    return x
