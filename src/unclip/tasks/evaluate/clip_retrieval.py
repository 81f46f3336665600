"""Text-to-image retrieval on the shapes evaluation split.

For each subset (in-distribution, novel), the split's items are taken in groups of 100 with
distinct canonical captions; each caption must pick its own image among the group's images."""

from __future__ import annotations

import numpy as np
import torch

from unclip.data import shapes
from unclip.data.embeddings import encode_image, encode_text
from unclip.data.transforms import to_tensor
from unclip.models.clip import ClipEncoder

SUBSETS = ("in_distribution", "novel")


def by_subset(items: list[shapes.EvalItem]):
    """(subset, its items) for each subset that has items, in SUBSETS order."""
    for subset in SUBSETS:
        chosen = [it for it in items if it.subset == subset]
        if chosen:
            yield subset, chosen


@torch.no_grad()
def true_image_embeds(clip: ClipEncoder, items: list[shapes.EvalItem], batch: int = 100) -> torch.Tensor:
    """CLIP embeddings (N, D), L2-normalised, of the scenes that eval items describe."""
    return torch.cat([
        encode_image(clip, to_tensor(np.stack([shapes.render(it.scene, clip.image_size)
                                               for it in items[i : i + batch]])))
        for i in range(0, len(items), batch)
    ])


def retrieval_hits(queries: torch.Tensor, keys: torch.Tensor, group: int = 100) -> int:
    """How many queries have their own key (same row) as the nearest among their group's keys."""
    hits = 0
    for g in range(0, len(queries), group):
        sims = queries[g : g + group] @ keys[g : g + group].T  # (G, G)
        hits += (sims.argmax(dim=1) == torch.arange(len(sims))).sum().item()
    return hits


@torch.no_grad()
def retrieval_accuracy(clip: ClipEncoder, num: int = 500, group: int = 100,
                       seed: int = shapes.EVAL_SEED, batch: int = 100) -> dict:
    """{subset: {"top1": share of captions whose best-matching image is their own,
    "captions": how many were scored}} over the first `num` items of the eval split."""
    clip.eval()
    items = shapes.eval_split(num, seed)
    results = {}
    for subset, chosen in by_subset(items):
        images = true_image_embeds(clip, chosen, batch)
        texts = torch.cat([encode_text(clip, [it.prompt for it in chosen[i : i + batch]])["text_embed"]
                           for i in range(0, len(chosen), batch)])
        results[subset] = {"top1": retrieval_hits(texts, images, group) / len(chosen), "captions": len(chosen)}
    return results
