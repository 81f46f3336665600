"""Diffusion prior speed: sampling throughput (25 steps, guidance, best-of-2) at batch 1 and
64, and training steps/s, for the shapes preset's network size.

    python benchmarks/prior.py [--model DIR]   # a pipeline folder; default: a random prior
"""

import argparse
import time

import torch

from unclip.config import load
from unclip.prior import DiffusionPrior
from unclip.train.prior import PriorStageConfig

D, L = 128, 24  # the shapes CLIP's embedding size and caption length


def timed(fn, repeat):
    fn()
    t = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t) / repeat


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", help="pipeline folder with a prior")
    args = p.parse_args()
    if args.model:
        from unclip.pipeline import UnCLIPPipeline

        prior = UnCLIPPipeline.from_pretrained(args.model).prior
    else:
        prior = DiffusionPrior.from_config(load(PriorStageConfig, "configs/shapes/prior.yaml").model, D, L)
    prior.eval()
    d, length = prior.transformer.config.embedding_dim, prior.transformer.config.num_embeddings

    def cond(b):
        return {"text_embed": torch.randn(b, d), "text_encodings": torch.randn(b, length, d),
                "mask": torch.ones(b, length, dtype=torch.bool)}

    params = sum(p.numel() for p in prior.parameters()) / 1e6
    print(f"prior: {params:.2f} M parameters, {torch.get_num_threads()} threads")
    print(f"{'batch':>6}{'s/batch':>10}{'embeddings/s':>14}   (25 steps, guidance 4, best-of-2)")
    for b in (1, 64):
        c, null = cond(b), cond(1)
        s = timed(lambda: prior.sample(c, null, steps=25, guidance_scale=4.0, best_of=2), 3)
        print(f"{b:6d}{s:10.3f}{b / s:14.1f}")
    prior.train()
    opt = torch.optim.AdamW(prior.parameters(), lr=1e-4)
    z = torch.nn.functional.normalize(torch.randn(256, d), dim=-1)
    c, null = cond(256), cond(1)

    def step():
        with torch.autocast("cpu", torch.bfloat16):
            loss = prior.loss(z, c, null)
        loss.backward()
        opt.step()
        opt.zero_grad()

    s = timed(step, 5)
    print(f"training (batch 256, bf16 autocast): {1 / s:.2f} steps/s, {256 / s:.0f} samples/s")


if __name__ == "__main__":
    main()
