"""DALL-E 1 beside unCLIP on the shapes world: the same eval prompts, scorer, CLIP, upsampler
cascade (32 -> 64 -> 128 px) and machine, in one run.

Quality, on the first NUM eval prompts at 128 px: `unclip eval shapes` figures (single objects
all right, two objects, the same on novel colour-shape pairs), CLIP score, diversity (mean
pairwise CLIP-embedding distance of 4 samples for each of the first DIVERSITY prompts);
DALL-E 1 with its reranking and upsamplers, with bicubic in their place, and without reranking.
The dVAE's reconstruction PSNR of eval renders, and its ceiling: the eval prompts' true renders
through the dVAE and the upsamplers, scored. Cost: parameters per stage, seconds per image
at batch 1 and 16 split by stage (the transformer with and without its key/value cache, with
and without reranking), and training time: each preset stage's seconds per step measured here
times its steps.

    python benchmarks/dalle1_vs_unclip.py [--unclip DIR] [--dalle1 DIR] [--num 500] [--diversity 50]

Prints markdown tables and, as its last line, one JSON object.
"""

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from unclip.config import load
from unclip.data import shapes
from unclip.data.stream import make_loader
from unclip.data.transforms import to_tensor, to_uint8
from unclip.diffusion.sampling import repeat_generators
from unclip.models.upsampler import cascade
from unclip.pipelines.dalle1 import DalleOnePipeline
from unclip.pipelines.dalle2.pipeline import DalleTwoPipeline
from unclip.pipelines.locate import resolve_model
from unclip.pipelines.rerank import judged_after
from unclip.tasks.evaluate.image_metrics import psnr
from unclip.tasks.evaluate.shapes_eval import diversity, evaluate_model, headline, score_images
from unclip.train import stage_classes

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "shapes"
PROMPT = "a large red circle on the left on a white background"
# each system's preset stages: (stage, config files whose steps x batch trained the shipped weights)
TRAINING = {
    "unclip": [("clip", ["clip"]), ("prior", ["prior"]),
               ("decoder", ["decoder", "decoder_continue", "decoder_phase3", "decoder_gpu"]),
               ("upsampler", ["upsampler1"]), ("upsampler", ["upsampler2"])],
    "dalle1": [("dvae", ["dvae"]), ("dvae", ["dvae_decoder"]), ("dalle", ["dalle", "dalle_continue"])],
}


def params(module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


def quality(pipe, out: str, num: int, div_prompts: list[str], **settings) -> dict:
    start = time.perf_counter()
    figures = headline(evaluate_model(pipe, out, num=num, **settings))
    figures["diversity"] = diversity(pipe, div_prompts, **settings)
    figures["minutes"] = (time.perf_counter() - start) / 60
    return figures


@torch.no_grad()
def dvae_psnr(dvae, num: int) -> float:
    truth = to_tensor(np.stack([shapes.render(it.scene, dvae.config.image_size) for it in shapes.eval_split(num)]))
    return psnr(dvae.decode(dvae.encode(truth)).clamp(-1, 1), truth)


@torch.no_grad()
def dvae_ceiling(pipe: DalleOnePipeline, out: str, num: int) -> dict:
    """The eval prompts' true renders through the dVAE (encode, decode) and the upsamplers,
    scored like generated images: what a transformer that wrote the true codes would reach."""
    items, images = shapes.eval_split(num), []
    for start in range(0, num, 25):
        chunk = items[start:start + 25]
        truth = to_tensor(np.stack([shapes.render(it.scene, pipe.dvae.config.image_size) for it in chunk]))
        recon = pipe.dvae.decode(pipe.dvae.encode(truth)).float().clamp(-1, 1)
        images.append(to_uint8(cascade(pipe.upsamplers, recon, generator=torch.Generator().manual_seed(start))))
    return headline(score_images(np.concatenate(images), [it.prompt for it in items], out, pipe))


def clock(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


@torch.no_grad()
def unclip_split(pipe: DalleTwoPipeline, b: int) -> dict:
    prompts, gens = [PROMPT] * b, [torch.Generator().manual_seed(i) for i in range(b)]
    z, t_prior = clock(lambda: pipe.image_embeds(prompts, gens))
    x, t_dec = clock(lambda: pipe.decode(z, prompts, generator=gens))
    _, t_up = clock(lambda: pipe.upsample(x, generator=gens))
    return {"prior": t_prior / b, "decoder": t_dec / b, "upsamplers": t_up / b}


@torch.no_grad()
def dalle_split(pipe: DalleOnePipeline, b: int, rerank: int, use_cache: bool = True) -> dict:
    prompts, gens = [PROMPT] * b, [torch.Generator().manual_seed(i) for i in range(b)]
    ids, mask = pipe.tokenize(prompts)
    codes, t_tr = clock(lambda: pipe.transformer.sample(
        ids.repeat_interleave(rerank, 0), mask.repeat_interleave(rerank, 0),
        generator=[torch.Generator().manual_seed(i) for i in range(b * rerank)], use_cache=use_cache))
    images, t_dvae = clock(lambda: pipe.dvae.decode(codes).float().clamp(-1, 1))
    after = judged_after(images.shape[-1], pipe.upsamplers, pipe.judge) if rerank > 1 else 0
    images, t_judged = clock(lambda: cascade(pipe.upsamplers[:after], images,
                                             generator=repeat_generators(gens, rerank)))
    (best, _), t_rerank = clock(lambda: pipe.rerank(images, prompts, rerank))
    _, t_up = clock(lambda: cascade(pipe.upsamplers[after:], best, generator=gens))
    return {"transformer": t_tr / b, "dvae": t_dvae / b, "rerank": t_rerank / b,
            "upsamplers": (t_judged + t_up) / b}


def median_split(reps: int, fn, *args) -> dict:
    runs = [fn(*args) for _ in range(reps)]
    split = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    split["total"] = sum(split.values())
    return split


def train_seconds(stage: str, config: str, overrides: list[str], steps: int = 3) -> tuple[float, int]:
    """Median seconds per optimizer step of a preset stage here (after one warm-up), and its batch."""
    config_cls, stage_cls = stage_classes(stage)
    cfg = load(config_cls, CONFIGS / f"{config}.yaml", overrides)
    st = stage_cls(cfg)
    module = st.module.train()
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-5)
    batches = iter(make_loader(st.source(), cfg.train.batch_size, workers=0))
    times = []
    for _ in range(steps + 1):
        batch = next(batches)
        start = time.perf_counter()
        module(batch).backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:]), cfg.train.batch_size


def training_cost(dalle_folder: Path) -> dict:
    """CPU minutes to train each system's preset stages: seconds per step here x steps (the
    decoder's four phases, one on a GPU, counted as images at the first phase's rate)."""
    clip = str(resolve_model(None) / "clip")
    tmp = tempfile.mkdtemp()
    overrides = {"prior": [f"clip={clip}", f"cache={tmp}/cache", "cache_size=1024"], "decoder": [f"clip={clip}"],
                 "dvae": [f"init={dalle_folder}"], "dalle": [f"clip={clip}", f"dvae={dalle_folder}"]}
    cost = {}
    for system, stages in TRAINING.items():
        for stage, configs in stages:
            seconds, batch = train_seconds(stage, configs[0], overrides.get(stage, []))
            trains = [load(stage_classes(stage)[0], CONFIGS / f"{c}.yaml").train for c in configs]
            images = sum(t.steps * t.batch_size for t in trains)
            cost[f"{system}/{configs[0]}"] = {"s_per_step": seconds, "batch": batch, "images": images,
                                              "cpu_minutes": seconds / batch * images / 60}
            print(f"train {system}/{configs[0]}: {seconds:.2f} s/step at batch {batch}", flush=True)
    return cost


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--unclip", help="unCLIP model folder (default: the shipped model)")
    p.add_argument("--dalle1", default="dalle1", help="DALL-E 1 model folder (default: the shipped one)")
    p.add_argument("--num", type=int, default=500, help="eval prompts per row")
    p.add_argument("--diversity", type=int, default=50, help="prompts with 4 samples each, for diversity")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    p.add_argument("--out", default="runs/dalle1-vs-unclip", help="eval reports and grids, one folder per row")
    args = p.parse_args()
    unclip = DalleTwoPipeline.from_pretrained(args.unclip)
    dalle_folder = resolve_model(args.dalle1)
    dalle = DalleOnePipeline.from_pretrained(dalle_folder)
    print(f"{torch.get_num_threads()} threads, fp32; {args.num} eval prompts; diversity over {args.diversity} x 4")
    n = dalle.transformer.cfg.rerank
    rows = {"unCLIP": (unclip, {}),
            f"DALL-E 1, rerank {n}": (dalle, {"rerank": n}),
            f"DALL-E 1, rerank {n}, bicubic": (dalle, {"rerank": n, "upscale": "bicubic"}),
            "DALL-E 1, rerank 1, bicubic": (dalle, {"rerank": 1, "upscale": "bicubic"})}
    cost = training_cost(dalle_folder)  # first: the cheap parts, so that a slip shows early
    recon = dvae_psnr(dalle.dvae, args.num)
    ceiling = dvae_ceiling(dalle, f"{args.out}/dvae-ceiling", args.num)
    sizes = {"unCLIP": {"clip": params(unclip.models.clip), "prior": params(unclip.models.prior),
                        "decoder": params(unclip.models.decoder), "upsamplers": sum(map(params, unclip.upsamplers))},
             "DALL-E 1": {"clip": params(dalle.clip), "dvae": params(dalle.dvae),
                          "transformer": params(dalle.transformer), "upsamplers": sum(map(params, dalle.upsamplers))}}
    unclip_split(unclip, 1), dalle_split(dalle, 1, n)  # warm-up
    speed = {}
    for b in args.batches:
        reps = 3 if b == 1 else 1
        speed[f"unCLIP b{b}"] = median_split(reps, unclip_split, unclip, b)
        speed[f"DALL-E 1 rerank {n} b{b}"] = median_split(reps, dalle_split, dalle, b, n)
        speed[f"DALL-E 1 rerank {n} no cache b{b}"] = median_split(reps, dalle_split, dalle, b, n, False)
        speed[f"DALL-E 1 rerank 1 b{b}"] = median_split(reps, dalle_split, dalle, b, 1)
        for k in list(speed)[-4:]:
            print(k, json.dumps(speed[k]), flush=True)
    div_prompts = [it.prompt for it in shapes.eval_split(args.diversity)]
    results = {}
    for i, (label, (pipe, settings)) in enumerate(rows.items()):
        results[label] = quality(pipe, f"{args.out}/{i}", args.num, div_prompts, **settings)
        print(label, json.dumps(results[label]), flush=True)

    print("\n| system | single all right | two objects | novel single | novel two | CLIP score | diversity |")
    print("|---|---|---|---|---|---|---|")
    for label, f in results.items():
        print(f"| {label} | {f['single']:.3f} | {f['two']:.3f} | {f['novel_single']:.3f} | {f['novel_two']:.3f} "
              f"| {f['clip_score']:.3f} | {f['diversity']:.3f} |")
    print(f"\ndVAE reconstruction of {args.num} eval renders: {recon:.2f} dB PSNR; scored after the "
          "upsamplers (a transformer's ceiling): " + ", ".join(f"{k} {v:.3f}" for k, v in ceiling.items()))
    print("\n| parameters (M) | stages |\n|---|---|")
    print("| unCLIP | " + ", ".join(f"{k} {v:.2f}" for k, v in sizes["unCLIP"].items()) + " |")
    print("| DALL-E 1 | " + ", ".join(f"{k} {v:.2f}" for k, v in sizes["DALL-E 1"].items()) + " |")
    print("\n| s/image | stages | total |\n|---|---|---|")
    for label, split in speed.items():
        stages = ", ".join(f"{k} {v:.3f}" for k, v in split.items() if k != "total")
        print(f"| {label} | {stages} | {split['total']:.3f} |")
    print("\n| training (preset) | s/step x batch | images | CPU minutes |\n|---|---|---|---|")
    for label, c in cost.items():
        print(f"| {label} | {c['s_per_step']:.2f} x {c['batch']} | {c['images']:,} | {c['cpu_minutes']:.0f} |")
    print(json.dumps({"num": args.num, "diversity_prompts": args.diversity, "quality": results,
                      "dvae_psnr": recon, "dvae_ceiling": ceiling, "params_m": sizes, "s_per_image": speed, "training": cost}))


if __name__ == "__main__":
    main()
