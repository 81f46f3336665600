"""Where the objects are: the background colour, the foreground mask, its components and their
crops, shared by the detector and the shape classifier's training; and the speckle figure."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage

from unclip.data import shapes

SIDE = 64
FOREGROUND_DISTANCE = 80.0  # RGB distance from the background colour
MIN_AREA = 0.004  # of the canvas; the smallest spec object (small triangle) covers 0.0157
CROP = 24  # the shape classifier's input side
SPECKLE_DISTANCE = 24  # 0-255, largest channel difference from the background colour
SPECKLE_MARGIN = 2  # px around each object that edges may blur into


def foreground(image: np.ndarray, side: int | None = SIDE) -> tuple[np.ndarray, str, np.ndarray]:
    """(foreground mask, background name, the image as float (H, W, 3)), at `side` px (None:
    the image's own size)."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image (H, W, 3), got shape {image.shape}")
    if side is not None and image.shape[:2] != (side, side):
        image = np.asarray(Image.fromarray(image).resize((side, side), Image.BOX))
    x = image.astype(np.float32)
    border = np.concatenate([x[:2].reshape(-1, 3), x[-2:].reshape(-1, 3), x[:, :2].reshape(-1, 3),
                             x[:, -2:].reshape(-1, 3)])
    bg = np.median(border, axis=0)
    name = min(shapes.BACKGROUNDS, key=lambda n: np.linalg.norm(bg - np.array(shapes.BACKGROUNDS[n])))
    return np.linalg.norm(x - bg, axis=-1) > FOREGROUND_DISTANCE, name, x


def components(mask: np.ndarray) -> list[np.ndarray]:
    """8-connected components of a mask with at least MIN_AREA of the canvas, largest first."""
    labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
    found = [labels == i for i in range(1, n + 1)]
    found = [m for m in found if m.sum() >= MIN_AREA * mask.size]
    return sorted(found, key=lambda m: -m.sum())


def crop_mask(mask: np.ndarray) -> torch.Tensor:
    """The square around a component, 1.25 times its larger side, scaled to (CROP, CROP)."""
    ys, xs = np.nonzero(mask)
    cy, cx = (ys.min() + ys.max() + 1) / 2, (xs.min() + xs.max() + 1) / 2
    half = max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1) * 0.625 + 1
    pad = int(math.ceil(half)) + 1
    m = np.pad(mask.astype(np.float32), pad)
    y0, x0 = int(round(cy - half)) + pad, int(round(cx - half)) + pad
    side = int(round(2 * half))
    window = torch.from_numpy(m[y0:y0 + side, x0:x0 + side].copy())[None, None]
    return F.interpolate(window, size=(CROP, CROP), mode="bilinear", antialias=True, align_corners=False)[0, 0]



def speckle_share(image: np.ndarray) -> float:
    """The share of background pixels (more than SPECKLE_MARGIN px from every object) whose colour
    is more than SPECKLE_DISTANCE/255 from the spec background colour, in any channel, at the
    image's own size: stray dots and grain on what should be a flat background."""
    mask, name, x = foreground(image, side=None)
    objects = np.zeros_like(mask)
    for comp in components(mask):
        objects |= comp
    near = ndimage.binary_dilation(objects, iterations=SPECKLE_MARGIN) if objects.any() else objects
    background = ~near
    if not background.any():
        return 0.0
    off = np.abs(x - np.array(shapes.BACKGROUNDS[name], dtype=np.float32)).max(axis=-1) > SPECKLE_DISTANCE
    return float(off[background].mean())
