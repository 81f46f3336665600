"""Probing the latent (unCLIP Sec. 3.3, Fig. 7): an image's CLIP embedding cut to its first k
principal components and decoded, all with the same DDIM noise, shows which attributes the
leading directions of the embedding carry.

The principal components are fitted on the CLIP image embeddings of training images (the
shapes world's training stream, or a folder of the user's), once per image tower, and cached
in $UNCLIP_CACHE/pca/ (default ~/.cache/unclip/pca/) under a fingerprint of that tower.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from unclip.data import shapes
from unclip.data.transforms import to_uint8
from unclip.runtime.cache import user_cache

FIT_IMAGES = 4096


def cache_dir() -> Path:
    return user_cache("pca")


def fingerprint(pipe) -> str:
    """What identifies the image tower: its embeddings of two fixed renders."""
    probe = [shapes.render(it.scene, 64) for it in shapes.eval_split(2)]
    z = pipe.embed_images(probe).float().cpu().numpy().round(4)
    return hashlib.sha256(z.tobytes()).hexdigest()[:20]


@torch.no_grad()
def fit(pipe, images=None, num: int = FIT_IMAGES, batch: int = 64) -> dict:
    """{"mean": (D,), "components": (C, D) rows by explained variance, "variance": (C,)} of the
    CLIP image embeddings of `images` (uint8 arrays; default: `num` shapes training renders)."""
    if images is None:
        from unclip.data.stream import ShapesSource

        source = ShapesSource(64)
        images = (source.get(i)["image"] for i in range(num))
    else:
        num = len(images)
    embeds, chunk = [], []
    for image in tqdm(images, total=num, desc="embed images for PCA", leave=False):
        chunk.append(image)
        if len(chunk) == batch:
            embeds.append(pipe.embed_images(chunk).float().cpu())
            chunk = []
    if chunk:
        embeds.append(pipe.embed_images(chunk).float().cpu())
    z = torch.cat(embeds)
    if len(z) < 2:
        raise ValueError("PCA needs at least two images")
    mean = z.mean(0)
    _, s, vh = torch.linalg.svd(z - mean, full_matrices=False)
    return {"mean": mean, "components": vh.contiguous(), "variance": s.pow(2) / (len(z) - 1)}


def cached_fit(pipe, images=None, name: str = "shapes") -> dict:
    """`fit` once per image tower and data (`name`), then read back."""
    path = cache_dir() / f"{fingerprint(pipe)}-{name}.safetensors"
    if path.is_file():
        return load_file(path)
    pca = fit(pipe, images)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(pca, tmp)
    os.replace(tmp, path)
    return pca


def project(z: torch.Tensor, pca: dict, k: int) -> torch.Tensor:
    """z (B, D) reconstructed from its first k principal components, at z's own length."""
    mean = pca["mean"].to(z.device)
    comps = pca["components"][:k].to(z.device)
    rec = mean + ((z.float() - mean) @ comps.T) @ comps
    return rec * (z.float().norm(dim=-1, keepdim=True) / rec.norm(dim=-1, keepdim=True).clamp_min(1e-8))


@torch.no_grad()
def probe_pca(pipe, image: np.ndarray, dims: list[int], pca: dict, *, seed: int = 0, steps: int = 50) -> np.ndarray:
    """Images (len(dims), S, S, 3) uint8: the image's embedding cut to each k of `dims`, decoded by
    DDIM (eta 0, the decoder's guidance) from one noise drawn with `seed`, then upsampled."""
    if not dims or any(not isinstance(k, int) or k < 1 for k in dims):
        raise ValueError(f"--dims must be whole numbers >= 1, got {dims}")
    most = len(pca["components"])
    if max(dims) > most:
        raise ValueError(f"--dims {max(dims)}: the embedding has {most} principal components")
    z = pipe.embed_images([image])
    zs = torch.cat([project(z, pca, k) for k in dims]).to(z.dtype)
    shape = pipe.decoder_noise_shape(pipe.decoder_input(image).shape[-1])
    x_T = torch.randn((1, *shape), generator=torch.Generator().manual_seed(seed)).to(pipe.device)
    gens = [torch.Generator().manual_seed(seed) for _ in dims]
    images = pipe.decode_latents(zs, x_T.expand(len(dims), -1, -1, -1), steps=steps,
                                 guidance_scale=pipe.default_decoder_guidance, generator=gens)
    return to_uint8(pipe.upsample(images, generator=gens))
