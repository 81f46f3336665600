"""Text-to-image retrieval on the shapes evaluation split.

For each subset (in-distribution, novel), the split's items are taken in groups of 100 with
distinct canonical captions; each caption must pick its own image among the group's images."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..clip import ClipEncoder
from ..data import shapes
from ..data.transforms import to_tensor

SUBSETS = ("in_distribution", "novel")


@torch.no_grad()
def retrieval_accuracy(encoder: ClipEncoder, num: int = 500, group: int = 100,
                       seed: int = shapes.EVAL_SEED, batch: int = 100) -> dict:
    """{subset: {"top1": share of captions whose best-matching image is their own,
    "captions": how many were scored}} over the first `num` items of the eval split."""
    encoder.eval()
    items = shapes.eval_split(num, seed)
    results = {}
    for subset in SUBSETS:
        chosen = [it for it in items if it.subset == subset]
        if not chosen:
            continue
        correct = 0
        for g in range(0, len(chosen), group):
            members = chosen[g : g + group]
            images = np.stack([shapes.render(it.scene, encoder.image_size) for it in members])
            img = torch.cat([encoder.embed_image(to_tensor(images[i : i + batch]))
                             for i in range(0, len(members), batch)])
            txt = torch.cat([encoder.embed_text([it.prompt for it in members[i : i + batch]]).text_embed
                             for i in range(0, len(members), batch)])
            sims = F.normalize(txt.float(), dim=-1) @ F.normalize(img.float(), dim=-1).T  # (G, G)
            correct += (sims.argmax(dim=1) == torch.arange(len(members))).sum().item()
        results[subset] = {"top1": correct / len(chosen), "captions": len(chosen)}
    return results
