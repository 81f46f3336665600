"""Image I/O and conversions. Pixels inside the models are float in [-1, 1], (B, 3, H, W)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def open_rgb(source: str | Path | bytes) -> Image.Image:
    """Decode an image of any mode PIL reads as 8-bit RGB: 16- and 32-bit greyscale scaled to
    0..255 (not clipped), CMYK and palettes converted, transparency composited onto white, EXIF
    orientation applied. Raises ValueError naming the file when it cannot be decoded."""
    from PIL import ImageOps

    name = "<bytes>" if isinstance(source, bytes) else str(source)
    try:
        img = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        img.load()
        img = ImageOps.exif_transpose(img)
    except FileNotFoundError:
        raise
    except IsADirectoryError:
        raise ValueError(f"cannot read image {name}: it is a folder") from None
    except Exception as e:  # PIL raises many types for truncated or foreign files
        raise ValueError(f"cannot read image {name}: {e}") from None
    if img.mode.startswith("I") or img.mode == "F":
        img = Image.fromarray(_to_8bit(np.asarray(img), img.mode))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        canvas = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, img).convert("RGB")
    return img.convert("RGB")


def _to_8bit(arr: np.ndarray, mode: str) -> np.ndarray:
    """Greyscale of more than 8 bits -> uint8: 16-bit ranges scale by 255/65535; float images
    in [0, 1] by 255; 32-bit integers by their type's range when they exceed 16 bits."""
    arr = arr.astype(np.float64)
    if mode == "F":
        top = 1.0 if arr.max(initial=0) <= 1.0 else 255.0
    elif mode.startswith("I;16") or arr.max(initial=0) <= 65535:
        top = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
    else:
        top = 2.0 ** 32 - 1
    return np.clip(np.rint(arr / top * 255), 0, 255).astype(np.uint8)


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
    return to_output(pixels.detach(), "uint8")


OUTPUT_TYPES = ("pil", "np", "uint8", "pt")  # what a pipeline call returns, as diffusers names them


def to_unit(pixels: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1] float32, exactly as diffusers' pipelines compute it."""
    return (pixels.float() * 0.5 + 0.5).clamp(0, 1)


def to_output(pixels: torch.Tensor, output_type: str = "pil"):
    """Images (B, 3, H, W) in [-1, 1] as `output_type` (see UnCLIPOutput)."""
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
    unit = to_unit(pixels)
    if output_type == "pt":
        return unit
    arr = unit.cpu().permute(0, 2, 3, 1).numpy()
    if output_type == "np":
        return arr
    u8 = (arr * 255).round().astype("uint8")
    if output_type == "uint8":
        return u8
    return [Image.fromarray(a) for a in u8]
