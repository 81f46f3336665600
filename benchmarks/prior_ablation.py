"""The paper's Sec. 5.1 ablation ("importance of the prior") on the shapes world, with one
decoder: what gives the decoder its image embedding.

  diffusion  the diffusion prior's sample (the default)
  ar         the AR prior's sample
  eclipse    the ECLIPSE prior's one-pass prediction
  text       the caption's CLIP text embedding in place of an image embedding
  none       the decoder's null image embedding: the caption alone

For each: `unclip eval shapes` figures on the first NUM eval prompts (single objects all
right, two objects all right, the same for novel colour-shape pairs), CLIP score, and
diversity: the mean pairwise cosine distance of the CLIP image embeddings of 4 samples for
each of the first DIVERSITY prompts; and the seconds of one prior call per image (a batch of
16 captions, warm, median of 5), with the CPU it ran on. With --ar-percentiles, the AR prior's
dot-product percentile measured at the embedding level (`eval prior` figures).

    python benchmarks/prior_ablation.py [--model DIR] [--num 500] [--diversity 50] [--rerank 1]

Prints a markdown table and, as its last line, one JSON object.
"""

import argparse
import json
import statistics
import time

import torch

from unclip import load_pipeline
from unclip.data import shapes
from unclip.runtime.devices import cpu_name
from unclip.tasks.evaluate.prior_eval import evaluate_prior
from unclip.tasks.evaluate.shapes_eval import diversity, evaluate_model, headline
from unclip.validate import PRIORS


def prior_call_seconds(pipe, prior: str, batch: int = 16, repeats: int = 5) -> float:
    """Seconds of one call of `prior` per image: text condition to image embedding, warm."""
    prompts = [it.prompt for it in shapes.eval_split(batch)]
    gens = [torch.Generator().manual_seed(i) for i in range(batch)]
    pipe.image_embeds(prompts, gens, prior=prior)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        pipe.image_embeds(prompts, gens, prior=prior)
        times.append((time.perf_counter() - start) / batch)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="pipeline folder with both priors (default: the shipped model)")
    p.add_argument("--num", type=int, default=500, help="eval prompts per prior")
    p.add_argument("--diversity", type=int, default=50, help="prompts with 4 samples each, for diversity")
    p.add_argument("--priors", nargs="+", default=list(PRIORS), choices=PRIORS)
    p.add_argument("--rerank", type=int, default=1, help="candidates per image (1: the prior's own quality)")
    p.add_argument("--dtype", default="auto", help="float32, bfloat16 or auto (as unclip's commands)")
    p.add_argument("--ar-percentiles", action="store_true", help="also sweep the AR prior's dot percentile")
    p.add_argument("--out", default="runs/prior-ablation", help="eval reports and grids, one folder per prior")
    args = p.parse_args()
    pipe = load_pipeline(args.model, torch_dtype=args.dtype)
    print(f"CPU: {cpu_name()}; {torch.get_num_threads()} threads; {pipe.dtype}; {args.num} eval prompts at "
          f"{args.rerank} candidate(s) per image, diversity over {args.diversity} prompts x 4")
    results = {}
    prompts = [it.prompt for it in shapes.eval_split(args.diversity)]
    for prior in args.priors:
        start = time.perf_counter()
        figures = headline(evaluate_model(pipe, f"{args.out}/{prior}", num=args.num, prior=prior,
                                          rerank=args.rerank))
        figures["diversity"] = diversity(pipe, prompts, prior=prior, rerank=args.rerank)
        figures["prior_call_s"] = prior_call_seconds(pipe, prior)
        figures["minutes"] = (time.perf_counter() - start) / 60
        results[prior] = figures
        print(prior, json.dumps(figures), flush=True)

    percentiles = {}
    for pct in (0.0, 50.0, 85.0, 95.0) if args.ar_percentiles else ():
        pipe.ar_prior.cfg.dot_percentile = pct
        figures = evaluate_prior(pipe, num=args.num, methods=("prior",), prior="ar")
        percentiles[pct] = {s: f["prior"] for s, f in figures.items()}

    print("\n| prior | single all right | two objects | novel single | novel two | CLIP score | diversity "
          "| s per prior call per image |")
    print("|---|---|---|---|---|---|---|---|")
    for prior, f in results.items():
        print(f"| {prior} | {f['single']:.3f} | {f['two']:.3f} | {f['novel_single']:.3f} | {f['novel_two']:.3f} "
              f"| {f['clip_score']:.3f} | {f['diversity']:.3f} | {f['prior_call_s']:.4f} |")
    if percentiles:
        print("\n| AR prior: z_i.z_t drawn above percentile | cosine to truth | retrieval | novel: cosine "
              "| novel: retrieval |")
        print("|---|---|---|---|---|")
    for pct, f in percentiles.items():
        ind, nov = f["in_distribution"], f["novel"]
        print(f"| {pct:.0f} | {ind['cosine']:.3f} | {ind['retrieval']:.3f} | {nov['cosine']:.3f} | {nov['retrieval']:.3f} |")
    print(json.dumps({"num": args.num, "diversity_prompts": args.diversity, "priors": results,
                      "ar_dot_percentile": percentiles}))


if __name__ == "__main__":
    main()
