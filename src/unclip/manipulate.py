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

from .data.embeddings import encode_image, encode_text
from .data.transforms import resize_center_crop, to_tensor, to_uint8
from .diffusion.guidance import cfg
from .diffusion.sampling import ddim_invert
from .evaluate.image_metrics import psnr
from .pipeline import UnCLIPPipeline

INVERSION_STEPS = 50


def slerp(a: torch.Tensor, b: torch.Tensor, theta: float) -> torch.Tensor:
    """Spherical interpolation between rows of a and b, theta in [0, 1]; linear when parallel."""
    a_n, b_n = F.normalize(a.float(), dim=-1), F.normalize(b.float(), dim=-1)
    omega = torch.arccos((a_n * b_n).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    if (so.abs() < 1e-6).any():
        return (1 - theta) * a + theta * b
    return (torch.sin((1 - theta) * omega) / so) * a + (torch.sin(theta * omega) / so) * b


def _pixels(image: np.ndarray, size: int) -> torch.Tensor:
    from PIL import Image

    return to_tensor(np.array(resize_center_crop(Image.fromarray(image), size)))


def _decoder_cond(pipe: UnCLIPPipeline, z_i: torch.Tensor, caption: str | None) -> dict:
    cond = {"image_embed": z_i}
    if pipe.decoder.cfg.use_text:
        text = encode_text(pipe.clip, [caption] if caption else [""])
        cond.update({k: v.expand(len(z_i), *v.shape[1:]) for k, v in text.items()})
    return cond


@torch.no_grad()
def invert(pipe: UnCLIPPipeline, image: np.ndarray, caption: str | None = None,
           steps: int = INVERSION_STEPS) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(z_i (1, D), x_T (1, 3, S, S), the image at the decoder's base size in [-1, 1]).
    Inversion runs the unguided decoder (scale 1), as reconstruction does."""
    pipe.require("clip", "decoder")
    z_i = encode_image(pipe.clip, _pixels(image, pipe.clip.image_size))
    x0 = _pixels(image, pipe.decoder.cfg.image_size)
    cond = _decoder_cond(pipe, z_i, caption)
    denoise = cfg(pipe.decoder.denoise, cond, pipe.decoder.null(encode_text(pipe.clip, [""])), 1.0)
    return z_i, ddim_invert(denoise, x0, pipe.decoder.scheduler, steps=steps), x0


@torch.no_grad()
def decode_latents(pipe: UnCLIPPipeline, z_i: torch.Tensor, x_T: torch.Tensor, *, eta: float = 0.0,
                   steps: int = INVERSION_STEPS, guidance_scale: float = 1.0, caption: str | None = None,
                   generator=None) -> torch.Tensor:
    """DDIM from (z_i, x_T) at the base size, (B, 3, S, S) in [-1, 1]."""
    cond = _decoder_cond(pipe, z_i, caption)
    return pipe.decoder.sample(cond, encode_text(pipe.clip, [""]), guidance_scale=guidance_scale, steps=steps,
                               eta=eta, generator=generator, x_T=x_T)


@torch.no_grad()
def reconstruct(pipe: UnCLIPPipeline, image: np.ndarray, steps: int = INVERSION_STEPS) -> tuple[np.ndarray, float]:
    """Invert and decode again at eta 0: (the base-size reconstruction, its PSNR in dB)."""
    z_i, x_T, x0 = invert(pipe, image, steps=steps)
    rec = decode_latents(pipe, z_i, x_T, steps=steps)
    return to_uint8(rec)[0], psnr(rec, x0)


@torch.no_grad()
def vary(pipe: UnCLIPPipeline, image: np.ndarray, num: int = 4, *, eta: float = 1.0, seed: int = 0,
         steps: int = INVERSION_STEPS, guidance_scale: float | None = None) -> np.ndarray:
    """`num` variations: the image's z_i and inverted x_T, decoded with DDIM at `eta` > 0 and
    the decoder's guidance (its default unless given)."""
    if guidance_scale is None:
        guidance_scale = pipe.decoder.cfg.guidance_scale
    z_i, x_T, _ = invert(pipe, image, steps=steps)
    gens = [torch.Generator().manual_seed(seed + i) for i in range(num)]
    images = decode_latents(pipe, z_i.expand(num, -1), x_T.expand(num, -1, -1, -1), eta=eta, steps=steps,
                            guidance_scale=guidance_scale, generator=gens)
    return to_uint8(pipe.upsample(images, generator=gens))


@torch.no_grad()
def interpolate(pipe: UnCLIPPipeline, image_a: np.ndarray, image_b: np.ndarray, frames: int = 5, *,
                latent: str = "inverted", seed: int = 0, steps: int = INVERSION_STEPS) -> tuple[np.ndarray, list]:
    """Frames along slerp(z_a, z_b, theta), theta = 0 .. 1. latent "inverted": slerp of the two
    inverted x_T as well; "fixed": one random x_T for every frame. Returns (images, thetas)."""
    if latent not in ("inverted", "fixed"):
        raise ValueError(f"latent must be 'inverted' or 'fixed', got {latent!r}")
    if frames < 2:
        raise ValueError("interpolation needs at least 2 frames")
    z_a, x_a, _ = invert(pipe, image_a, steps=steps)
    z_b, x_b, _ = invert(pipe, image_b, steps=steps)
    thetas = np.linspace(0, 1, frames).tolist()
    z = torch.cat([F.normalize(slerp(z_a, z_b, th), dim=-1) for th in thetas])
    if latent == "fixed":
        x_T = torch.randn(x_a.shape, generator=torch.Generator().manual_seed(seed)).expand(frames, -1, -1, -1)
    else:
        x_T = torch.cat([slerp(x_a.flatten(1), x_b.flatten(1), th).view_as(x_a) for th in thetas])
    gens = [torch.Generator().manual_seed(seed) for _ in thetas]
    images = decode_latents(pipe, z, x_T, steps=steps, generator=gens)
    return to_uint8(pipe.upsample(images, generator=gens)), thetas


@torch.no_grad()
def text_diff(pipe: UnCLIPPipeline, image: np.ndarray, to_caption: str, from_caption: str | None = None,
              frames: int = 5, *, max_theta: float = 0.5, seed: int = 0,
              steps: int = INVERSION_STEPS) -> tuple[np.ndarray, list]:
    """Frames along slerp(z_i, z_d, theta), theta = 0 .. max_theta, with
    z_d = normalize(z_t(to) - z_t(from)) (the empty caption when `from` is None) and the
    decoder latent from DDIM inversion. Returns (images, thetas)."""
    if not to_caption or not to_caption.strip():
        raise ValueError("the target caption must be a non-empty string")
    if frames < 2:
        raise ValueError("a text diff needs at least 2 frames")
    z_i, x_T, _ = invert(pipe, image, steps=steps)
    z_to = encode_text(pipe.clip, [to_caption])["text_embed"]
    z_from = encode_text(pipe.clip, [from_caption or ""])["text_embed"]
    z_d = F.normalize(z_to - z_from, dim=-1)
    thetas = np.linspace(0, max_theta, frames).tolist()
    z = torch.cat([F.normalize(slerp(z_i, z_d, th), dim=-1) for th in thetas])
    gens = [torch.Generator().manual_seed(seed) for _ in thetas]
    images = decode_latents(pipe, z, x_T.expand(frames, -1, -1, -1), steps=steps, generator=gens)
    return to_uint8(pipe.upsample(images, generator=gens)), thetas
