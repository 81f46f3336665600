"""CLIP reranking (DALL-E 1, Ramesh et al. 2021, Sec. 2.5): draw n candidates per image and
keep the one whose CLIP image embedding is closest to its caption's text embedding.

The scorer is a model folder's `reranker/` CLIP when it has one, else its own `clip/`. The CLIP
that a prior and decoder were trained on need not be the best judge: the shapes model's own
CLIP tells poorly which colour goes with which shape, so reranking by it does not help
two-object scenes; one trained with hard negatives (swapped colours, shapes, places) does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from .clip import ClipEncoder
from .data.embeddings import encode_image, encode_text
from .diffusion.sampling import Generators, repeat_generators

RERANKER = "reranker"  # the scorer's subfolder and component name
CPU_CANDIDATES = 16  # candidates per network call on the CPU (images_per_call)


@torch.no_grad()
def best_of(clip: ClipEncoder, candidates: torch.Tensor, prompts: list[str], n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each prompt's best of its n consecutive candidates (B * n, 3, S, S) in [-1, 1]: the
    indices (B,) into `candidates` and every candidate's cosine with its prompt (B, n)."""
    if len(candidates) != n * len(prompts):
        raise ValueError(f"{len(candidates)} candidates for {len(prompts)} prompts x {n}")
    image = encode_image(clip, candidates.clamp(-1, 1))
    text = F.normalize(encode_text(clip, prompts)["text_embed"].float(), dim=-1).repeat_interleave(n, dim=0)
    scores = (image * text).sum(-1).view(len(prompts), n)
    return scores.argmax(1) + torch.arange(len(prompts), device=scores.device) * n, scores


def judged_after(side: int, upsamplers: list, judge: ClipEncoder) -> int:
    """How many of the `upsamplers` candidates of `side` px go through before `judge` scores
    them: until they reach its input size. Enlarged by the judge itself, the shapes decoder's
    32 px candidates lose what tells a star from a triangle (measured: the shapes reranker picks
    a right held-out two-object scene for 0.30 of prompts from 32 px candidates, 0.52 from the
    first upsampler's 64 px ones, best of 8); upsampling candidates costs little beside drawing
    them."""
    n = 0
    while n < len(upsamplers) and side < judge.image_size:
        side, n = side * upsamplers[n].cfg.factor, n + 1
    return n


def images_per_call(k: int, device: torch.device, total: int) -> int:
    """How many images' k candidates go through a network in one call: on the CPU about
    CPU_CANDIDATES, since large calls run slower per row there (measured: the decoder 1.5x slower
    per row at 128 guided rows than at 32; upsampler 1 0.51 s per image of 8 candidates at 128
    rows a call, 0.29 at 16); elsewhere all. Chunks hold whole images, so with one generator per
    image each image still depends on its own seed alone."""
    return max(1, CPU_CANDIDATES // k) if device.type == "cpu" else total


@torch.no_grad()
def draw_best(draw: Callable, judge: ClipEncoder | None, captions: list[str] | None, total: int, k: int,
              device: torch.device, generator: Generators) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`total` images, each the best of its k candidates by `judge`, drawn in chunks of whole
    images (images_per_call). `draw(start, stop, generators)` draws the k candidates of images
    start..stop-1, k consecutive rows per image, with one generator per row when `generator`
    is one per image, and returns (candidate images at the judge's size, their image
    embeddings or None). Returns the kept images and embeddings (None where draw gives none)."""
    per_call = images_per_call(k, device, total)
    images, embeds = [], []
    for start in range(0, total, per_call):
        stop = min(start + per_call, total)
        gens = generator[start:stop] if isinstance(generator, Sequence) else generator
        candidates, z = draw(start, stop, repeat_generators(gens, k))
        if k > 1:
            best, _ = best_of(judge, candidates, captions[start:stop], k)
            candidates, z = candidates[best], None if z is None else z[best]
        images.append(candidates)
        embeds.append(z)
    return torch.cat(images), None if embeds[0] is None else torch.cat(embeds)


def load_reranker(path: Path, torch_dtype=torch.float32) -> ClipEncoder:
    return ClipEncoder.from_pretrained(Path(path) / RERANKER, torch_dtype).eval()
