"""The AR prior's view of a CLIP image embedding (unCLIP Sec. 2.2): a short sequence of
discrete codes.

"we reduce the dimensionality of the CLIP image embeddings z_i by applying Principal Component
Analysis (PCA) ... we quantize each of the [kept] dimensions into 1,024 discrete buckets."

`EmbeddingCodec.fit` keeps the fewest leading principal components that reconstruct the
training embeddings with relative MSE under a bound (error over the embeddings' total
variance), and sets each component's bucket edges at the training set's quantiles, so every
bucket is used equally often. The basis, mean, edges and bucket centres are buffers: they are
saved with the model. The dot product z_i . z_t is quantised the same way (`dot_edges`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def quantile_edges(values: torch.Tensor, buckets: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inner edges (..., buckets - 1) and centres (..., buckets) of equal-count buckets of
    `values` (..., N), per leading row."""
    q = torch.linspace(0, 1, 2 * buckets + 1, dtype=torch.float64)
    qs = torch.quantile(values.double(), q, dim=-1).movedim(0, -1).float()  # (..., 2n + 1)
    return qs[..., 2:-1:2].contiguous(), qs[..., 1::2].contiguous()


def bucketize(values: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Bucket indices of values (B, K) by per-column inner edges (K, n - 1)."""
    return torch.searchsorted(edges, values.t().contiguous()).t()


class EmbeddingCodec(nn.Module):
    """PCA to `num_components`, then `buckets` quantile buckets per component."""

    def __init__(self, embed_dim: int, num_components: int, buckets: int):
        super().__init__()
        self.buckets = buckets
        self.register_buffer("mean", torch.zeros(embed_dim))
        self.register_buffer("basis", torch.zeros(num_components, embed_dim))  # rows: components
        self.register_buffer("edges", torch.zeros(num_components, buckets - 1))
        self.register_buffer("centres", torch.zeros(num_components, buckets))
        self.register_buffer("dot_edges", torch.zeros(buckets - 1))

    @property
    def num_components(self) -> int:
        return self.basis.shape[0]

    @staticmethod
    def components_for(image_embed: torch.Tensor, max_rel_mse: float) -> int:
        """The fewest leading components whose reconstruction error is under `max_rel_mse`."""
        centred = image_embed.double() - image_embed.double().mean(0)
        var = torch.linalg.svdvals(centred) ** 2
        left = 1 - var.cumsum(0) / var.sum()  # relative MSE with k + 1 components
        return int((left < max_rel_mse).nonzero()[0]) + 1

    @classmethod
    def fit(cls, image_embed: torch.Tensor, text_embed: torch.Tensor, max_rel_mse: float,
            buckets: int) -> EmbeddingCodec:
        """From the training set's L2-normalised image and text embeddings (N, D)."""
        k = cls.components_for(image_embed, max_rel_mse)
        codec = cls(image_embed.shape[1], k, buckets)
        mean = image_embed.double().mean(0)
        _, _, vt = torch.linalg.svd(image_embed.double() - mean, full_matrices=False)
        codec.mean.copy_(mean.float())
        codec.basis.copy_(vt[:k].float())
        coords = codec.project(image_embed)  # (N, K)
        edges, centres = quantile_edges(coords.t(), buckets)
        codec.edges.copy_(edges)
        codec.centres.copy_(centres)
        codec.dot_edges.copy_(quantile_edges((image_embed * text_embed).sum(-1), buckets)[0])
        return codec

    def project(self, image_embed: torch.Tensor) -> torch.Tensor:
        """PCA coordinates (B, K), in order of decreasing variance."""
        return (image_embed.float() - self.mean) @ self.basis.t()

    def unproject(self, coords: torch.Tensor) -> torch.Tensor:
        return coords @ self.basis + self.mean

    def encode(self, image_embed: torch.Tensor) -> torch.Tensor:
        """Codes (B, K) in [0, buckets)."""
        return bucketize(self.project(image_embed), self.edges)

    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        """PCA coordinates (B, K): each code's bucket centre."""
        return self.centres.gather(1, codes.t()).t()

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings (B, D) from codes (B, K)."""
        return F.normalize(self.unproject(self.dequantize(codes)), dim=-1)

    def encode_dot(self, image_embed: torch.Tensor, text_embed: torch.Tensor) -> torch.Tensor:
        """The quantised z_i . z_t (B,) in [0, buckets)."""
        dot = (image_embed.float() * text_embed.float()).sum(-1)
        return torch.searchsorted(self.dot_edges, dot.contiguous())
