"""The autoregressive prior (unCLIP Sec. 2.2): caption -> CLIP image embedding as a sequence
of discrete codes (see codec.py), predicted one at a time by a causal transformer.

Sequence: [caption tokens (L), CLIP text embedding, quantised z_i . z_t, code_1 .. code_K-1];
the output at the dot-product token predicts code_1, each code's output the next. The network
is `transformers.GPT2Model` fed embeddings (its own word table unused), so the key/value cache
is transformers'. Classifier-free guidance: the text condition (caption, text embedding and dot
token) is replaced by the empty caption's and a "no dot" token 10% of the time; sampling
mixes the two passes' logits. At sampling time the dot token is drawn uniformly from the
buckets above a percentile of the training distribution (the paper: the top half).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unclip.config import check
from unclip.diffusion.guidance import drop_cond
from unclip.diffusion.sampling import Generators, rand
from unclip.models.autoregressive import ARConfig, make_gpt, sample_tokens
from unclip.models.prior.codec import EmbeddingCodec
from unclip.models.prior.diffusion_prior import TEXT_KEYS
from unclip.runtime.weights import load_sized, save_sized


@dataclass
class ARPriorConfig(ARConfig):
    buckets: int = 1024  # per PCA component, and for the dot product (the paper's count)
    max_rel_mse: float = 0.01  # PCA keeps the fewest components under this error (the paper: < 1%)
    text_drop_prob: float = 0.1
    guidance_scale: float = 2.0
    dot_percentile: float = 50.0  # sample z_i . z_t from above this percentile (the paper: 50)

    def __post_init__(self):
        super().__post_init__()
        check(self.buckets >= 2, "buckets", "must be at least 2")
        check(0 < self.max_rel_mse < 1, "max_rel_mse", "must be in (0, 1)")
        check(0 <= self.text_drop_prob < 1, "text_drop_prob", "must be in [0, 1)")
        check(math.isfinite(self.guidance_scale) and self.guidance_scale >= 0, "guidance_scale", "must be >= 0")
        check(0 <= self.dot_percentile < 100, "dot_percentile", "must be in [0, 100)")


class ARPrior(nn.Module):
    """Codec + causal transformer. Conditions are the diffusion prior's dicts (text_embed,
    text_encodings, mask); `null` is the empty caption's (batch 1)."""

    def __init__(self, cfg: ARPriorConfig, embed_dim: int, text_len: int, text_width: int, num_components: int):
        super().__init__()
        self.cfg = cfg
        self.sizes = {"embed_dim": embed_dim, "text_len": text_len, "text_width": text_width,
                      "num_components": num_components}
        self.codec = EmbeddingCodec(embed_dim, num_components, cfg.buckets)
        self.text_in = nn.Linear(text_width, cfg.width)  # caption token states
        self.embed_in = nn.Linear(embed_dim, cfg.width)  # CLIP text embedding
        self.dot_in = nn.Embedding(cfg.buckets + 1, cfg.width)  # last row: no dot product (text dropped)
        self.code_in = nn.Embedding(cfg.buckets, cfg.width)
        self.head = nn.Linear(cfg.width, cfg.buckets)
        self.gpt = make_gpt(cfg, text_len + 2 + num_components, self.text_in, self.embed_in, self.dot_in,
                            self.code_in, self.head)

    @property
    def no_dot(self) -> int:
        return self.cfg.buckets

    @property
    def prefix_len(self) -> int:
        return self.sizes["text_len"] + 2

    @classmethod
    def from_data(cls, cfg: ARPriorConfig, image_embed: torch.Tensor, text_embed: torch.Tensor,
                  text_len: int, text_width: int) -> ARPrior:
        """A fresh prior whose codec is fitted to the training embeddings (N, D)."""
        codec = EmbeddingCodec.fit(image_embed, text_embed, cfg.max_rel_mse, cfg.buckets)
        prior = cls(cfg, image_embed.shape[1], text_len, text_width, codec.num_components)
        prior.codec.load_state_dict(codec.state_dict())
        return prior

    def save_pretrained(self, path) -> None:
        save_sized(self, path)

    @classmethod
    def from_pretrained(cls, path, cfg: ARPriorConfig, torch_dtype=None) -> ARPrior:
        return load_sized(cls, path, cfg, torch_dtype)

    def to(self, *args, **kwargs):
        super().to(*args, **kwargs)
        self.codec.float()
        return self

    # -- the sequence ----------------------------------------------------------------------------
    def prefix(self, cond: dict, dot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embedded prefix (B, L + 2, W) and its attention mask (B, L + 2)."""
        dtype = self.head.weight.dtype
        x = torch.cat([self.text_in(cond["text_encodings"].to(dtype)),
                       self.embed_in(cond["text_embed"].to(dtype))[:, None], self.dot_in(dot)[:, None]], dim=1)
        mask = torch.cat([cond["mask"].long(), torch.ones_like(cond["mask"][:, :2], dtype=torch.long)], dim=1)
        return x, mask

    def logits(self, cond: dict, dot: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Logits (B, n + 1, buckets) for codes 1..n+1 given codes (B, n) 1..n, without a cache."""
        x, mask = self.prefix(cond, dot)
        x = torch.cat([x, self.code_in(codes)], dim=1)
        mask = torch.cat([mask, torch.ones_like(codes)], dim=1)
        h = self.gpt(inputs_embeds=x, attention_mask=mask).last_hidden_state
        return self.head(h[:, self.prefix_len - 1:]).float()

    def loss(self, image_embed: torch.Tensor, cond: dict, null: dict) -> torch.Tensor:
        """Cross-entropy of every code; the text condition is dropped with text_drop_prob."""
        codes = self.codec.encode(image_embed)
        cond = {**{k: cond[k] for k in TEXT_KEYS}, "dot": self.codec.encode_dot(image_embed, cond["text_embed"])}
        null = {**{k: null[k] for k in TEXT_KEYS}, "dot": torch.full((1,), self.no_dot, device=codes.device)}
        cond, _ = drop_cond(cond, null, self.cfg.text_drop_prob)
        logits = self.logits(cond, cond["dot"], codes[:, :-1])
        return F.cross_entropy(logits.flatten(0, 1), codes.flatten())

    # -- sampling --------------------------------------------------------------------------------
    def sample_dot(self, b: int, generator: Generators, device, percentile: float) -> torch.Tensor:
        """Dot tokens drawn uniformly from the buckets above `percentile` (equal-count buckets, so
        this samples z_i . z_t from that part of its training distribution)."""
        low = min(int(percentile / 100 * self.cfg.buckets), self.cfg.buckets - 1)
        u = rand((b,), generator, device)
        return (low + (u * (self.cfg.buckets - low)).long()).clamp_max(self.cfg.buckets - 1)

    @torch.no_grad()
    def sample_codes(self, cond: dict, null: dict, *, guidance_scale: float | None = None,
                     temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
                     dot_percentile: float | None = None, generator: Generators = None,
                     use_cache: bool = True) -> torch.Tensor:
        """Codes (B, K), one code per network call with the cache (the whole sequence per call
        without). Settings left None are the config's. `generator`: one, or one per caption."""
        c = self.cfg
        scale = c.guidance_scale if guidance_scale is None else guidance_scale
        temperature = c.temperature if temperature is None else temperature
        top_k, top_p = (c.top_k if top_k is None else top_k), (c.top_p if top_p is None else top_p)
        percentile = c.dot_percentile if dot_percentile is None else dot_percentile
        b, device = cond["text_embed"].shape[0], cond["text_embed"].device
        dot = self.sample_dot(b, generator, device, percentile)
        guided = scale != 1.0
        if guided:  # [cond; null] in one batch
            cond = {k: torch.cat([cond[k], null[k].to(cond[k].dtype).expand_as(cond[k])]) for k in TEXT_KEYS}
            dot = torch.cat([dot, torch.full_like(dot, self.no_dot)])
        x, mask = self.prefix(cond, dot)
        return sample_tokens(self.gpt, x, mask, self.code_in, self.head, self.codec.num_components,
                             generator=generator, guidance_scale=scale, temperature=temperature, top_k=top_k,
                             top_p=top_p, use_cache=use_cache)

    @torch.no_grad()
    def sample(self, cond: dict, null: dict, **kw) -> torch.Tensor:
        """L2-normalised image embeddings (B, D); keywords as `sample_codes`."""
        return self.codec.decode(self.sample_codes(cond, null, **kw))
