"""DALL-E 1's discrete VAE (Ramesh et al. 2021, Sec. 2.1): an image becomes a grid of codes.

The encoder gives logits over the codebook at every grid cell; training relaxes the choice
with Gumbel-softmax (temperature annealed towards 0) and adds the KL divergence of the
encoder's distribution from the uniform prior over the codebook, with a weight that rises
from 0 (the paper: to 6.6 over the first 5,000 updates, cosine). The decoder reads codebook
vectors. Encoder and decoder are diffusers' VAE blocks (conv ResNets, no attention).

Reconstruction is the mean squared error in [-1, 1] (the paper's logit-Laplace likelihood
matters for natural images' textures; the shapes world is flat colours), so the KL term,
averaged per grid cell, is weighed against a per-pixel mean: hence `kl_weight` far below 6.6.
Kept too high, it holds the encoder near uniform, and the codes that the argmax picks at
encoding are not the ones the decoder learnt to read (configs/shapes/dvae.yaml).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.autoencoders.vae import Decoder, Encoder
from torch import nn

from unclip.config import check


@dataclass
class DVAEConfig:
    """The network's sizes (the image size is the data's) and the objective's schedules."""

    codebook_size: int = 512
    code_dim: int = 64
    block_out_channels: tuple[int, ...] = (64, 128, 128)  # n blocks: n - 1 halvings
    layers_per_block: int = 1
    temperature_start: float = 1.0
    temperature_end: float = 1 / 16  # the paper's final temperature
    temperature_steps: int = 2000  # cosine anneal over this many optimizer steps
    kl_weight: float = 1e-3
    kl_warmup_steps: int = 500  # cosine rise from 0
    # Straight-through: the decoder reads the sampled code itself (one-hot forward, relaxed
    # gradient). With the plain relaxation a CPU-sized run (under 1,000 steps) trains the decoder
    # on mixtures of codes it never sees at sampling: measured 21 dB, 57 codes in use and wrong
    # colours after 450 steps at 2 x 2 px per code.
    straight_through: bool = True
    # Train the decoder alone on the encoder's argmax codes, the ones sampling hands it: sharper
    # reconstructions without changing the codes a trained transformer has learnt to write.
    freeze_encoder: bool = False

    def __post_init__(self):
        check(self.codebook_size >= 2, "codebook_size", "must be at least 2")
        check(self.code_dim > 0 and self.layers_per_block > 0, "code_dim", "sizes must be positive")
        check(all(c > 0 and c % 32 == 0 for c in self.block_out_channels), "block_out_channels",
              "must be positive multiples of 32 (group norm)")
        check(0 < self.temperature_end <= self.temperature_start, "temperature_end",
              "must be positive and at most temperature_start")
        check(self.kl_weight >= 0, "kl_weight", "must be >= 0")
        for name in ("temperature_steps", "kl_warmup_steps"):
            check(getattr(self, name) >= 0, name, "must be >= 0")

    def temperature(self, step: int) -> float:
        """Cosine from temperature_start to temperature_end, then flat."""
        t = min(step / self.temperature_steps, 1.0) if self.temperature_steps else 1.0
        return self.temperature_end + (self.temperature_start - self.temperature_end) * 0.5 * (1 + math.cos(math.pi * t))

    def kl(self, step: int) -> float:
        """Cosine from 0 to kl_weight, then flat."""
        t = min(step / self.kl_warmup_steps, 1.0) if self.kl_warmup_steps else 1.0
        return self.kl_weight * 0.5 * (1 - math.cos(math.pi * t))


class DVAE(ModelMixin, ConfigMixin):
    """Images <-> a grid of codes: n blocks halve the side n - 1 times (the shapes preset:
    32 px, two blocks, 16 x 16 codes)."""

    @register_to_config
    def __init__(self, image_size: int = 64, codebook_size: int = 512, code_dim: int = 64,
                 block_out_channels: tuple[int, ...] = (64, 128, 128), layers_per_block: int = 1,
                 norm_num_groups: int = 32):
        super().__init__()
        n = len(block_out_channels)
        self.encoder = Encoder(3, codebook_size, ("DownEncoderBlock2D",) * n, tuple(block_out_channels),
                               layers_per_block, norm_num_groups, double_z=False, mid_block_add_attention=False)
        self.codebook = nn.Embedding(codebook_size, code_dim)
        self.decoder = Decoder(code_dim, 3, ("UpDecoderBlock2D",) * n, tuple(block_out_channels), layers_per_block,
                               norm_num_groups, mid_block_add_attention=False)

    @property
    def grid(self) -> int:
        return self.config.image_size // 2 ** (len(self.config.block_out_channels) - 1)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """(B, codebook, g, g) from images (B, 3, S, S) in [-1, 1]."""
        return self.encoder(images)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """The most likely code of each cell, (B, g * g), row by row."""
        return self.logits(images).argmax(1).flatten(1)

    def decode_probs(self, probs: torch.Tensor) -> torch.Tensor:
        """Images from distributions over codes (B, codebook, g, g): the expected code vector."""
        return self.decoder(torch.einsum("bkhw,kd->bdhw", probs, self.codebook.weight))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, S, S) in [-1, 1] (unclamped) from codes (B, g * g)."""
        g = self.grid
        return self.decoder(self.codebook(codes.view(-1, g, g)).permute(0, 3, 1, 2))

    def decoder_loss(self, images: torch.Tensor) -> torch.Tensor:
        """Reconstruction MSE from the argmax codes (what sampling decodes); the encoder gets no gradient."""
        return F.mse_loss(self.decode(self.encode(images)), images)

    def loss(self, images: torch.Tensor, temperature: float, kl_weight: float,
             hard: bool = False) -> tuple[torch.Tensor, dict]:
        """Reconstruction MSE through a Gumbel-softmax sample (`hard`: one-hot forward, relaxed
        gradient) + kl_weight * KL(q || uniform) per cell."""
        logits = self.logits(images)
        recon = self.decode_probs(F.gumbel_softmax(logits, tau=temperature, hard=hard, dim=1))
        mse = F.mse_loss(recon, images)
        logq = logits.log_softmax(1)
        kl = (logq.exp() * (logq + math.log(logits.shape[1]))).sum(1).mean()
        return mse + kl_weight * kl, {"mse": mse.detach(), "kl": kl.detach()}
