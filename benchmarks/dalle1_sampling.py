"""DALL-E 1's sampling settings against quality: `unclip eval shapes` figures on the first NUM eval
prompts (the same prompts and seeds for every setting) and seconds per image, for each setting
given; the folder's defaults (dalle1.json) are chosen from these figures.

    python benchmarks/dalle1_sampling.py --model dalle1 --num 200 \\
        temperature=1.0 temperature=0.8 temperature=0.6 temperature=1.0,top_k=32 rerank=16

A setting is comma-separated key=value items (temperature, top_k, top_p, rerank); keys it leaves
out take the folder's defaults. Prints a markdown table and, as its last line, one JSON object.
"""

import argparse
import json
import time

import torch

from unclip.pipelines.dalle1 import DalleOnePipeline
from unclip.pipelines.locate import resolve_model
from unclip.tasks.evaluate.shapes_eval import evaluate_model, headline

TYPES = {"temperature": float, "top_k": int, "top_p": float, "rerank": int}


def parse_setting(text: str) -> dict:
    setting = {}
    for item in text.split(","):
        key, _, value = item.partition("=")
        if key not in TYPES or not value:
            raise SystemExit(f"bad setting item {item!r}: use key=value with keys {sorted(TYPES)}")
        setting[key] = TYPES[key](value)
    return setting


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("settings", nargs="+", help="e.g. temperature=0.8,top_k=32")
    p.add_argument("--model", default="dalle1", help="DALL-E 1 model folder (default: the shipped one)")
    p.add_argument("--num", type=int, default=200, help="eval prompts per setting")
    p.add_argument("--out", default="runs/dalle1-sampling", help="eval reports, one folder per setting")
    args = p.parse_args()
    settings = [parse_setting(s) for s in args.settings]
    pipe = DalleOnePipeline.from_pretrained(resolve_model(args.model))
    print(f"{torch.get_num_threads()} threads; {args.num} eval prompts; defaults: "
          f"temperature {pipe.transformer.cfg.temperature}, top_k {pipe.transformer.cfg.top_k}, "
          f"rerank {pipe.transformer.cfg.rerank}", flush=True)
    results = []
    for i, setting in enumerate(settings):
        start = time.perf_counter()
        figures = headline(evaluate_model(pipe, f"{args.out}/{i}", num=args.num, **setting))
        figures["s_per_image"] = (time.perf_counter() - start) / args.num
        results.append({"setting": setting, **figures})
        print(json.dumps(results[-1]), flush=True)
    print("\n| setting | single | two | novel single | novel two | CLIP score | speckle | s/image (with scoring) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        label = ", ".join(f"{k} {v}" for k, v in r["setting"].items())
        print(f"| {label} | {r['single']:.3f} | {r['two']:.3f} | {r['novel_single']:.3f} | {r['novel_two']:.3f} "
              f"| {r['clip_score']:.3f} | {r['speckle']:.4%} | {r['s_per_image']:.2f} |")
    print(json.dumps({"model": str(args.model), "num": args.num, "results": results}))


if __name__ == "__main__":
    main()
