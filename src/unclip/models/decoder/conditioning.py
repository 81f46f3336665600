"""How the CLIP image embedding enters the decoder (unCLIP Sec. 2.1).

"we modify the architecture described in Nichol et al. (2021) by projecting and adding CLIP
embeddings to the existing timestep embedding, and by projecting CLIP embeddings into four
extra tokens of context that are concatenated to the sequence of outputs from the GLIDE text
encoder."

Parameter names follow diffusers' `UnCLIPTextProjModel`, so Karlo's `text_proj/` weights load.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.loaders.peft import PeftAdapterMixin
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


class DecoderConditioning(ModelMixin, ConfigMixin, PeftAdapterMixin):
    """(image_embed, text condition) -> (context tokens, additive time embedding).

    The learned null image embedding of classifier-free guidance lives here too. With
    `use_text` off the caption is ignored and the context is the 4 image tokens alone."""

    @register_to_config
    def __init__(self, *, clip_embeddings_dim: int, time_embed_dim: int, cross_attention_dim: int,
                 clip_extra_context_tokens: int = 4, use_text: bool = True):
        super().__init__()
        self.learned_classifier_free_guidance_embeddings = nn.Parameter(torch.zeros(clip_embeddings_dim))
        self.clip_image_embeddings_project_to_time_embeddings = nn.Linear(clip_embeddings_dim, time_embed_dim)
        self.clip_extra_context_tokens_proj = nn.Linear(
            clip_embeddings_dim, clip_extra_context_tokens * cross_attention_dim)
        if use_text:
            self.embedding_proj = nn.Linear(clip_embeddings_dim, time_embed_dim)
            self.encoder_hidden_states_proj = nn.Linear(clip_embeddings_dim, cross_attention_dim)
            self.text_encoder_hidden_states_norm = nn.LayerNorm(cross_attention_dim)

    def null_image_embed(self) -> torch.Tensor:
        return self.learned_classifier_free_guidance_embeddings[None]  # (1, D)

    def forward(self, cond: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """cond: image_embed (B, D) and, with text, text_embed (B, D), text_encodings (B, L, D),
        mask (B, L). Returns context (B, 4 [+ L], C), its mask, and the time-embedding addend."""
        image_embed = cond["image_embed"]
        b, k = image_embed.shape[0], self.config.clip_extra_context_tokens
        time_add = self.clip_image_embeddings_project_to_time_embeddings(image_embed)
        # Karlo's layout of the 4 tokens: (B, C * 4) viewed as (B, C, 4), then transposed.
        tokens = self.clip_extra_context_tokens_proj(image_embed).reshape(b, -1, k).permute(0, 2, 1)
        mask = torch.ones(b, k, dtype=torch.bool, device=image_embed.device)
        if self.config.use_text:
            time_add = time_add + self.embedding_proj(cond["text_embed"])
            text = self.text_encoder_hidden_states_norm(self.encoder_hidden_states_proj(cond["text_encodings"]))
            tokens = torch.cat([tokens, text], dim=1)
            mask = torch.cat([mask, cond["mask"].bool()], dim=1)
        return tokens, mask, time_add
