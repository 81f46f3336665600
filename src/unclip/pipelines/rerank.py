"""CLIP reranking (DALL-E 1, Ramesh et al. 2021, Sec. 2.5): draw n candidates per image and
keep the one whose CLIP image embedding is closest to its caption's text embedding.

Drawing every candidate costs k times one draw. With a threshold, candidates are drawn in
rounds (ROUNDS: 1, 3, 4 for k = 8) and an image stops drawing as soon as a candidate scores at
least the threshold against its caption and, for a single-object shapes caption, the judge
prefers that caption to each of its contrasts (the same caption with another colour or shape):
easy captions cost about one draw, hard ones up to k (benchmarks/rerank_cost.py measured the
threshold against fidelity; benchmarks/compose_policy.py the contrasts: a small judge scores a
blue triangle high against "blue star", since it never saw a blue triangle, but higher still
against "blue triangle" itself). The kept candidate is the highest scoring one drawn.

The judge scores each candidate by the mean of its embeddings over the image and eight copies
shifted by 1/32 of its side (`judge_embedding`): a small CLIP's verdict can turn on a pixel's
move, and averaging over shifts steadies it (benchmarks/rerank_cost.py judges every candidate
both ways; on the shapes model 9 views are right as often or more, and cost little beside
drawing a candidate).

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

from unclip.data import shapes
from unclip.data.embeddings import encode_image, encode_text
from unclip.diffusion.sampling import Generators, repeat_generators
from unclip.models.clip import ClipEncoder

RERANKER = "reranker"  # the scorer's subfolder and component name
CPU_CANDIDATES = 16  # candidates per network call on the CPU (images_per_call)
SHIFT = 1 / 32  # of the judge's side: how far judge_embedding moves its shifted views
ROUNDS = (1, 3, 4)  # candidates per image in each round when reranking may stop early (benchmarks/rerank_cost.py)
CONTRAST_MARGIN = 0.0  # how much a candidate must prefer its caption to every contrast to stop drawing


def shifted(images: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """`images` (B, C, S, S) moved dx px right and dy px down, edge pixels repeated into the gap."""
    s = max(abs(dx), abs(dy))
    if s == 0:
        return images
    side = images.shape[-1]
    padded = F.pad(images, (s, s, s, s), mode="replicate")
    return padded[..., s - dy:s - dy + side, s - dx:s - dx + side]


@torch.no_grad()
def judge_embedding(clip: ClipEncoder, images: torch.Tensor, views: bool = True) -> torch.Tensor:
    """The judge's unit embedding of each image (B, 3, S, S) in [-1, 1]: the mean over the image
    and its eight neighbours SHIFT of its side away (`views`), normalised; one view without."""
    images = images.clamp(-1, 1)
    if not views:
        return encode_image(clip, images)
    s = max(1, round(images.shape[-1] * SHIFT))
    moves = [(dx, dy) for dy in (-s, 0, s) for dx in (-s, 0, s)]
    many = torch.cat([shifted(images, dx, dy) for dx, dy in moves])
    return F.normalize(encode_image(clip, many).view(len(moves), len(images), -1).mean(0), dim=-1)


def unit_text(clip: ClipEncoder, captions: list[str]) -> torch.Tensor:
    return F.normalize(encode_text(clip, captions)["text_embed"].float(), dim=-1)


@torch.no_grad()
def best_of(clip: ClipEncoder, candidates: torch.Tensor, prompts: list[str], n: int,
            views: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Each prompt's best of its n consecutive candidates (B * n, 3, S, S) in [-1, 1]: the
    indices (B,) into `candidates` and every candidate's cosine with its prompt (B, n), by
    `judge_embedding` (one view each without `views`)."""
    scores = verdicts(clip, candidates, prompts, n, views, contrasts=False)[0]
    return scores.argmax(1) + torch.arange(len(prompts), device=scores.device) * n, scores


@torch.no_grad()
def verdicts(clip: ClipEncoder, candidates: torch.Tensor, prompts: list[str], n: int, views: bool = True,
             contrasts: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Every candidate's cosine with its prompt (B, n), and its margin: by how much that beats
    its cosine with the closest of the prompt's contrasts (`shapes.contrast_captions`: the
    caption with another colour or shape; +inf for a prompt without contrasts, or all with
    `contrasts` False)."""
    if len(candidates) != n * len(prompts):
        raise ValueError(f"{len(candidates)} candidates for {len(prompts)} prompts x {n}")
    image = judge_embedding(clip, candidates, views).view(len(prompts), n, -1)
    scores = torch.einsum("bnd,bd->bn", image, unit_text(clip, prompts))
    margins = torch.full_like(scores, float("inf"))
    others = [shapes.contrast_captions(p) if contrasts else [] for p in prompts]
    if any(others):
        text = unit_text(clip, [c for cs in others for c in cs])
        start = 0
        for i, cs in enumerate(others):
            if cs:
                margins[i] = scores[i] - (image[i] @ text[start:start + len(cs)].T).amax(-1)
                start += len(cs)
    return scores, margins


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


def rounds(k: int) -> list[int]:
    """Candidates drawn per image in each round of a reranking that may stop early: ROUNDS,
    the last cut (or repeated) so that they add up to k."""
    out = []
    while sum(out) < k:
        out.append(min(ROUNDS[min(len(out), len(ROUNDS) - 1)], k - sum(out)))
    return out


@torch.no_grad()
def draw_best(draw: Callable, judge: ClipEncoder | None, captions: list[str] | None, total: int, k: int,
              device: torch.device, generator: Generators,
              threshold: float | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`total` images, each the best of its candidates by `judge`. `draw(images, generators,
    n)` draws n candidates of each image in the list `images` (indices), n consecutive rows per
    image, with one generator per row when `generator` is one per image, and returns (candidate
    images at the judge's size, their image embeddings or None); calls hold whole images
    (images_per_call). All k candidates are drawn at once, or with a `threshold` in rounds
    (`rounds(k)`) until one of an image's scores at least `threshold` and beats its contrasts
    (`verdicts`, CONTRAST_MARGIN). Each image's candidates come
    from its own generator, so an image depends on its seed alone. Returns the kept images and
    embeddings (None where draw gives none)."""
    plan = [k] if k == 1 or threshold is None else rounds(k)
    best: list = [None] * total
    score = torch.full((total,), -float("inf"))
    accepted = torch.zeros(total, dtype=torch.bool)
    active = list(range(total))
    for n in plan:
        per_call = images_per_call(n, device, len(active))
        for start in range(0, len(active), per_call):
            images = active[start:start + per_call]
            gens = [generator[i] for i in images] if isinstance(generator, Sequence) else generator
            candidates, z = draw(images, repeat_generators(gens, n), n)
            if k > 1:
                scores, margins = verdicts(judge, candidates, [captions[i] for i in images], n,
                                           contrasts=threshold is not None)
                scores, margins = scores.float().cpu(), margins.float().cpu()
            else:
                scores = margins = torch.zeros(len(images), 1)
            for row, i in enumerate(images):
                j = int(scores[row].argmax())
                if scores[row, j] > score[i]:
                    score[i] = scores[row, j]
                    best[i] = (candidates[row * n + j], None if z is None else z[row * n + j])
                if threshold is not None:
                    accepted[i] |= bool(((scores[row] >= threshold) & (margins[row] >= CONTRAST_MARGIN)).any())
        active = [i for i in active if not accepted[i]]
        if not active:
            break
    images = torch.stack([b[0] for b in best])
    return images, None if best[0][1] is None else torch.stack([b[1] for b in best])


def load_reranker(path: Path, torch_dtype=torch.float32) -> ClipEncoder:
    return ClipEncoder.from_pretrained(Path(path) / RERANKER, torch_dtype).eval()
