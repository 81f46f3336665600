"""The upsamplers (unCLIP Sec. 2.1): low-resolution image -> image at twice the side.

`diffusers.UNet2DModel` with no attention anywhere, so it is purely convolutional: trained
on random crops a quarter of the target side and applied at full size. The low-resolution
image, upsampled bicubically to the target size, is concatenated to the noisy input; there is
no text or embedding condition and no guidance.

Three changes from the paper, each measured on shapes (issue 17), made the upsamplers beat
bicubic where they had lost to it:
- The diffusion runs on the residual (target minus the bicubic image), divided by
  `residual_scale` (0.1); the sample is the bicubic image plus the residual (on the full
  image instead, an upsampler drifted in flat colours: 15.6 dB against bicubic's 33 dB after
  1500 steps; an untrained residual one is already bicubic). The residual's spread (std
  0.03-0.09) is far below the unit noise the schedule assumes: unscaled, it is buried at every
  timestep but the last few, and the noise the network lets through lands in the image at full
  size (the mean prediction from pure noise: 27.3 dB against bicubic's 33.8; SSIM 0.65).
- A share `clean_prob` of the training inputs is left uncorrupted. Trained on corrupted inputs
  only (Gaussian blur for stage one, BSR for stage two: `data.degrade`), an upsampler sharpens a
  clean input as if it were blurred (3 dB below bicubic on clean renders, 3 dB above on blurred).
- The presets end with a phase on whole images (`upsampler*_full.yaml`): group norm takes its
  statistics over the whole input, and a 16 px crop's differ from a 64 px image's (the
  crop-trained upsampler run tile by tile at 16 px was 1.8 dB better than run whole).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import UNet2DModel
from torch import nn

from unclip.config import check
from unclip.data.degrade import DEGRADATIONS
from unclip.diffusion.objectives import training_loss
from unclip.diffusion.sampling import Generators, randn, sample_or_repaint
from unclip.diffusion.schedules import Sampled, Sampler


@dataclass
class UpsamplerConfig:
    factor: int = 2  # target side / input side
    block_out_channels: tuple[int, ...] = (32, 64, 128)
    layers_per_block: int = 2
    dropout: float = 0.0
    degradation: Literal["blur", "bsr"] = "blur"
    crop_fraction: float = 0.25  # training crops: this fraction of the target side
    clean_prob: float = 0.5  # share of training inputs left uncorrupted
    prediction_type: Literal["epsilon", "v_prediction"] = "v_prediction"
    residual_scale: float = 0.1  # diffusion runs on (target - bicubic) / residual_scale
    timesteps: int = 1000
    schedule: Literal["cosine", "linear"] = "cosine"
    sample_steps: int = 7  # as Karlo
    sampler: Sampler = "ddim"

    def __post_init__(self):
        check(self.factor >= 2, "factor", "must be at least 2")
        check(0 < self.crop_fraction <= 1, "crop_fraction", "must be in (0, 1]")
        check(0 <= self.clean_prob <= 1, "clean_prob", "must be in [0, 1]")
        check(all(c % 32 == 0 for c in self.block_out_channels), "block_out_channels",
              "must be multiples of 32 (group norm)")
        check(0 < self.sample_steps <= self.timesteps, "sample_steps", "must be in 1..timesteps")
        check(self.residual_scale > 0, "residual_scale", "must be positive")


def upsample(low: torch.Tensor, factor: int) -> torch.Tensor:
    """The conditioning image: bicubic upsampling, clamped to [-1, 1]."""
    return F.interpolate(low.float(), scale_factor=factor, mode="bicubic", align_corners=False).clamp(-1, 1)


def random_crops(images: list[torch.Tensor], size: int, generator: torch.Generator | None = None):
    """The same random (size x size) window of each row, applied to every tensor in `images`."""
    b, _, h, w = images[0].shape
    ys = torch.randint(0, h - size + 1, (b,), generator=generator).tolist()
    xs = torch.randint(0, w - size + 1, (b,), generator=generator).tolist()
    return [torch.stack([im[i, :, y:y + size, x:x + size] for i, (y, x) in enumerate(zip(ys, xs))])
            for im in images]


class Upsampler(Sampled, nn.Module):
    def __init__(self, unet: UNet2DModel, cfg: UpsamplerConfig):
        super().__init__()
        self.unet, self.cfg = unet, cfg
        self.scheduler = self.make_scheduler()

    def scheduler_args(self) -> dict:
        return dict(num_train_timesteps=self.cfg.timesteps, schedule=self.cfg.schedule,
                    prediction_type=self.cfg.prediction_type, clip_sample_range=2.0 / self.cfg.residual_scale)

    @classmethod
    def from_config(cls, cfg: UpsamplerConfig) -> Upsampler:
        levels = len(cfg.block_out_channels)
        unet = UNet2DModel(
            in_channels=6, out_channels=3, block_out_channels=cfg.block_out_channels,
            down_block_types=("DownBlock2D",) * levels, up_block_types=("UpBlock2D",) * levels,
            layers_per_block=cfg.layers_per_block, add_attention=False, dropout=cfg.dropout,
            resnet_time_scale_shift="scale_shift",
        )
        return cls(unet, cfg)

    @classmethod
    def from_pretrained(cls, path: str | Path, cfg: UpsamplerConfig, torch_dtype=None) -> Upsampler:
        from unclip.runtime.weights import check_weights, meta_model

        check_weights(Path(path).name, Path(path), None, meta_model(UNet2DModel, Path(path)))
        unet = UNet2DModel.from_pretrained(path, torch_dtype=torch_dtype, local_files_only=True, use_safetensors=True)
        # NHWC convolutions for sampling: 1.31x faster on this CPU (64 -> 128 px, batch 16)
        return cls(unet.eval().to(memory_format=torch.channels_last), cfg)

    def save_pretrained(self, path: str | Path) -> None:
        self.unet.save_pretrained(path)

    def degrade(self, low: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """The training corruption, drawn independently for each image; a share `clean_prob`
        stays clean, so that a clean input is not sharpened as if it were blurred."""
        fn = DEGRADATIONS[self.cfg.degradation]
        return torch.cat([low[i:i + 1] if rng.random() < self.cfg.clean_prob else fn(low[i:i + 1], rng)
                          for i in range(low.shape[0])])

    def denoise(self, x_t: torch.Tensor, t: torch.Tensor, cond_image: torch.Tensor) -> torch.Tensor:
        dtype = self.unet.dtype  # output in float32; the network runs in its own dtype
        return self.unet(torch.cat([x_t.to(dtype), cond_image.to(dtype)], dim=1), t).sample.float()

    def loss(self, high: torch.Tensor, low: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """high: targets (B, 3, H, W); low: their corrupted (B, 3, H / factor, W / factor) versions."""
        size = max(8, round(high.shape[-1] * self.cfg.crop_fraction))
        high, cond = random_crops([high, upsample(low, self.cfg.factor)], size, generator)
        residual = (high - cond) / self.cfg.residual_scale
        return training_loss(lambda x, t: self.denoise(x, t, cond), residual, self.scheduler.alphas_cumprod,
                             prediction_type=self.cfg.prediction_type, generator=generator)

    @torch.no_grad()
    def sample(self, low: torch.Tensor, *, steps: int | None = None, generator: Generators = None,
               sampler: str | None = None, inpaint: tuple | None = None) -> torch.Tensor:
        """(B, 3, h, w) in [-1, 1] -> (B, 3, h * factor, w * factor) in [-1, 1]. `inpaint`:
        (known images at the output size, keep mask, resample), see `diffusion.sampling.repaint`."""
        cond = upsample(low, self.cfg.factor)
        x_T = randn(tuple(cond.shape), generator, device=low.device)
        if inpaint is not None:  # the diffusion runs on the residual over the bicubic image
            known, keep, resample = inpaint
            inpaint = ((known - cond) / self.cfg.residual_scale, keep, resample)
        residual = sample_or_repaint(lambda x, t: self.denoise(x, t, cond), x_T, self.scheduler_for(sampler),
                                     steps=steps or self.cfg.sample_steps, generator=generator, inpaint=inpaint)
        return (cond + self.cfg.residual_scale * residual).clamp(-1, 1)


# -- a cascade of upsamplers in a model folder (unCLIP's and DALL-E 1's) ------------------------------
def save_cascade(upsamplers: list[Upsampler], path: Path, settings: dict) -> None:
    """Each upsampler to `upsampler{i}/`, listed in settings["components"], with its config in
    settings["upsamplers"]."""
    for i, up in enumerate(upsamplers, start=1):
        up.save_pretrained(path / f"upsampler{i}")
        settings["components"].append(f"upsampler{i}")
    if upsamplers:
        settings["upsamplers"] = [asdict(up.cfg) for up in upsamplers]


def load_cascade(path: Path, settings: dict, torch_dtype, load) -> list[Upsampler]:
    """The upsamplers save_cascade wrote; `load(name, fn)` names the component in errors."""
    from unclip.config import from_dict

    ups = []
    for i, raw in enumerate(settings.get("upsamplers", []), start=1):
        raw = {"residual_scale": 1.0, **raw}  # folders saved before the setting existed
        cfg = from_dict(UpsamplerConfig, raw, f"upsamplers[{i}].")
        ups.append(load(f"upsampler{i}", lambda i=i, cfg=cfg: Upsampler.from_pretrained(
            path / f"upsampler{i}", cfg, torch_dtype=torch_dtype)))
    return ups


def cascade(upsamplers: list[Upsampler], images: torch.Tensor, *, generator: Generators = None,
            steps: int | None = None, sampler: str | None = None, inpaint=None) -> torch.Tensor:
    """Through every upsampler in turn. `inpaint(side)`: the (known, keep, resample) of an
    inpainting at that side (unclip.pipelines.inpaint.Region.at), None for plain upsampling."""
    for up in upsamplers:
        side = images.shape[-1] * up.cfg.factor
        images = up.sample(images, generator=generator, steps=steps, sampler=sampler,
                           inpaint=None if inpaint is None else inpaint(side))
    return images
