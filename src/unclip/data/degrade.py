"""Corruptions of the upsamplers' low-resolution inputs (unCLIP Sec. 2.1, App. C).

"In the first upsampling stage, we use gaussian blur, and in the second, we use a more
diverse BSR degradation" (BSR: Zhang et al. 2021, a random order of blurs, resizes, noise
and JPEG compression). Both map a batch (B, 3, h, w) in [-1, 1] to the same shape; every
random choice comes from the numpy generator passed in, so a corruption is reproducible.
"""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from unclip.data.transforms import to_tensor, to_uint8


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float | None = None, angle: float = 0.0) -> torch.Tensor:
    """A normalised (size, size) Gaussian, anisotropic when sigma_y differs, rotated by angle."""
    sigma_y = sigma_x if sigma_y is None else sigma_y
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    y, x = torch.meshgrid(r, r, indexing="ij")
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * x + s * y, -s * x + c * y
    k = torch.exp(-0.5 * ((u / sigma_x) ** 2 + (v / sigma_y) ** 2))
    return (k / k.sum()).float()


def blur(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Convolve each channel with `kernel`, reflecting at the borders."""
    pad = kernel.shape[-1] // 2
    weight = kernel.to(x)[None, None].expand(x.shape[1], 1, -1, -1)
    return F.conv2d(F.pad(x, (pad,) * 4, mode="reflect"), weight, groups=x.shape[1])


def gaussian_blur(x: torch.Tensor, rng: np.random.Generator | None = None) -> torch.Tensor:
    """Stage one's corruption: kernel 3, sigma 0.6 (fixed, so rng is unused)."""
    return blur(x, gaussian_kernel(3, 0.6))


def _random_blur(x, rng):
    size = int(rng.choice([3, 5, 7]))
    sx, sy = rng.uniform(0.2, 1.5, size=2) if rng.random() < 0.5 else [rng.uniform(0.2, 1.5)] * 2
    return blur(x, gaussian_kernel(size, sx, sy, rng.uniform(0, np.pi)))


def _random_resize(x, rng):
    """Down (or up) by a random factor with a random kernel, then back to the same size."""
    h, w = x.shape[-2:]
    f = rng.uniform(0.5, 1.5)
    mode_down, mode_up = rng.choice(["area", "bilinear", "bicubic"]), rng.choice(["bilinear", "bicubic"])
    size = (max(4, round(h * f)), max(4, round(w * f)))
    y = F.interpolate(x, size=size, mode=mode_down) if mode_down == "area" else \
        F.interpolate(x, size=size, mode=mode_down, align_corners=False)
    return F.interpolate(y, size=(h, w), mode=mode_up, align_corners=False).clamp(-1, 1)


def _random_noise(x, rng):
    sigma = rng.uniform(1, 25) / 127.5  # 1..25 grey levels
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    if rng.random() < 0.4:  # grey noise, the same in every channel
        n = torch.randn((x.shape[0], 1, *x.shape[2:]), generator=gen)
    else:
        n = torch.randn(x.shape, generator=gen)
    return (x + sigma * n.to(x)).clamp(-1, 1)


def _random_jpeg(x, rng):
    quality = int(rng.integers(30, 96))
    out = []
    for img in to_uint8(x):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=quality)
        out.append(np.asarray(Image.open(buf).convert("RGB")))
    return to_tensor(out).to(x)


def bsr(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Stage two's corruption: blur, resize and noise in a random order (each blur and the noise
    applied with probability 0.8 and 0.6), then JPEG compression."""
    ops = [_random_blur, _random_blur, _random_resize, _random_noise]
    keep = [rng.random() < 0.8, rng.random() < 0.8, True, rng.random() < 0.6]
    for i in rng.permutation(len(ops)):
        if keep[i]:
            x = ops[i](x, rng)
    return _random_jpeg(x, rng)


DEGRADATIONS = {"blur": gaussian_blur, "bsr": bsr}
