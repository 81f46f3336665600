"""Karlo's sampling loops as diffusers' `UnCLIPPipeline` runs them (float32 latents and steps,
its noise in its order), kept beside unclip's own samplers because equality needs them; with
RePaint's replacement and jumps for inpainting."""

from __future__ import annotations

import torch

from unclip.diffusion.sampling import Generators, jump_back, keep_known


def randn(shape, generator: Generators, device) -> torch.Tensor:
    """diffusers' `randn_tensor` in float32: one generator for the batch, or one per row."""
    from diffusers.utils.torch_utils import randn_tensor

    gen = list(generator) if isinstance(generator, (list, tuple)) else generator
    return randn_tensor(shape, generator=gen, device=torch.device(device), dtype=torch.float32)


def unclip_step(scheduler, model_out: torch.Tensor, t, x: torch.Tensor, prev_t, generator: Generators):
    """One UnCLIPScheduler step in float32 (its noise is then drawn in float32 too)."""
    gen = list(generator) if isinstance(generator, (list, tuple)) else generator
    return scheduler.step(model_out.float(), t, x, prev_timestep=prev_t, generator=gen).prev_sample


def unclip_loop(scheduler, x: torch.Tensor, model_out, generator: Generators, inpaint: tuple | None = None):
    """Karlo's ancestral loop over `scheduler.timesteps`: `model_out(x, i, t)` then a step. With
    `inpaint` = (known, keep, resample), RePaint's replacement and jumps (diffusion.sampling.repaint)."""
    ts = scheduler.timesteps
    abar = scheduler.alphas_cumprod.to(x.device, torch.float32)
    for i, t in enumerate(ts):
        prev_t = ts[i + 1] if i + 1 < len(ts) else None
        if inpaint is None:
            x = unclip_step(scheduler, model_out(x, i, t), t, x, prev_t, generator)
            continue
        known, keep, resample = inpaint
        a_prev = abar[prev_t] if prev_t is not None else torch.ones((), device=x.device)
        for r in range(resample):
            x_prev = keep_known(unclip_step(scheduler, model_out(x, i, t), t, x, prev_t, generator), known, keep, a_prev,
                                generator)
            x = jump_back(x_prev, abar[t] / a_prev, generator) if r + 1 < resample else x_prev
    return x


def repeat_rows(cond: dict, n: int) -> dict:
    """Each row n times in a row, as diffusers repeats a prompt's condition."""
    return {k: v.repeat_interleave(n, dim=0) for k, v in cond.items()} if n > 1 else cond


def with_null(cond: dict, null: dict, guided: bool) -> dict:
    """Rows [null; cond] as diffusers batches them, or cond alone; `null` has one row or as many as cond."""
    if not guided:
        return cond
    b = cond["text_embed"].shape[0]
    return {k: torch.cat([null[k].expand(b, *null[k].shape[1:]), v]) for k, v in cond.items()}
