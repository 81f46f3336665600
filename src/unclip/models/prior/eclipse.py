"""The contrastive one-pass prior: ECLIPSE (Patel et al. 2024, arXiv 2312.04655).

The diffusion prior's transformer without the timestep token, trained to map (noise, caption)
straight to the CLIP image embedding in one forward pass. The loss is a projection term (MSE
to the true image embedding) plus λ times a contrastive term that makes each predicted image
embedding closer to its own caption's CLIP text embedding than to the batch's other captions
(InfoNCE at temperature τ), which keeps the prediction in CLIP's space and on its caption.

The network, `EclipseTransformer`, has the published layout (ECLIPSE's `PriorTransformer`:
diffusers' prior without `time_proj` / `time_embedding`, three extra tokens: the CLIP text
embedding, the input, and the prediction token), so ECLIPSE's Karlo prior folder
(`config.json` + `diffusion_pytorch_model.safetensors`) loads as it is. The published Karlo
prior returns the image embedding directly; our own models predict the standardised embedding
(`clip_mean` / `clip_std`, as the diffusion prior) and L2-normalise it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.attention_processor import AttnProcessor
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from unclip.config import check
from unclip.diffusion.sampling import Generators, randn
from unclip.models.prior.diffusion_prior import store_statistics


class EclipseTransformer(ModelMixin, ConfigMixin):
    """ECLIPSE's prior network: [text encodings; text embedding; input; prediction token]
    through a causal transformer; the prediction token's output is the image embedding."""

    @register_to_config
    def __init__(self, num_attention_heads: int = 32, attention_head_dim: int = 64, num_layers: int = 20,
                 embedding_dim: int = 768, num_embeddings: int = 77, additional_embeddings: int = 3,
                 dropout: float = 0.0, norm_in_type: str | None = None, embedding_proj_norm_type: str | None = None,
                 encoder_hid_proj_type: str | None = "linear", added_emb_type: str | None = "prd",
                 embedding_proj_dim: int | None = None, clip_embed_dim: int | None = None):
        super().__init__()
        inner = num_attention_heads * attention_head_dim
        proj_dim, clip_dim = embedding_proj_dim or embedding_dim, clip_embed_dim or embedding_dim
        if added_emb_type != "prd" or encoder_hid_proj_type != "linear":
            raise ValueError("ECLIPSE priors here have the prediction token and a linear text-encoding projection")
        self.proj_in = nn.Linear(embedding_dim, inner)
        self.embedding_proj_norm = nn.LayerNorm(proj_dim) if embedding_proj_norm_type == "layer" else None
        self.embedding_proj = nn.Linear(proj_dim, inner)
        self.encoder_hidden_states_proj = nn.Linear(embedding_dim, inner)
        self.positional_embedding = nn.Parameter(torch.zeros(1, num_embeddings + additional_embeddings, inner))
        self.prd_embedding = nn.Parameter(torch.zeros(1, 1, inner))
        self.transformer_blocks = nn.ModuleList([
            BasicTransformerBlock(inner, num_attention_heads, attention_head_dim, dropout=dropout,
                                  activation_fn="gelu", attention_bias=True) for _ in range(num_layers)])
        self.norm_in = nn.LayerNorm(inner) if norm_in_type == "layer" else None
        self.norm_out = nn.LayerNorm(inner)
        self.proj_to_clip_embeddings = nn.Linear(inner, clip_dim)
        causal = torch.full((num_embeddings + additional_embeddings,) * 2, -10000.0).triu_(1)[None]
        self.register_buffer("causal_attention_mask", causal, persistent=False)
        self.clip_mean = nn.Parameter(torch.zeros(1, clip_dim))
        self.clip_std = nn.Parameter(torch.zeros(1, clip_dim))

    def forward(self, hidden_states: torch.Tensor, proj_embedding: torch.Tensor,
                encoder_hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, D) input, (B, D) text embedding, (B, L, D) text encodings, (B, L) mask -> (B, D')."""
        b = hidden_states.shape[0]
        if self.embedding_proj_norm is not None:
            proj_embedding = self.embedding_proj_norm(proj_embedding)
        tokens = torch.cat([self.encoder_hidden_states_proj(encoder_hidden_states),
                            self.embedding_proj(proj_embedding)[:, None], self.proj_in(hidden_states)[:, None],
                            self.prd_embedding.to(hidden_states.dtype).expand(b, -1, -1)], dim=1)
        x = tokens + self.positional_embedding.to(tokens.dtype)[:, :tokens.shape[1]]
        mask = None
        if attention_mask is not None:
            pad = (1 - attention_mask.to(x.dtype)) * -10000.0
            pad = F.pad(pad, (0, self.config.additional_embeddings), value=0.0)
            n = x.shape[1]
            mask = (pad[:, None, :] + self.causal_attention_mask[:, :n, :n]).to(x.dtype)
            mask = mask.repeat_interleave(self.config.num_attention_heads, dim=0)
        if self.norm_in is not None:
            x = self.norm_in(x)
        for block in self.transformer_blocks:
            x = block(x, attention_mask=mask)
        return self.proj_to_clip_embeddings(self.norm_out(x)[:, -1])


@dataclass
class EclipseConfig:
    num_layers: int = 6
    num_heads: int = 8
    head_dim: int = 32
    dropout: float = 0.0
    contrastive_weight: float = 0.2  # λ of the contrastive term
    temperature: float = 0.07  # τ of the contrastive term
    standardized: bool = True  # predict (z - clip_mean) / clip_std; False: z itself (the published Karlo prior)
    normalize: bool = True  # L2-normalise the output (unclip's decoders take unit embeddings; Karlo's do not)

    def __post_init__(self):
        for name in ("num_layers", "num_heads", "head_dim"):
            check(getattr(self, name) > 0, name, "must be positive")
        check(self.contrastive_weight >= 0, "contrastive_weight", "must be >= 0")
        check(self.temperature > 0, "temperature", "must be positive")


class EclipsePrior(nn.Module):
    """EclipseTransformer plus its objective and its one-pass sampler. Conditions as the
    diffusion prior's: text_embed (B, D), text_encodings (B, L, D), mask (B, L)."""

    def __init__(self, net: EclipseTransformer, cfg: EclipseConfig):
        super().__init__()
        self.net, self.cfg = net, cfg
        for block in self.net.transformer_blocks:  # plain attention: faster on the CPU for short sequences
            block.attn1.set_processor(AttnProcessor())
        self.net.clip_mean.requires_grad_(False)
        self.net.clip_std.requires_grad_(False)

    @classmethod
    def from_config(cls, cfg: EclipseConfig, embed_dim: int, text_len: int) -> EclipsePrior:
        net = EclipseTransformer(num_attention_heads=cfg.num_heads, attention_head_dim=cfg.head_dim,
                                 num_layers=cfg.num_layers, embedding_dim=embed_dim, num_embeddings=text_len,
                                 dropout=cfg.dropout)
        with torch.no_grad():
            net.clip_std.fill_(1.0)
        return cls(net, cfg)

    @classmethod
    def from_pretrained(cls, path: str | Path, cfg: EclipseConfig | None = None, torch_dtype=None) -> EclipsePrior:
        """Ours, or ECLIPSE's published folder (its config names `PriorTransformer`; read by
        this class, whatever the config says)."""
        from unclip.runtime.weights import check_weights, meta_model

        path = Path(path)
        check_weights(path.name, path, None, meta_model(EclipseTransformer, path))
        net = EclipseTransformer.from_pretrained(path, torch_dtype=torch_dtype, local_files_only=True,
                                                 use_safetensors=True)
        return cls(net.eval(), cfg or EclipseConfig())

    def save_pretrained(self, path) -> None:
        self.net.save_pretrained(path)

    def set_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        store_statistics(self.net, mean, std)

    def predict(self, noise: torch.Tensor, cond: dict) -> torch.Tensor:
        """The network's output in float32: standardised z_i, or z_i itself (cfg.standardized)."""
        dtype = self.net.dtype
        return self.net(noise.to(dtype), cond["text_embed"].to(dtype), cond["text_encodings"].to(dtype),
                        cond["mask"]).float()

    def to_embedding(self, out: torch.Tensor) -> torch.Tensor:
        if self.cfg.standardized:
            out = out * self.net.clip_std.float() + self.net.clip_mean.float()
        return F.normalize(out, dim=-1) if self.cfg.normalize else out

    def loss(self, image_embed: torch.Tensor, cond: dict, null: dict | None = None) -> torch.Tensor:
        """Projection MSE + λ InfoNCE of the predicted embeddings against the batch's captions."""
        noise = torch.randn(image_embed.shape, device=image_embed.device)
        out = self.predict(noise, cond)
        target = image_embed.float()
        if self.cfg.standardized:
            target = (target - self.net.clip_mean.float()) / self.net.clip_std.float()
        projection = F.mse_loss(out, target)
        z = F.normalize(self.to_embedding(out), dim=-1)
        text = F.normalize(cond["text_embed"].float(), dim=-1)
        logits = z @ text.T / self.cfg.temperature
        contrastive = F.cross_entropy(logits, torch.arange(len(z), device=z.device))
        return projection + self.cfg.contrastive_weight * contrastive

    @torch.no_grad()
    def sample(self, cond: dict, null: dict | None = None, *, guidance_scale: float | None = None,
               generator: Generators = None, **_) -> torch.Tensor:
        """Image embeddings (B, D) in one forward pass from noise (one generator, or one per
        row). ECLIPSE has no guidance: `guidance_scale` is accepted and ignored."""
        b = cond["text_embed"].shape[0]
        noise = randn((b, self.net.config.embedding_dim), generator, cond["text_embed"].device)
        return self.to_embedding(self.predict(noise, cond))
