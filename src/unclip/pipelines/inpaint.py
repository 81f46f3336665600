"""Inpainting (unCLIP's decoder, GLIDE's descendant, editing a region in place): the pixels
under the mask are drawn anew to agree with a caption; the rest are kept.

Any decoder does it, with no inpainting training: sampling replaces the kept pixels by the
noised original after every step (RePaint, `diffusion.sampling.repaint`), at the decoder's size
and again at every upsampler's, and the result keeps the input exactly outside the mask (the
last step's replacement is the input itself; a final composite at the output size makes sure).

The mask follows diffusers' convention: a greyscale image, **white = repaint**, of any size
(resized to the image). A mask that covers nothing, or everything, is an error.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from unclip.data.transforms import resize_center_crop, to_tensor
from unclip.diffusion.sampling import STATELESS


def as_rgb(image) -> np.ndarray:
    """uint8 (H, W, 3) from a PIL image or an array (greyscale and alpha dropped to RGB)."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"image must be a PIL image or uint8 (H, W, 3), got {arr.dtype} {arr.shape}")
    return arr


def as_mask(mask_image, size: tuple[int, int]) -> np.ndarray:
    """A boolean (H, W) repaint mask at `size` (W, H) from a greyscale mask image of any size:
    white (>= 128 after resizing) = repaint."""
    if isinstance(mask_image, Image.Image):
        grey = mask_image.convert("L")
    else:
        arr = np.asarray(mask_image)
        if arr.dtype == bool:
            arr = arr.astype(np.uint8) * 255
        elif arr.dtype != np.uint8:
            raise ValueError(f"mask_image must be a PIL image, uint8 or bool array, got {arr.dtype}")
        grey = Image.fromarray(arr).convert("L")
    repaint = np.asarray(grey.resize(size, Image.BILINEAR)) >= 128
    if not repaint.any():
        raise ValueError("the mask is empty (all black): white marks the region to repaint")
    if repaint.all():
        raise ValueError("the mask covers the whole image: nothing to keep (use generate instead)")
    return repaint


class Region:
    """An image and the part of it to repaint, at any square size the samplers ask for."""

    def __init__(self, image, mask_image, resample: int = 1):
        self.image = as_rgb(image)
        h, w = self.image.shape[:2]
        self.repaint = as_mask(mask_image, (w, h))
        self.resample = resample

    def at(self, side: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor, int]:
        """(known (1, 3, S, S) in [-1, 1], keep (1, 1, S, S) in {0, 1}, resample) at `side`,
        cropped and resized as the decoder's input is (`resize_center_crop`)."""
        known = to_tensor(np.array(resize_center_crop(Image.fromarray(self.image), side))).to(device)
        mask = np.array(resize_center_crop(Image.fromarray(self.repaint.astype(np.uint8) * 255), side))
        keep = torch.from_numpy(mask < 128).float()[None, None].to(device)
        return known, keep, self.resample

    def composite(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, S, S) in [-1, 1] with the kept pixels set to the input at their size."""
        known, keep, _ = self.at(images.shape[-1], images.device)
        return keep * known + (1 - keep) * images


def check_sampler(name: str) -> str:
    """Inpainting jumps back between steps: only samplers without state across steps can."""
    if name not in STATELESS:
        raise ValueError(f"inpainting samples with ddpm or ddim (RePaint jumps back between steps); "
                         f"the stage's sampler is {name}: pass decoder_sampler / super_res_sampler ddim")
    return name
