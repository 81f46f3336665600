"""Is the diffusion prior slower than the AR prior? Both priors of one model folder, measured
in one run on this machine, in float32:

- parameters, and training: seconds per step at each preset's batch, times the preset's steps;
- sampling: seconds per embedding at batch 1 and 64, network calls, and token positions
  the transformer processes; the diffusion prior at several step counts with its quality
  (`eval prior` cosine to the true embedding and retrieval among 100), the AR prior with and
  without its key/value cache;
- the whole pipeline: seconds per image at batch 8 with each prior, split prior / the rest.

    python benchmarks/prior_cost.py [--model DIR] [--num 200]

Prints tables and, as its last line, one JSON object.
"""

import argparse
import copy
import json
import time

import torch

from unclip.config import load
from unclip.data import shapes
from unclip.pipelines.dalle2.pipeline import DalleTwoPipeline
from unclip.tasks.evaluate.prior_eval import evaluate_prior
from unclip.train.prior import ARPriorStageConfig, PriorStageConfig

STEPS = (4, 8, 16, 25, 64)  # diffusion prior sampling steps tried


def timed(fn, repeat: int = 3) -> float:
    """Median seconds of `repeat` calls after one warm-up."""
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def train_step_seconds(net, batch: int, cond, null, embed_dim: int) -> float:
    net = copy.deepcopy(net).train()  # the model's own weights stay as loaded
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-4)
    z = torch.nn.functional.normalize(torch.randn(batch, embed_dim), dim=-1)
    rows = {k: v[torch.arange(batch) % len(v)] for k, v in cond.items()}

    def step():
        loss = net.loss(z, rows, null)
        loss.backward()
        opt.step()
        opt.zero_grad()

    return timed(step, 3)


def quality(pipe, prior: str, num: int) -> dict:
    figures = evaluate_prior(pipe, num=num, methods=("prior",), prior=prior)
    return {f"{s}_{k}": v["prior"][k] for s, v in figures.items() for k in ("cosine", "retrieval")}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="pipeline folder with both priors (default: the shipped model)")
    p.add_argument("--num", type=int, default=200, help="eval prompts for the quality figures")
    args = p.parse_args()
    torch.manual_seed(0)
    pipe = DalleTwoPipeline.from_pretrained(args.model)
    diff, ar = pipe.prior, pipe.ar_prior
    prompts = [it.prompt for it in shapes.eval_split(64)]
    cond, null = pipe.text_condition(prompts)
    d, length, k = ar.sizes["embed_dim"], ar.sizes["text_len"], ar.codec.num_components
    result = {"threads": torch.get_num_threads()}
    print(f"{torch.get_num_threads()} threads, float32; caption {length} tokens, AR codes {k}")

    # -- parameters and training
    presets = {"diffusion": load(PriorStageConfig, "configs/shapes/prior.yaml").train,
               "ar": load(ARPriorStageConfig, "configs/shapes/prior_ar.yaml").train}
    nets = {"diffusion": diff, "ar": ar}
    print(f"\n{'prior':<10}{'params (M)':>11}{'batch':>7}{'s/step':>8}{'steps':>7}{'train min':>10}")
    for name, net in nets.items():
        params = sum(p.numel() for p in net.parameters() if p.requires_grad) / 1e6
        s = train_step_seconds(net, presets[name].batch_size, cond, null, d)
        minutes = s * presets[name].steps / 60
        result[f"{name}_params_M"], result[f"{name}_train_s_per_step"] = params, s
        result[f"{name}_train_minutes"] = minutes
        print(f"{name:<10}{params:11.2f}{presets[name].batch_size:7d}{s:8.3f}{presets[name].steps:7d}{minutes:10.1f}")

    # -- sampling cost and quality
    print(f"\n{'sampler':<24}{'calls':>6}{'positions':>10}{'s/emb b=1':>11}{'s/emb b=64':>11}"
          f"{'cosine':>8}{'retr.':>7}{'novel cos':>10}")
    rows = {}

    def report(name, calls, positions, sample, figures):
        one = {kk: v[:1] for kk, v in cond.items()}
        s1, s64 = timed(lambda: sample(one)), timed(lambda: sample(cond)) / 64
        rows[name] = {"network_calls": calls, "positions": positions, "s_per_embedding_b1": s1,
                      "s_per_embedding_b64": s64, **figures}
        print(f"{name:<24}{calls:6d}{positions:10d}{s1:11.4f}{s64:11.5f}{figures['in_distribution_cosine']:8.3f}"
              f"{figures['in_distribution_retrieval']:7.3f}{figures['novel_cosine']:10.3f}")

    best_of = diff.cfg.best_of
    for steps in STEPS:
        diff.cfg.sample_steps = steps
        positions = steps * 2 * best_of * (length + 4)  # [cond; null] x best-of rows of L + 4 tokens
        report(f"diffusion {steps} steps", steps, positions,
               lambda c: diff.sample(c, {kk: v[:1] for kk, v in null.items()}), quality(pipe, "diffusion", args.num))
    diff.cfg.sample_steps = 25
    ar_quality = quality(pipe, "ar", args.num)
    n1 = {kk: v[:1] for kk, v in null.items()}
    report("ar, key/value cache", k, 2 * (length + 2 + k - 1), lambda c: ar.sample(c, n1), ar_quality)
    report("ar, no cache", k, 2 * sum(length + 2 + i for i in range(k)),
           lambda c: ar.sample(c, n1, use_cache=False), ar_quality)
    result["sampling"] = rows
    base = rows["diffusion 25 steps"]
    keep = [s for s in STEPS if rows[f"diffusion {s} steps"]["in_distribution_cosine"] >= base["in_distribution_cosine"] - 0.005
            and rows[f"diffusion {s} steps"]["in_distribution_retrieval"] >= base["in_distribution_retrieval"] - 0.02]
    result["diffusion_lowest_steps_keeping_quality"] = min(keep)
    print(f"lowest diffusion steps within 0.005 cosine and 0.02 retrieval of 25 steps: {min(keep)}")

    # -- the whole pipeline
    print(f"\n{'prior':<10}{'s/img (b=8)':>12}{'prior s/img':>12}{'prior share':>12}")
    batch = prompts[:8]
    for name in ("diffusion", "ar"):
        gens = lambda: [torch.Generator().manual_seed(i) for i in range(8)]
        total = timed(lambda: pipe(batch, generator=gens(), output_type="uint8", prior=name), 2) / 8
        prior_s = timed(lambda: pipe.image_embeds(batch, gens(), prior=name), 3) / 8
        result[f"pipeline_{name}_s_per_image"], result[f"pipeline_{name}_prior_s_per_image"] = total, prior_s
        print(f"{name:<10}{total:12.3f}{prior_s:12.4f}{prior_s / total:12.1%}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
