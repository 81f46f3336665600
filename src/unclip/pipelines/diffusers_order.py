"""Sampler loops as diffusers' pipelines run them (`UnCLIPPipeline`, the Kandinsky 2.2 prior and
decoder): float32 latents and steps, every random number drawn in diffusers' order. Kept beside
unclip's own samplers because equality with diffusers needs them; with RePaint's replacement
and jumps for inpainting. Shared by the families that load diffusers folders."""

from __future__ import annotations

import torch

from unclip.diffusion.sampling import Generators, jump_back, keep_known, stepping
from unclip.models.clip import warn_if_cut


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
    for i, t in enumerate(stepping(ts)):
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


def as_generator(generator: Generators):
    """What diffusers' functions take: one generator, or a list of them."""
    return list(generator) if isinstance(generator, (list, tuple)) else generator


@torch.no_grad()
def encode_prompt(tokenizer, text_encoder, prompts: list[str], device) -> dict:
    """text_embed (B, D) as projected (not normalised), text_encodings (B, L, W), mask (B, L):
    padded to the tokenizer's length, the text tower run without a mask, as diffusers' unCLIP
    and Kandinsky priors run it."""
    warn_if_cut(tokenizer, prompts, tokenizer.model_max_length)
    tok = tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt")
    out = text_encoder(tok.input_ids.to(device))
    return {"text_embed": out.text_embeds, "text_encodings": out.last_hidden_state,
            "mask": tok.attention_mask.bool().to(device)}


@torch.no_grad()
def prior_loop(net, scheduler, cond: dict, null: dict, *, guidance_scale: float, steps: int, guided: bool,
               generator: Generators, device, latents: torch.Tensor | None = None) -> torch.Tensor:
    """A PriorTransformer's image embeddings (B, D) as diffusers' priors sample them: with
    UnCLIPScheduler (unCLIP, Kandinsky) its steps take the previous timestep; with another
    scheduler (Stable unCLIP's text to image builds a DDPMScheduler from Karlo's config) the
    generic step after `scale_model_input`. Guidance on [null; cond] rows, `post_process_latents`
    in float32."""
    from diffusers import UnCLIPScheduler

    scheduler.set_timesteps(steps, device=device)
    b, d = cond["text_embed"].shape[0], net.config.embedding_dim
    x = randn((b, d), generator, device) if latents is None else latents.float().to(device)
    x = x * scheduler.init_noise_sigma
    both = with_null(cond, null, guided)
    dtype, ts = net.dtype, scheduler.timesteps
    unclip = isinstance(scheduler, UnCLIPScheduler)
    for i, t in enumerate(stepping(ts)):
        inp = torch.cat([x, x]) if guided else x
        inp = inp if unclip else scheduler.scale_model_input(inp, t)
        out = net(inp.to(dtype), timestep=t, proj_embedding=both["text_embed"].to(dtype),
                  encoder_hidden_states=both["text_encodings"].to(dtype),
                  attention_mask=both["mask"]).predicted_image_embedding
        if guided:
            uncond, text = out.float().chunk(2)
            out = uncond + guidance_scale * (text - uncond)
        if unclip:
            x = unclip_step(scheduler, out, t, x, ts[i + 1] if i + 1 < len(ts) else None, generator)
        else:
            x = scheduler.step(out.float(), t, x, **step_kwargs(scheduler, generator)).prev_sample
    return x * net.clip_std.float() + net.clip_mean.float()


def step_kwargs(scheduler, generator: Generators, eta: float = 0.0) -> dict:
    """diffusers' `prepare_extra_step_kwargs`: eta and the generator, where the scheduler takes them."""
    import inspect

    takes = inspect.signature(scheduler.step).parameters
    return {k: v for k, v in (("eta", eta), ("generator", as_generator(generator))) if k in takes}


def scheduler_loop(scheduler, x: torch.Tensor, model_out, generator: Generators, inpaint: tuple | None = None,
                   after_step=None) -> torch.Tensor:
    """The loop of diffusers' latent pipelines over `scheduler.timesteps` (DDPM, DDIM, ... in
    float32): `model_out(x, i, t)` then `scheduler.step`. `after_step(x, i)`: what a pipeline
    does to the latents after each step (the inpaint decoder's replacement). `inpaint` =
    (known, keep, resample): RePaint's replacement and jumps (diffusion.sampling.repaint)."""
    ts = scheduler.timesteps
    abar = scheduler.alphas_cumprod.to(x.device, torch.float32)
    gen = as_generator(generator)
    for i, t in enumerate(stepping(ts)):
        if inpaint is None:
            x = scheduler.step(model_out(x, i, t).float(), t, x, generator=gen).prev_sample
            x = x if after_step is None else after_step(x, i)
            continue
        known, keep, resample = inpaint
        prev_t = ts[i + 1] if i + 1 < len(ts) else None
        a_prev = abar[prev_t] if prev_t is not None else torch.ones((), device=x.device)
        for r in range(resample):
            stepped = scheduler.step(model_out(x, i, t).float(), t, x, generator=gen).prev_sample
            x_prev = keep_known(stepped, known, keep, a_prev, generator)
            x = jump_back(x_prev, abar[t] / a_prev, generator) if r + 1 < resample else x_prev
    return x
