"""DALL-E 1's transformer (Ramesh et al. 2021, Sec. 2.2): one decoder-only stream of the
caption's tokens, then the image's dVAE codes, each predicting the next.

The caption is padded to a fixed length with a padding token learned per position (so a
short caption still fills the prefix with something the network can tell apart); the loss
weighs the image codes 7/8 and the caption's tokens 1/8, as the paper. The network is
`transformers.GPT2Model` fed embeddings, sampled by `autoregressive.sample_tokens` with a
key/value cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unclip.config import check
from unclip.diffusion.sampling import Generators
from unclip.models.autoregressive import ARConfig, make_gpt, sample_tokens
from unclip.runtime.weights import load_sized, save_sized


@dataclass
class DalleConfig(ARConfig):
    text_loss_weight: float = 1 / 8  # the paper's: image codes 7/8, caption tokens 1/8
    rerank: int = 8  # candidates per image, the one CLIP scores highest kept

    def __post_init__(self):
        super().__post_init__()
        check(0 <= self.text_loss_weight < 1, "text_loss_weight", "must be in [0, 1)")
        check(self.rerank > 0, "rerank", "must be positive")


class DalleTransformer(nn.Module):
    def __init__(self, cfg: DalleConfig, text_vocab: int, text_len: int, image_vocab: int, image_len: int):
        super().__init__()
        self.cfg = cfg
        self.sizes = {"text_vocab": text_vocab, "text_len": text_len, "image_vocab": image_vocab, "image_len": image_len}
        self.text_in = nn.Embedding(text_vocab, cfg.width)
        self.pad_in = nn.Embedding(text_len, cfg.width)  # the padding token of each caption position
        self.image_in = nn.Embedding(image_vocab, cfg.width)
        self.text_head = nn.Linear(cfg.width, text_vocab)
        self.image_head = nn.Linear(cfg.width, image_vocab)
        self.gpt = make_gpt(cfg, text_len + image_len, self.text_in, self.pad_in, self.image_in, self.text_head,
                            self.image_head)

    def save_pretrained(self, path) -> None:
        save_sized(self, path)

    @classmethod
    def from_pretrained(cls, path, cfg: DalleConfig, torch_dtype=None) -> DalleTransformer:
        return load_sized(cls, path, cfg, torch_dtype)

    def embed_text(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T, W): token embeddings where mask, each position's padding token elsewhere."""
        return torch.where(mask[..., None], self.text_in(ids), self.pad_in.weight[None, : ids.shape[1]])

    def loss(self, ids: torch.Tensor, mask: torch.Tensor, codes: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Weighted next-token cross-entropy over caption tokens (B, T) and image codes (B, N);
        a caption's padding is not a target."""
        x = torch.cat([self.embed_text(ids, mask), self.image_in(codes[:, :-1])], dim=1)
        h = self.gpt(inputs_embeds=x).last_hidden_state
        t = ids.shape[1]
        text_logits = self.text_head(h[:, : t - 1]).float()
        targets = ids[:, 1:].masked_fill(~mask[:, 1:], -100)  # -100: ignored by cross_entropy
        text = F.cross_entropy(text_logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
        image = F.cross_entropy(self.image_head(h[:, t - 1:]).float().flatten(0, 1), codes.flatten())
        w = self.cfg.text_loss_weight
        return w * text + (1 - w) * image, {"text": text.detach(), "image": image.detach()}

    @torch.no_grad()
    def sample(self, ids: torch.Tensor, mask: torch.Tensor, *, generator: Generators = None,
               temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
               use_cache: bool = True) -> torch.Tensor:
        """Image codes (B, N) for captions (B, T); settings left None are the config's."""
        c = self.cfg
        prefix = self.embed_text(ids, mask)
        return sample_tokens(
            self.gpt, prefix, torch.ones(prefix.shape[:2], dtype=torch.long, device=prefix.device), self.image_in,
            self.image_head, self.sizes["image_len"], generator=generator,
            temperature=c.temperature if temperature is None else temperature,
            top_k=c.top_k if top_k is None else top_k, top_p=c.top_p if top_p is None else top_p,
            use_cache=use_cache)
