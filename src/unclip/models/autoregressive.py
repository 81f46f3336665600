"""Sampling a causal transformer one token at a time (the AR prior; DALL-E 1 next to it).

The network is a `transformers.GPT2Model` fed embeddings; the caller supplies the embedded
prefix, how a token is embedded and how a hidden state becomes logits. With a key/value cache
each token costs one call on one position; without one, the whole sequence is rerun for every
token (kept for tests and for the cost benchmark, which compares the two).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from transformers import DynamicCache, GPT2Config, GPT2Model

from unclip.config import check
from unclip.diffusion.sampling import Generators, rand


@dataclass
class ARConfig:
    """The causal transformer's size and the token sampler's defaults, shared by the AR prior's
    and DALL-E 1's configs (which add their own fields)."""

    width: int = 256
    num_layers: int = 6
    num_heads: int = 8
    dropout: float = 0.0
    temperature: float = 1.0
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1: off

    def __post_init__(self):
        for name in ("width", "num_layers", "num_heads"):
            check(getattr(self, name) > 0, name, "must be positive")
        check(self.width % self.num_heads == 0, "width", "must be a multiple of num_heads")
        check(self.temperature > 0, "temperature", "must be positive")
        check(self.top_k >= 0, "top_k", "must be >= 0 (0: off)")
        check(0 < self.top_p <= 1, "top_p", "must be in (0, 1]")


def make_gpt(cfg: ARConfig, positions: int, *inputs_and_heads: nn.Module) -> GPT2Model:
    """A GPT2Model of `cfg`'s size for sequences up to `positions`, fed embeddings (its word
    table is unused). The caller's own input and output layers start at GPT-2's scale: at
    PyTorch's N(0, 1) they bury the position embeddings, which alone tell the network where
    in the sequence it is."""
    gpt = GPT2Model(GPT2Config(
        vocab_size=1, n_positions=positions, n_embd=cfg.width, n_layer=cfg.num_layers, n_head=cfg.num_heads,
        resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout, bos_token_id=None,
        eos_token_id=None))
    for layer in inputs_and_heads:
        nn.init.normal_(layer.weight, std=gpt.config.initializer_range)
    return gpt


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """-inf outside the top k tokens and outside the smallest set holding probability top_p."""
    if top_k:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    if top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        before = probs.cumsum(-1) - probs  # the mass of the likelier tokens
        drop = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, order, before >= top_p)
        logits = logits.masked_fill(drop, -math.inf)
    return logits


def draw(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Tokens (B,) by inverse CDF at uniforms u (B,): a sample of softmax(logits) that depends
    on each row's own uniform alone."""
    cdf = logits.float().softmax(-1).cumsum(-1)
    return torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(1)).squeeze(1).clamp_max(logits.shape[-1] - 1)


@torch.no_grad()
def sample_tokens(gpt, prefix: torch.Tensor, mask: torch.Tensor, embed: Callable, head: Callable, length: int, *,
                  generator: Generators = None, guidance_scale: float = 1.0, temperature: float = 1.0,
                  top_k: int = 0, top_p: float = 1.0, use_cache: bool = True) -> torch.Tensor:
    """Tokens (B, length) after an embedded prefix (R, P, W) with attention mask (R, P).
    With guidance_scale != 1 the rows are [cond; null] (R = 2B) and the logits mix as
    null + scale * (cond - null). embed: tokens (R, n) -> (R, n, W); head: states (R, W) ->
    logits (R, V). `generator`: one, or one per row of the batch."""
    guided = guidance_scale != 1.0
    b = prefix.shape[0] // (2 if guided else 1)
    tokens = torch.zeros(b, 0, dtype=torch.long, device=prefix.device)
    cache, inputs = DynamicCache(), prefix  # the cache is filled in place by each call
    for _ in range(length):
        if use_cache:  # the cache goes in by position: its keyword was renamed in transformers 5
            h = gpt(None, cache, inputs_embeds=inputs, attention_mask=mask, use_cache=True).last_hidden_state
        else:
            rows = tokens.repeat(2, 1) if guided else tokens
            h = gpt(inputs_embeds=torch.cat([prefix, embed(rows)], dim=1), attention_mask=mask).last_hidden_state
        logits = head(h[:, -1]).float()
        if guided:
            cond, null = logits.chunk(2)
            logits = null + guidance_scale * (cond - null)
        token = draw(filter_logits(logits / temperature, top_k, top_p), rand((b,), generator, prefix.device))
        tokens = torch.cat([tokens, token[:, None]], dim=1)
        inputs = embed((token.repeat(2) if guided else token)[:, None])
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    return tokens
