"""Image I/O and conversions. Pixels inside the models are float in [-1, 1], (B, 3, H, W)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def open_rgb(source: str | Path | bytes) -> Image.Image:
    """Decode an image of any mode (RGBA, greyscale, palette...) as RGB; transparency is
    composited onto white. Raises ValueError naming the file when it cannot be decoded."""
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    try:
        img = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        img.load()
    except FileNotFoundError:
        raise
    except Exception as e:  # PIL raises many types for truncated or foreign files
        raise ValueError(f"cannot read image {name}: {e}") from None
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        canvas = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, img).convert("RGB")
    return img.convert("RGB")


def resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    """Scale the shorter side to `size` and cut the centre square."""
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), Image.BICUBIC, reducing_gap=3.0)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


def center_square(image: np.ndarray) -> np.ndarray:
    """The centre square of a uint8 (H, W, 3) image, at its own resolution."""
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return image[top:top + side, left:left + side]


def to_tensor(images: np.ndarray | list) -> torch.Tensor:
    """uint8 (H, W, 3) or (B, H, W, 3) -> float (B, 3, H, W) in [-1, 1]."""
    arr = np.stack(images) if isinstance(images, list) else np.asarray(images)
    if arr.ndim == 3:
        arr = arr[None]
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_uint8(pixels: torch.Tensor) -> np.ndarray:
    """float (B, 3, H, W) in [-1, 1] -> uint8 (B, H, W, 3), rounded as diffusers rounds."""
    from ..output import to_output

    return to_output(pixels.detach(), "uint8")
