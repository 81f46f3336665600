"""The decoder (unCLIP Sec. 2.1): CLIP image embedding (+ caption) -> base-resolution image.

A GLIDE-style UNet (`diffusers.UNet2DConditionModel` in Karlo's layout: ResNet blocks with
scale-shift norm, simple cross-attention blocks below the top level, an `identity` class
embedding that carries the CLIP projection into the timestep embedding), conditioned by
`DecoderConditioning`.

Parameterisation: v-prediction (Salimans & Ho 2022) with fixed variance and DDIM sampling,
not Karlo's epsilon with learned variance. On short CPU runs epsilon-prediction learns the
low frequencies (flat backgrounds, solid fills) last, while v keeps a useful x0 target at
high noise; DDIM is deterministic at eta 0, which DDIM inversion (manipulate.py) needs.

Classifier-free guidance: in training the image embedding becomes the learned null with
probability 0.1 and the caption becomes the empty caption with probability 0.5,
independently (the paper's rates); the null pass at sampling time has both, or with
`guidance_null: text` only the empty caption.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import AttnAddedKVProcessor
from torch import nn

from unclip.config import check
from unclip.diffusion.guidance import cfg, drop_cond
from unclip.diffusion.objectives import training_loss
from unclip.diffusion.sampling import Generators, randn, sample_or_repaint
from unclip.diffusion.schedules import Sampled, Sampler

TEXT_KEYS = ("text_embed", "text_encodings", "mask")


@dataclass
class DecoderConfig:
    """Network size and diffusion settings; the shapes preset is in configs/shapes/decoder.yaml."""

    image_size: int = 32
    block_out_channels: tuple[int, ...] = (64, 128, 192)
    layers_per_block: int = 2
    attention_head_dim: int = 32
    cross_attention_dim: int = 256
    dropout: float = 0.0
    use_text: bool = True  # the caption's per-token states as context beside the 4 image tokens
    prediction_type: Literal["epsilon", "v_prediction"] = "v_prediction"
    snr_gamma: float | None = None  # Min-SNR-gamma loss weighting (diffusion/objectives.py); None: plain MSE
    timesteps: int = 1000
    schedule: Literal["cosine", "linear"] = "cosine"
    image_drop_prob: float = 0.1
    text_drop_prob: float = 0.5
    guidance_scale: float = 8.0
    # What the null pass of guidance drops: "both" (image embedding and caption, the paper) or
    # "text" (the caption only, keeping the image embedding): guidance then pushes along what
    # the caption adds to the embedding, e.g. which shape goes with which colour.
    guidance_null: Literal["both", "text"] = "both"
    sample_steps: int = 25
    sampler: Sampler = "ddim"
    eta: float = 0.0

    def __post_init__(self):
        check(len(self.block_out_channels) >= 2, "block_out_channels", "needs at least two levels")
        check(all(c % 32 == 0 for c in self.block_out_channels), "block_out_channels",
              "must be multiples of 32 (group norm)")
        check(self.image_size % 2 ** (len(self.block_out_channels) - 1) == 0, "image_size",
              "must be divisible by 2 per downsampling level")
        for name in ("image_drop_prob", "text_drop_prob"):
            check(0 <= getattr(self, name) < 1, name, "must be in [0, 1)")
        check(0 < self.sample_steps <= self.timesteps, "sample_steps", "must be in 1..timesteps")
        check(self.guidance_null == "both" or self.use_text, "guidance_null",
              '"text" needs use_text: true')
        check(self.snr_gamma is None or self.snr_gamma > 0, "snr_gamma", "must be positive (or null)")


class Decoder(Sampled, nn.Module):
    """UNet + conditioning + diffusion. Conditions are dicts: image_embed (B, D) and, when the
    text path is on, text_embed, text_encodings, mask (as `data.embeddings.encode_text`)."""

    def __init__(self, unet: UNet2DConditionModel, conditioning, cfg: DecoderConfig):
        super().__init__()
        self.unet, self.text_proj, self.cfg = unet, conditioning, cfg
        # Plain matmul attention: SDPA is no faster here (benchmarks/attention.py, docs/results/attention_cpu.txt).
        self.unet.set_attn_processor(AttnAddedKVProcessor())
        self.scheduler = self.make_scheduler()

    def scheduler_args(self) -> dict:
        return dict(num_train_timesteps=self.cfg.timesteps, schedule=self.cfg.schedule,
                    prediction_type=self.cfg.prediction_type, clip_sample_range=1.0)

    @classmethod
    def from_config(cls, cfg: DecoderConfig, embed_dim: int) -> Decoder:
        from unclip.models.decoder.conditioning import DecoderConditioning

        levels = len(cfg.block_out_channels)
        unet = UNet2DConditionModel(
            sample_size=cfg.image_size, in_channels=3, out_channels=3,
            down_block_types=("ResnetDownsampleBlock2D",) + ("SimpleCrossAttnDownBlock2D",) * (levels - 1),
            up_block_types=("SimpleCrossAttnUpBlock2D",) * (levels - 1) + ("ResnetUpsampleBlock2D",),
            mid_block_type="UNetMidBlock2DSimpleCrossAttn", block_out_channels=cfg.block_out_channels,
            layers_per_block=cfg.layers_per_block, attention_head_dim=cfg.attention_head_dim,
            cross_attention_dim=cfg.cross_attention_dim, class_embed_type="identity",
            resnet_time_scale_shift="scale_shift", dropout=cfg.dropout,
        )
        conditioning = DecoderConditioning(
            clip_embeddings_dim=embed_dim, time_embed_dim=4 * cfg.block_out_channels[0],
            cross_attention_dim=cfg.cross_attention_dim, use_text=cfg.use_text,
        )
        return cls(unet, conditioning, cfg)

    @classmethod
    def from_pretrained(cls, path: str | Path, cfg: DecoderConfig, torch_dtype=None) -> Decoder:
        from unclip.models.decoder.conditioning import DecoderConditioning
        from unclip.runtime.weights import check_weights, meta_model

        path = Path(path)
        check_weights("decoder/unet", path / "unet", None, meta_model(UNet2DConditionModel, path / "unet"))
        check_weights("decoder/text_proj", path / "text_proj", None, meta_model(DecoderConditioning, path / "text_proj"))
        unet = UNet2DConditionModel.from_pretrained(path / "unet", torch_dtype=torch_dtype, local_files_only=True,
                                                    use_safetensors=True)
        proj = DecoderConditioning.from_pretrained(path / "text_proj", torch_dtype=torch_dtype, local_files_only=True,
                                                   use_safetensors=True)
        # NHWC convolutions for sampling: 1.22x faster on this CPU (8 images, 25 guided steps)
        return cls(unet.eval().to(memory_format=torch.channels_last), proj.eval(), cfg)

    def save_pretrained(self, path: str | Path) -> None:
        self.unet.save_pretrained(Path(path) / "unet")
        self.text_proj.save_pretrained(Path(path) / "text_proj")

    def null(self, text_null: dict, guidance_null: str = "both") -> dict:
        """The condition of guidance's null pass: the empty caption and, unless
        `guidance_null` is "text", the learned null image embedding. Keys left out are shared
        with the conditional pass."""
        out = {"image_embed": self.text_proj.null_image_embed()} if guidance_null == "both" else {}
        if self.cfg.use_text:
            out.update({k: text_null[k] for k in TEXT_KEYS})
        return out

    def denoise(self, x_t: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
        """The UNet's output in float32; the networks run in their own dtype."""
        dtype = self.unet.dtype
        context, mask, time_add = self.text_proj({k: v.to(dtype) if v.is_floating_point() else v
                                                  for k, v in cond.items()})
        return self.unet(x_t.to(dtype), t, encoder_hidden_states=context, class_labels=time_add.to(dtype),
                         attention_mask=mask).sample.float()

    def drop(self, cond: dict, text_null: dict) -> dict:
        """Classifier-free guidance dropout: image embedding and caption, independently."""
        null = self.null(text_null)
        cond, _ = drop_cond(cond, {"image_embed": null["image_embed"]}, self.cfg.image_drop_prob)
        if self.cfg.use_text:
            cond, _ = drop_cond(cond, {k: null[k] for k in TEXT_KEYS}, self.cfg.text_drop_prob)
        return cond

    def loss(self, x0: torch.Tensor, cond: dict, text_null: dict) -> torch.Tensor:
        """x0: images (B, 3, S, S) in [-1, 1] at the base resolution."""
        cond = self.drop(cond, text_null)
        return training_loss(lambda x, t: self.denoise(x, t, cond), x0, self.scheduler.alphas_cumprod,
                             prediction_type=self.cfg.prediction_type, snr_gamma=self.cfg.snr_gamma)

    @torch.no_grad()
    def sample(self, cond: dict, text_null: dict, *, guidance_scale: float | None = None,
               steps: int | None = None, eta: float | None = None, generator: Generators = None,
               x_T: torch.Tensor | None = None, sampler: str | None = None,
               inpaint: tuple | None = None, callback=None) -> torch.Tensor:
        """Images (B, 3, S, S) in [-1, 1]; from `x_T` if given (e.g. a DDIM inversion).
        `inpaint`: (known images, keep mask, resample), see `diffusion.sampling.repaint`;
        `callback`: as `diffusion.sampling.sample`'s (not with inpaint)."""
        scale = self.cfg.guidance_scale if guidance_scale is None else guidance_scale
        b, s = cond["image_embed"].shape[0], self.cfg.image_size
        if x_T is None:
            x_T = randn((b, 3, s, s), generator, device=cond["image_embed"].device)
        guided = cfg(self.denoise, cond, self.null(text_null, self.cfg.guidance_null), scale)
        seen = {} if callback is None else {"callback": callback}
        x0 = sample_or_repaint(guided, x_T, self.scheduler_for(sampler), steps=steps or self.cfg.sample_steps,
                               eta=self.cfg.eta if eta is None else eta, generator=generator, inpaint=inpaint, **seen)
        return x0.clamp(-1, 1)
