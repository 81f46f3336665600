"""The diffusion prior (unCLIP Sec. 2.2): caption -> CLIP image embedding.

"we train a decoder-only Transformer with a causal attention mask on a sequence consisting
of, in order: the encoded text, the CLIP text embedding, an embedding for the diffusion
timestep, the noised CLIP image embedding, and a final embedding whose output from the
Transformer is used to predict the unnoised CLIP image embedding."

The network is `diffusers.PriorTransformer` in exactly that layout, so Karlo's `prior/`
folder loads as it is. Image embeddings are L2-normalised CLIP embeddings, standardised by
the training set's per-dimension mean and std (`clip_mean`, `clip_std`, stored inside the
network's own weights) before diffusion and un-standardised after sampling.

Notation: z_i image embedding, z_t text embedding, x_t the noised standardised z_i.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from diffusers import PriorTransformer
from diffusers.models.attention_processor import AttnProcessor
from torch import nn

from unclip.config import check
from unclip.diffusion.guidance import cfg, drop_cond
from unclip.diffusion.objectives import training_loss
from unclip.diffusion.sampling import Generators, randn, repeat_generators, sample
from unclip.diffusion.schedules import Sampled, Sampler

TEXT_KEYS = ("text_embed", "text_encodings", "mask")  # the whole text condition, all dropped together


@dataclass
class PriorConfig:
    """The prior network and its diffusion process; sampling defaults follow Karlo."""

    num_layers: int = 6
    num_heads: int = 8
    head_dim: int = 32
    dropout: float = 0.0
    timesteps: int = 1000
    schedule: Literal["cosine", "linear"] = "cosine"
    text_drop_prob: float = 0.1  # classifier-free guidance: the paper's rate
    clip_sample_range: float = 5.0  # clamp predicted standardised z_i at each step (Karlo)
    guidance_scale: float = 4.0
    sample_steps: int = 25
    sampler: Sampler = "ddpm"
    best_of: int = 2

    def __post_init__(self):
        check(0 <= self.text_drop_prob < 1, "text_drop_prob", "must be in [0, 1)")
        for name in ("num_layers", "num_heads", "head_dim", "timesteps", "sample_steps", "best_of"):
            check(getattr(self, name) > 0, name, "must be positive")
        check(self.sample_steps <= self.timesteps, "sample_steps", "must be at most timesteps")


def store_statistics(net: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
    """A prior network's `clip_mean` / `clip_std`: the training image embeddings' per-dimension
    mean and std (D,), by which it standardises them."""
    with torch.no_grad():
        net.clip_mean.copy_(mean.view(1, -1))
        net.clip_std.copy_(std.clamp_min(1e-6).view(1, -1))


class DiffusionPrior(Sampled, nn.Module):
    """PriorTransformer plus standardisation, the x0 objective, guidance and best-of-n.

    Conditions are dicts: text_embed (B, D) L2-normalised, text_encodings (B, L, D) per-token
    CLIP states, mask (B, L) bool. `null` is the same for the empty caption (batch 1)."""

    def __init__(self, transformer: PriorTransformer, cfg: PriorConfig):
        super().__init__()
        self.transformer, self.cfg = transformer, cfg
        # Plain matmul attention: SDPA's backward on the CPU is far slower for short sequences.
        self.transformer.set_attn_processor(AttnProcessor())
        self.transformer.clip_mean.requires_grad_(False)  # statistics, not trained weights
        self.transformer.clip_std.requires_grad_(False)
        self.scheduler = self.make_scheduler()

    def scheduler_args(self) -> dict:
        return dict(num_train_timesteps=self.cfg.timesteps, schedule=self.cfg.schedule,
                    prediction_type="sample", clip_sample_range=self.cfg.clip_sample_range)

    @classmethod
    def from_config(cls, cfg: PriorConfig, embed_dim: int, text_len: int) -> DiffusionPrior:
        net = PriorTransformer(
            num_attention_heads=cfg.num_heads, attention_head_dim=cfg.head_dim, num_layers=cfg.num_layers,
            embedding_dim=embed_dim, num_embeddings=text_len, additional_embeddings=4, dropout=cfg.dropout,
        )
        with torch.no_grad():
            net.clip_std.fill_(1.0)
        return cls(net, cfg)

    @classmethod
    def from_pretrained(cls, path, cfg: PriorConfig | None = None, torch_dtype=None) -> DiffusionPrior:
        """Load a PriorTransformer folder (ours or Karlo's `prior/`)."""
        from pathlib import Path

        from unclip.runtime.weights import check_weights, meta_model

        check_weights(Path(path).name, Path(path), None, meta_model(PriorTransformer, Path(path)))
        net = PriorTransformer.from_pretrained(path, torch_dtype=torch_dtype, local_files_only=True, use_safetensors=True)
        return cls(net.eval(), cfg or PriorConfig())

    def save_pretrained(self, path) -> None:
        self.transformer.save_pretrained(path)

    def set_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        store_statistics(self.transformer, mean, std)

    def standardize(self, image_embed: torch.Tensor) -> torch.Tensor:
        net = self.transformer
        return (image_embed.float() - net.clip_mean.float()) / net.clip_std.float()

    def unstandardize(self, x: torch.Tensor) -> torch.Tensor:
        """`PriorTransformer.post_process_latents`, in float32 whatever the network's dtype."""
        return x.float() * self.transformer.clip_std.float() + self.transformer.clip_mean.float()

    def denoise(self, x_t: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
        """Predicted standardised z_i (B, D), float32, from x_t (B, D) at timesteps t (B,);
        the network runs in its own dtype."""
        dtype = self.transformer.dtype
        return self.transformer(
            hidden_states=x_t.to(dtype), timestep=t, proj_embedding=cond["text_embed"].to(dtype),
            encoder_hidden_states=cond["text_encodings"].to(dtype), attention_mask=cond["mask"],
        ).predicted_image_embedding.float()

    def loss(self, image_embed: torch.Tensor, cond: dict, null: dict) -> torch.Tensor:
        """MSE on the unnoised z_i; the text condition (and only it) is replaced by the empty
        caption's with probability text_drop_prob, for classifier-free guidance."""
        cond, _ = drop_cond(cond, {k: null[k] for k in TEXT_KEYS}, self.cfg.text_drop_prob)
        x0 = self.standardize(image_embed)
        alphas = self.scheduler.alphas_cumprod
        return training_loss(lambda x, t: self.denoise(x, t, cond), x0, alphas, prediction_type="sample")

    @torch.no_grad()
    def sample(self, cond: dict, null: dict, *, guidance_scale: float | None = None, steps: int | None = None,
               best_of: int | None = None, generator: Generators = None, sampler: str | None = None) -> torch.Tensor:
        """Draw `best_of` image embeddings per caption and keep the one with the highest dot
        product with its text embedding. Returns L2-normalised z_i (B, D). `generator`: one, or
        one per caption (see `diffusion.sampling.randn`)."""
        scale = self.cfg.guidance_scale if guidance_scale is None else guidance_scale
        n = self.cfg.best_of if best_of is None else best_of
        b, d = cond["text_embed"].shape
        rep = {k: v.repeat_interleave(n, dim=0) for k, v in cond.items()}  # (B * n, ...)
        generator = repeat_generators(generator, n)
        x_T = randn((b * n, d), generator, device=cond["text_embed"].device)
        guided = cfg(self.denoise, rep, {k: null[k] for k in TEXT_KEYS}, scale)
        x0 = sample(guided, x_T, self.scheduler_for(sampler), steps=steps or self.cfg.sample_steps,
                    generator=generator)
        z_i = F.normalize(self.unstandardize(x0).float(), dim=-1).view(b, n, d)
        score = (z_i * F.normalize(cond["text_embed"].float(), dim=-1)[:, None]).sum(-1)  # (B, n)
        return z_i[torch.arange(b), score.argmax(dim=1)]
