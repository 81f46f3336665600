"""Image manipulations through the bipartite latent (z_i, x_T) (unCLIP Sec. 3).

An image is represented by its CLIP image embedding z_i and the decoder noise x_T that DDIM
inversion finds for it. Decoding (z_i, x_T) with DDIM at eta 0 reconstructs the image;
with eta > 0 it gives variations; moving z_i along a slerp path towards another image's
embedding (interpolation) or towards a text direction (text diffs) edits it.

Images come in as uint8 arrays (H, W, 3) of any size, out as uint8 at the final resolution.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from unclip import validate
from unclip.data.transforms import to_uint8
from unclip.tasks.evaluate.image_metrics import psnr

INVERSION_STEPS = 50

# A pipeline here is one whose capabilities include inversion and image embeddings
# (unclip.pipelines.base): it has `embed_images`, `embed_captions`, `decoder_input`, `invert_decoder`,
# `decode_latents`, `upsample` and `default_decoder_guidance`.
# Embeddings keep the pipeline's own scale: unit length for unclip's models, CLIP's projected
# length for Karlo's, so the paths below move directions and carry the norms along.


def check_pipeline(pipe, what: str) -> None:
    """Refuse a pipeline that cannot do the manipulations, with the reason."""
    caps = pipe.capabilities
    if not caps.inversion:
        raise ValueError(f"{what} works on CLIP image embeddings and decoder inversion, which this {pipe.title} "
                         "does not have; use an unCLIP model (unclip's own or Karlo's)")


def check_settings(*, steps: int | None = None, seed: int | None = None, num: int | None = None,
                   eta: float | None = None, frames: int | None = None, max_theta: float | None = None) -> None:
    """The settings of a manipulation (None: not used by it), before any work is done."""
    if steps is not None:
        validate.count("steps", steps, high=validate.MAX_STEPS)
    if seed is not None:
        validate.seed(seed)
    if num is not None:
        validate.count("num_images", num)
    if eta is not None:
        validate.number("eta", eta, low=0.0, high=1.0)
    if frames is not None:
        validate.count("frames", frames, low=2)
    if max_theta is not None:
        validate.number("max_theta", max_theta, low=0.0, high=1.0)


def slerp(a: torch.Tensor, b: torch.Tensor, theta: float) -> torch.Tensor:
    """Spherical interpolation between rows of a and b, theta in [0, 1]; linear when parallel."""
    a_n, b_n = F.normalize(a.float(), dim=-1), F.normalize(b.float(), dim=-1)
    omega = torch.arccos((a_n * b_n).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    if (so.abs() < 1e-6).any():
        return (1 - theta) * a + theta * b
    return (torch.sin((1 - theta) * omega) / so) * a + (torch.sin(theta * omega) / so) * b


def slerp_embeddings(a: torch.Tensor, b: torch.Tensor, theta: float) -> torch.Tensor:
    """The slerp of the directions of a and b, at the linearly interpolated length."""
    length = (1 - theta) * a.norm(dim=-1, keepdim=True) + theta * b.norm(dim=-1, keepdim=True)
    return F.normalize(slerp(F.normalize(a, dim=-1), F.normalize(b, dim=-1), theta), dim=-1) * length


@torch.no_grad()
def invert(pipe, image: np.ndarray, caption: str | None = None,
           steps: int = INVERSION_STEPS) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(z_i (1, D), x_T (1, 3, S, S), the image at the decoder's base size in [-1, 1]).
    Inversion runs the unguided decoder (scale 1), as reconstruction does."""
    check_settings(steps=steps)
    z_i = pipe.embed_images([image])
    x0 = pipe.decoder_input(image)
    return z_i, pipe.invert_decoder(z_i, x0, steps=steps, caption=caption), x0


@torch.no_grad()
def reconstruct(pipe, image: np.ndarray, steps: int = INVERSION_STEPS) -> tuple[np.ndarray, float]:
    """Invert and decode again at eta 0: (the base-size reconstruction, its PSNR in dB)."""
    z_i, x_T, x0 = invert(pipe, image, steps=steps)
    rec = pipe.decode_latents(z_i, x_T, steps=steps)
    return to_uint8(rec)[0], psnr(rec, x0)


@torch.no_grad()
def vary(pipe, image: np.ndarray, num: int = 4, *, eta: float = 1.0, seed: int = 0,
         steps: int = INVERSION_STEPS, guidance_scale: float | None = None, inverted=None) -> np.ndarray:
    """`num` variations: the image's z_i and inverted x_T, decoded with DDIM at `eta` > 0 and
    the decoder's guidance (its default unless given). `inverted`: `invert`'s result for the
    image, when the caller has it already."""
    check_settings(steps=steps, seed=seed, num=num, eta=eta)
    if guidance_scale is None:
        guidance_scale = pipe.default_decoder_guidance
    validate.number("guidance_scale", guidance_scale, low=0.0)
    z_i, x_T, _ = inverted or invert(pipe, image, steps=steps)
    gens = [torch.Generator().manual_seed(seed + i) for i in range(num)]
    images = pipe.decode_latents(z_i.expand(num, -1), x_T.expand(num, -1, -1, -1), eta=eta, steps=steps,
                                 guidance_scale=guidance_scale, generator=gens)
    return to_uint8(pipe.upsample(images, generator=gens))


@torch.no_grad()
def interpolate(pipe, image_a, image_b, frames: int = 5, *, latent: str = "inverted", seed: int = 0,
                steps: int = INVERSION_STEPS) -> tuple[np.ndarray, list]:
    """Frames along slerp(z_a, z_b, theta), theta = 0 .. 1. Each end is an image (uint8 array) or
    a caption (str: the prior's image embedding for it, seeded by `seed`, and a random x_T).
    latent "inverted": slerp of the two ends' x_T (an image's by DDIM inversion); "fixed": one
    random x_T for every frame. Returns (images, thetas)."""
    if latent not in ("inverted", "fixed"):
        raise ValueError(f"latent must be 'inverted' or 'fixed', got {latent!r}")
    check_settings(steps=steps, seed=seed, frames=frames)
    ends = [_end(pipe, e, seed + i, steps) for i, e in enumerate((image_a, image_b))]
    shape = next((x.shape for _, x in ends if x is not None), None) or (1, *pipe.decoder_noise_shape(
        pipe.decoder_input(np.zeros((8, 8, 3), np.uint8)).shape[-1]))
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(pipe.device)
    (z_a, x_a), (z_b, x_b) = [(z, noise if x is None else x) for z, x in ends]
    thetas = np.linspace(0, 1, frames).tolist()
    z = torch.cat([slerp_embeddings(z_a, z_b, th) for th in thetas])
    if latent == "fixed":
        x_T = noise.expand(frames, -1, -1, -1)
    else:
        x_T = torch.cat([slerp(x_a.flatten(1), x_b.flatten(1), th).view_as(x_a) for th in thetas])
    gens = [torch.Generator().manual_seed(seed) for _ in thetas]
    images = pipe.decode_latents(z, x_T, steps=steps, generator=gens)
    return to_uint8(pipe.upsample(images, generator=gens)), thetas


def _end(pipe, end, seed: int, steps: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(z, inverted x_T) of an image; (the prior's z, None) of a caption."""
    if isinstance(end, str):
        if not end.strip():
            raise ValueError("a caption at an end of an interpolation must be a non-empty string")
        return pipe.caption_embeds([end], [torch.Generator().manual_seed(seed)]).float(), None
    z, x_T, _ = invert(pipe, end, steps=steps)
    return z, x_T


@torch.no_grad()
def text_diff(pipe, image: np.ndarray, to_caption: str, from_caption: str | None = None,
              frames: int = 5, *, max_theta: float = 0.5, seed: int = 0,
              steps: int = INVERSION_STEPS) -> tuple[np.ndarray, list]:
    """Frames along slerp(z_i, z_d, theta), theta = 0 .. max_theta, with
    z_d = normalize(z_t(to) - z_t(from)) (the empty caption when `from` is None), at the length
    of z_i, and the decoder latent from DDIM inversion. Returns (images, thetas)."""
    if not to_caption or not to_caption.strip():
        raise ValueError("the target caption must be a non-empty string")
    check_settings(steps=steps, seed=seed, frames=frames, max_theta=max_theta)
    z_i, x_T, _ = invert(pipe, image, steps=steps)
    z_to, z_from = pipe.embed_captions([to_caption, from_caption or ""]).chunk(2)
    z_d = F.normalize(F.normalize(z_to, dim=-1) - F.normalize(z_from, dim=-1), dim=-1) * z_i.norm(dim=-1, keepdim=True)
    thetas = np.linspace(0, max_theta, frames).tolist()
    z = torch.cat([slerp_embeddings(z_i, z_d, th) for th in thetas])
    gens = [torch.Generator().manual_seed(seed) for _ in thetas]
    images = pipe.decode_latents(z, x_T.expand(frames, -1, -1, -1), steps=steps, generator=gens)
    return to_uint8(pipe.upsample(images, generator=gens)), thetas
