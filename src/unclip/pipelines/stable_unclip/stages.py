"""Stable unCLIP's stages as diffusers runs them (the caption's encoding, the noise augmentation of
the image embedding, the latent loop, VAE decoding), and what unclip adds (RePaint in latent
space, DDIM inversion and decoding), as functions of a StableUnclipPipeline."""

from __future__ import annotations

import torch

from unclip.diffusion.sampling import Generators, ddim_invert, sample, stepping
from unclip.pipelines.diffusers_order import randn, scheduler_loop, step_kwargs
from unclip.runtime.latent_decoding import fast_layout


@torch.no_grad()
def encode_text(pipe, prompts: list[str]) -> torch.Tensor:
    """Stable Diffusion's caption states (B, L, W): the last hidden state of its text tower,
    with the attention mask only where the tower's config asks for one."""
    tok = pipe.tokenizer(list(prompts), padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt")
    mask = tok.attention_mask.to(pipe.device) if getattr(pipe.text_encoder.config, "use_attention_mask", False) \
        else None
    return pipe.text_encoder(tok.input_ids.to(pipe.device), attention_mask=mask)[0].float()


def noise_embeds(pipe, z: torch.Tensor, noise_level: int, generator: Generators = None,
                 noise: torch.Tensor | None = None) -> torch.Tensor:
    """diffusers' `noise_image_embeddings`: the normalised embedding noised to `noise_level` by
    the image noising scheduler, unnormalised, with the level's sinusoidal embedding appended:
    (B, 2D), the UNet's class input."""
    from diffusers.models.embeddings import get_timestep_embedding

    z = z.float()
    if noise is None:
        noise = randn(tuple(z.shape), generator, z.device)
    norm = pipe.image_normalizer
    mean, std = norm.mean.float().to(z.device), norm.std.float().to(z.device)
    levels = torch.tensor([noise_level] * z.shape[0], device=z.device)
    noised = pipe.image_noising_scheduler.add_noise((z - mean) / std, noise, levels) * std + mean
    level = get_timestep_embedding(levels, z.shape[-1], flip_sin_to_cos=True, downscale_freq_shift=0)
    return torch.cat([noised, level.float()], dim=1)


def unet_eps(pipe, x: torch.Tensor, t, text: torch.Tensor, cond: torch.Tensor, guided: bool,
             scale: float) -> torch.Tensor:
    """The UNet's output, guided against [the empty caption; an all-zero class input] rows."""
    inp = torch.cat([x, x]) if guided else x
    inp = pipe.scheduler.scale_model_input(inp, t)
    dtype = pipe.unet.dtype
    out = pipe.unet(inp.to(dtype), t, encoder_hidden_states=text.to(dtype), class_labels=cond.to(dtype),
                    return_dict=False)[0].float()
    if guided:
        uncond, text_out = out.chunk(2)
        out = uncond + scale * (text_out - uncond)
    return out


def conditions(pipe, prompts: list[str], cond: torch.Tensor, guided: bool, negative_prompt=None):
    """(caption states, class inputs), with the unconditional rows first when guided."""
    text = encode_text(pipe, prompts)
    if not guided:
        return text, cond
    negatives = [""] * len(prompts) if negative_prompt is None else (
        [negative_prompt] * len(prompts) if isinstance(negative_prompt, str) else list(negative_prompt))
    return torch.cat([encode_text(pipe, negatives), text]), torch.cat([torch.zeros_like(cond), cond])


def latent_loop(pipe, text: torch.Tensor, cond: torch.Tensor, s: dict, *, generator: Generators = None,
                latents: torch.Tensor | None = None, inpaint: tuple | None = None) -> torch.Tensor:
    """Stable Diffusion's latent loop: latents (B, C, H/f, W/f) drawn after the conditions, the
    scheduler's own step (eta and generator where it takes them)."""
    guided = s["guidance_scale"] > 1
    b = len(cond) // 2 if guided else len(cond)
    sched = pipe.scheduler
    sched.set_timesteps(s["num_inference_steps"], device=pipe.device)
    f = pipe.vae_factor
    shape = (b, pipe.unet.config.in_channels, int(s["height"]) // f, int(s["width"]) // f)
    x = randn(shape, generator, pipe.device) if latents is None else latents.float().to(pipe.device)
    x = x * sched.init_noise_sigma

    def out(x, i, t):
        return unet_eps(pipe, x, t, text, cond, guided, s["guidance_scale"])

    if inpaint is not None:
        return scheduler_loop(sched, x, out, generator, inpaint)
    kw = step_kwargs(sched, generator, s.get("eta", 0.0))
    for i, t in enumerate(stepping(sched.timesteps)):
        x = sched.step(out(x, i, t), t, x, **kw, return_dict=False)[0]
    return x


@torch.no_grad()
def to_pixels(pipe, latents: torch.Tensor) -> torch.Tensor:
    """VAE decoding: (B, 3, H, W) in [-1, 1] (unclamped); channels-last on the CPU below float32
    (unclip.runtime.latent_decoding.fast_layout)."""
    z = fast_layout(latents.to(pipe.vae.dtype) / pipe.vae.config.scaling_factor, pipe.vae.dtype)
    return pipe.vae.decode(z, return_dict=False)[0].float()


@torch.no_grad()
def to_latents(pipe, pixels: torch.Tensor) -> torch.Tensor:
    """The VAE posterior's mean, scaled: deterministic latents of pixels in [-1, 1]."""
    dist = pipe.vae.encode(pixels.to(pipe.device, pipe.vae.dtype)).latent_dist
    return dist.mean.float() * pipe.vae.config.scaling_factor


def _denoiser(pipe, z: torch.Tensor, guidance_scale: float, caption: str | None):
    """The UNet's prediction for DDIM, the image embedding noised to level 0 without noise."""
    guided = guidance_scale != 1.0
    cond = noise_embeds(pipe, z, 0, noise=torch.zeros_like(z.float()))
    text, cond = conditions(pipe, [caption or ""] * len(z), cond, guided)
    return lambda x, t: unet_eps(pipe, x.float(), t[0], text, cond, guided, guidance_scale)


def invert(pipe, z: torch.Tensor, latents: torch.Tensor, steps: int, caption: str | None = None) -> torch.Tensor:
    return ddim_invert(_denoiser(pipe, z, 1.0, caption), latents, pipe.ddim, steps=steps)


def ddim_decode(pipe, z: torch.Tensor, x_T: torch.Tensor, steps: int, eta: float, guidance_scale: float,
                generator: Generators, caption: str | None = None) -> torch.Tensor:
    return sample(_denoiser(pipe, z, guidance_scale, caption), x_T.float(), pipe.ddim, steps=steps, eta=eta,
                  generator=generator)
