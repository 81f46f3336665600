"""How far can any diffusion prior go on `unclip eval prior`'s retrieval with this CLIP?

An exact prior samples from the true distribution of image embeddings given a caption. Here
that sampler is simulated exactly: each draw is the CLIP embedding of another render of the
caption (`shapes.resample_scene`). Best of n then keeps the draw with the highest dot product
with the caption's text embedding, as `DiffusionPrior.sample` does. Retrieval is scored as in
`unclip eval prior`, against the text-embedding baseline. `--prior N ...` also scores the
model's own prior at those best-of-n (slow on a CPU: about 1 min per 100 captions at n=8).

    python benchmarks/prior_ceiling.py [--model DIR | --clip DIR] [--num 500] [--draws 64] [--prior 2 8]
"""

import argparse
import dataclasses
import time

import numpy as np
import torch
import torch.nn.functional as F

from unclip.data import shapes
from unclip.models.clip import ClipEncoder
from unclip.pipelines.dalle2.pipeline import DalleTwoPipeline
from unclip.tasks.evaluate.clip_retrieval import by_subset, retrieval_hits, true_image_embeds


def best_by_text(draws: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """draws (N, n, D), text (N, D) -> the draw with the highest dot product, (N, D)."""
    score = (draws * F.normalize(text, dim=-1)[:, None]).sum(-1)
    return draws[torch.arange(len(draws)), score.argmax(1)]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", help="pipeline folder (default: the shipped model)")
    p.add_argument("--clip", help="a CLIP folder instead of a pipeline (no --prior then)")
    p.add_argument("--num", type=int, default=500, help="eval items, as `unclip eval prior --num`")
    p.add_argument("--draws", type=int, default=64, help="renders per caption (a power of two)")
    p.add_argument("--prior", type=int, nargs="*", default=[], help="best-of-n to score the prior at")
    args = p.parse_args()
    if args.clip:
        pipe = DalleTwoPipeline(ClipEncoder.from_pretrained(args.clip).eval())
    else:
        pipe = DalleTwoPipeline.from_pretrained(args.model)
    rng = np.random.default_rng(1)
    for subset, items in by_subset(shapes.eval_split(args.num)):
        report(pipe, subset, items, rng, args.draws, args.prior)


@torch.no_grad()
def report(pipe, subset, items, rng, draws, prior_best_of):
    truth = true_image_embeds(pipe.clip, items)
    cond = [pipe.text_condition([it.prompt for it in items[i : i + 100]]) for i in range(0, len(items), 100)]
    text = torch.cat([c["text_embed"] for c, _ in cond])

    def score(pred):
        return retrieval_hits(pred, truth) / len(items)

    print(f"{subset} ({len(items)} captions): text-embedding baseline retrieval {score(text):.4f}")
    renders = torch.stack([
        true_image_embeds(pipe.clip, [dataclasses.replace(it, scene=shapes.resample_scene(it.scene, rng))
                                      for it in items])
        for _ in range(draws)], dim=1)  # (N, draws, D)
    n = 1
    while n <= draws:
        hits = [score(best_by_text(renders[:, s : s + n], text)) for s in range(0, draws, n)]
        print(f"  exact sampler, best of {n:2d}: {np.mean(hits):.4f} (mean of {len(hits)} draws, "
              f"range {min(hits):.4f}-{max(hits):.4f})")
        n *= 2
    for n in prior_best_of:
        t = time.perf_counter()
        g = torch.Generator().manual_seed(0)
        pred = torch.cat([pipe.prior.sample(c, null, best_of=n, generator=g) for c, null in cond])
        print(f"  the model's prior, best of {n:2d}: {score(pred):.4f} ({time.perf_counter() - t:.0f} s)")

if __name__ == "__main__":
    main()
