"""Kandinsky 2.2's decoder stage as diffusers runs it (text to image, the inpaint decoder), and
what unclip adds to it (RePaint with the base decoder, DDIM inversion and decoding), as functions
of a KandinskyPipeline."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from unclip.diffusion.sampling import Generators, ddim_invert, sample
from unclip.pipelines.diffusers_order import randn, scheduler_loop

LEARNED = ("learned", "learned_range")
# The neighbours whose repaint a kept latent cell gives up in diffusers' `prepare_mask`.
SHRINK = ((1, 0), (0, 1), (1, 1), (-1, 0), (0, -1), (-1, -1))


def row(negative_prompt, i: int, n: int) -> str:
    """Image i's negative prompt (n images per prompt): one for all, or one per prompt."""
    return negative_prompt if isinstance(negative_prompt, str) else list(negative_prompt)[i // n]


def latent_size(pipe, height: int, width: int) -> tuple[int, int]:
    """diffusers' `downscale_height_and_width`: the latent side, rounded up to whole MoVQ cells."""
    f = pipe.movq_factor
    return -(-height // f ** 2) * f, -(-width // f ** 2) * f


def unet_out(pipe, x: torch.Tensor, t, emb: torch.Tensor, guided: bool, scale: float,
             extra: torch.Tensor | None = None) -> torch.Tensor:
    """The UNet's output as diffusers uses it: guided on the noise channels (the variance channels
    from the conditional rows), the variance dropped unless the scheduler learns it; float32."""
    inp = torch.cat([x, x]) if guided else x
    if extra is not None:
        inp = torch.cat([inp, extra], dim=1)
    dtype = pipe.unet.dtype
    out = pipe.unet(sample=inp.to(dtype), timestep=t, encoder_hidden_states=None,
                    added_cond_kwargs={"image_embeds": emb}, return_dict=False)[0].float()
    c = x.shape[1]
    if guided:
        eps, var = out.split(c, dim=1)
        uncond, text = eps.chunk(2)
        out = torch.cat([uncond + scale * (text - uncond), var.chunk(2)[1]], dim=1)
    if getattr(pipe.scheduler.config, "variance_type", None) not in LEARNED:
        out = out[:, :c]
    return out


def decode(pipe, z: torch.Tensor, neg: torch.Tensor, s: dict, *, generator: Generators = None,
           latents: torch.Tensor | None = None, inpaint: tuple | None = None) -> torch.Tensor:
    """The base decoder's latents (B, C, h, w) for image embeddings z (negatives `neg`)."""
    guided = s["guidance_scale"] > 1
    emb = pipe.with_null(z, neg, guided)
    sched = pipe.scheduler
    sched.set_timesteps(s["num_inference_steps"], device=pipe.device)
    h, w = latent_size(pipe, s["height"], s["width"])
    shape = (len(z), pipe.unet.config.in_channels, h, w)
    x = randn(shape, generator, pipe.device) if latents is None else latents.float().to(pipe.device)
    x = x * sched.init_noise_sigma
    return scheduler_loop(sched, x, lambda x, i, t: unet_out(pipe, x, t, emb, guided, s["guidance_scale"]),
                          generator, inpaint)


@torch.no_grad()
def to_pixels(pipe, latents: torch.Tensor) -> torch.Tensor:
    """MoVQ's decoding, unquantised as diffusers decodes: (B, 3, H, W) in [-1, 1] (unclamped); sliced
    or tiled after `enable_vae_slicing` / `enable_vae_tiling` (unclip.runtime.latent_decoding)."""
    from unclip.runtime.latent_decoding import decode, fast_layout

    def one(z):
        return pipe.movq.decode(fast_layout(z, pipe.movq.dtype), force_not_quantize=True).sample.float()

    return decode(pipe.movq, latents, one, pipe.movq_factor)


def _resized(image, width: int, height: int) -> torch.Tensor:
    """diffusers' image input: bicubic to (width, height), (1, 3, H, W) in [-1, 1]."""
    pil = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    pil = pil.resize((width, height), resample=Image.BICUBIC, reducing_gap=1)
    arr = np.array(pil.convert("RGB"))[None].transpose(0, 3, 1, 2)
    return torch.from_numpy(arr).float() / 127.5 - 1.0


def _keep_mask(mask_image, width: int, height: int) -> torch.Tensor:
    """diffusers' mask input: Lanczos to (width, height), white (>= 0.5) repaints; 1 = keep."""
    pil = mask_image if isinstance(mask_image, Image.Image) else Image.fromarray(np.asarray(mask_image))
    grey = np.array(pil.resize((width, height), resample=Image.LANCZOS).convert("L"))[None, None]
    repaint = grey.astype(np.float32) / 255.0 >= 0.5
    if repaint.all() or not repaint.any():
        raise ValueError("the mask must mark part of the image (white = repaint), not none or all of it")
    return torch.from_numpy(1.0 - repaint.astype(np.float32))


def shrink(keep: torch.Tensor) -> torch.Tensor:
    """diffusers' `prepare_mask`: a kept cell next to a repainted one (six of its neighbours)
    is repainted too."""
    out = keep.clone()
    padded = F.pad(keep, (1, 1, 1, 1), value=1.0)
    h, w = keep.shape[-2:]
    for di, dj in SHRINK:
        out = out * padded[..., 1 + di:1 + di + h, 1 + dj:1 + dj + w].eq(1).float()
    return out


def inpaint_decoder(pipe, image, mask_image, z: torch.Tensor, neg: torch.Tensor, s: dict, *,
                    generator: Generators = None) -> torch.Tensor:
    """`KandinskyV22InpaintPipeline`'s sampling: the 9-channel UNet sees the latent, the masked
    image's latent and the mask; after each step the kept latents are set to the image's,
    noised to the next step's level with the first draw's noise."""
    dev, dtype = pipe.device, pipe.unet.dtype
    guided = s["guidance_scale"] > 1
    emb = pipe.with_null(z, neg, guided)
    sched = pipe.scheduler
    sched.set_timesteps(s["num_inference_steps"], device=dev)
    known = pipe.encode_latents(_resized(image, s["width"], s["height"]).to(dev))
    keep = _keep_mask(mask_image, s["width"], s["height"]).to(dev)
    keep = shrink(F.interpolate(keep, tuple(known.shape[-2:]), mode="nearest"))
    b = len(z)
    extra = torch.cat([(known * keep).repeat_interleave(b, 0), keep.repeat_interleave(b, 0)], dim=1)
    extra = (extra.repeat(2, 1, 1, 1) if guided else extra).to(dtype)
    h, w = latent_size(pipe, s["height"], s["width"])
    x = randn((b, pipe.movq.config.latent_channels, h, w), generator, dev) * sched.init_noise_sigma
    noise, ts = x.clone(), sched.timesteps

    def replace(x, i):
        proper = known[:1]
        if i < len(ts) - 1:
            proper = sched.add_noise(proper, noise, torch.tensor([ts[i + 1]]))
        return keep[:1] * proper + (1 - keep[:1]) * x

    x = scheduler_loop(sched, x, lambda x, i, t: unet_out(pipe, x, t, emb, guided, s["guidance_scale"], extra),
                       generator, after_step=replace)
    return to_pixels(pipe, keep[:1] * known[:1] + (1 - keep[:1]) * x)


def repaint(pipe, image, mask_image, z: torch.Tensor, neg: torch.Tensor, s: dict, resample: int, *,
            generator: Generators = None) -> torch.Tensor:
    """RePaint with the base decoder in latent space: the kept latents replaced after every step
    (and `resample` jumps back), then the input's pixels set outside the mask at the output size."""
    from unclip.pipelines.inpaint import Region

    if s["height"] != s["width"]:
        raise ValueError("inpainting with the base decoder draws square images: give height == width")
    region = Region(image, mask_image, resample)
    known_px, keep_px, _ = region.at(s["height"], pipe.device)
    known = pipe.encode_latents(known_px)
    h, w = latent_size(pipe, s["height"], s["width"])
    keep = (F.interpolate(keep_px, (h, w), mode="area") > 0.999).float()  # a cell kept only if all of it is
    lat = decode(pipe, z, neg, s, generator=generator, inpaint=(known, keep, resample))
    return region.composite(to_pixels(pipe, lat).clamp(-1, 1))


def _denoiser(pipe, z: torch.Tensor, guidance_scale: float):
    """eps(x, t) of the decoder for DDIM, guided against the zero image when the scale is not 1."""
    guided = guidance_scale != 1.0
    emb = pipe.with_null(z.float(), pipe.zero_embed(len(z)), guided)
    c = pipe.unet.config.in_channels
    return lambda x, t: unet_out(pipe, x.float(), t[0], emb, guided, guidance_scale)[:, :c]


def invert(pipe, z: torch.Tensor, x0_latents: torch.Tensor, steps: int) -> torch.Tensor:
    """DDIM inversion of the unguided decoder: the latent x_T that DDIM at eta 0 decodes to x0."""
    return ddim_invert(_denoiser(pipe, z, 1.0), x0_latents, pipe.ddim, steps=steps)


def ddim_decode(pipe, z: torch.Tensor, x_T: torch.Tensor, steps: int, eta: float, guidance_scale: float,
                generator: Generators) -> torch.Tensor:
    """DDIM from (z, x_T) in latent space at `eta`."""
    return sample(_denoiser(pipe, z, guidance_scale), x_T.float(), pipe.ddim, steps=steps, eta=eta,
                  generator=generator)
