"""Latents to pixels with less memory: a batch one image at a time (slicing) and a large image in
overlapping tiles blended across the seams (tiling).

diffusers' AutoencoderKL (Stable unCLIP's VAE) does both itself once its `use_slicing` /
`use_tiling` are set; its VQModel (Kandinsky's MoVQ) has neither, so `decode` does them here, with
the same flags on the module. A tile is `tile_latent_min_size` latents square (64 unless set: 512 px at MoVQ's factor 8), its
neighbours overlap it by a quarter, and each pixel is the average of the tiles that cover it,
weighted by how far it lies inside each, so no seam shows.

On the CPU in reduced precision the decoders take their latents channels-last (`fast_layout`):
oneDNN's convolutions run faster so and hold less (benchmarks/decode_layout.py). At float32 the
layout stays as diffusers has it, whose images unclip's equal there exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def decode(module: torch.nn.Module, latents: torch.Tensor, decode_one: Callable[[torch.Tensor], torch.Tensor],
           factor: int, tile: int | None = None) -> torch.Tensor:
    """`decode_one` over `latents` (B, C, h, w), sliced and tiled as `module`'s flags say; tiles of
    `tile` latents (default: the module's `tile_latent_min_size`, diffusers' name, else 64)."""
    tile = tile or getattr(module, "tile_latent_min_size", 64)
    if getattr(module, "use_slicing", False) and len(latents) > 1:
        return torch.cat([decode(module, z[None], decode_one, factor, tile) for z in latents])
    if getattr(module, "use_tiling", False) and max(latents.shape[-2:]) > tile:
        return tiled(latents, decode_one, factor, tile)
    return decode_one(latents)


def fast_layout(latents: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`latents` in `dtype`, channels-last where that decodes faster: on the CPU below float32."""
    latents = latents.to(dtype)
    if latents.device.type == "cpu" and dtype in (torch.bfloat16, torch.float16) and latents.dim() == 4:
        return latents.contiguous(memory_format=torch.channels_last)
    return latents


def _starts(size: int, tile: int, stride: int) -> list[int]:
    """Tile origins covering 0..size, the last one flush with the end."""
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, stride))
    return starts + [size - tile]


def _ramp(n: int, overlap: int) -> torch.Tensor:
    """1 inside, falling linearly towards both edges over `overlap` pixels (never 0)."""
    d = torch.arange(n, dtype=torch.float32)
    edge = torch.minimum(d + 1, n - d)
    return (edge / (overlap + 1)).clamp(max=1.0)


def tiled(latents: torch.Tensor, decode_one, factor: int, tile: int) -> torch.Tensor:
    """The image decoded tile by tile, tiles overlapping by a quarter, blended by distance to edges."""
    h, w = latents.shape[-2:]
    th, tw = min(tile, h), min(tile, w)
    overlap = tile // 4
    out = weight = None
    for i in _starts(h, th, th - overlap):
        for j in _starts(w, tw, tw - overlap):
            pixels = decode_one(latents[..., i:i + th, j:j + tw]).float()
            if out is None:
                out = torch.zeros(*pixels.shape[:2], h * factor, w * factor, device=pixels.device)
                weight = torch.zeros(h * factor, w * factor, device=pixels.device)
            ph, pw = pixels.shape[-2:]
            wgt = (_ramp(ph, overlap * factor)[:, None] * _ramp(pw, overlap * factor)[None]).to(pixels.device)
            out[..., i * factor:i * factor + ph, j * factor:j * factor + pw] += pixels * wgt
            weight[i * factor:i * factor + ph, j * factor:j * factor + pw] += wgt
    return out / weight
