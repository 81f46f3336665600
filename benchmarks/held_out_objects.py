"""How often one candidate of a held-out pair drawn alone is right, under sampling settings (issue 47).

The held-out colour-shape pairs (blue triangle, yellow star, green circle) as single objects: both
sizes, four places, both backgrounds (48 captions), --candidates candidates each through prior,
decoder and the first upsampler (64 px, as the reranker sees them), scored by the shapes detector.
One row per setting, the same seeds in every row. With --places instead: every colour-shape
pair, large, at each of the five places, at the defaults: how often one candidate is right by
place, held-out pairs apart (why compose draws each object in the center, then moves it).

    python benchmarks/held_out_objects.py [--candidates 4] [--places]
"""

import argparse
import json
import time

import numpy as np
import torch

from unclip import load_pipeline
from unclip.data import shapes
from unclip.data.transforms import to_output
from unclip.models.upsampler import cascade
from unclip.runtime.devices import cpu_name
from unclip.tasks.evaluate.detector import Detector, parse_prompt, score

SETTINGS = [{}, {"decoder_guidance": 1.5}, {"decoder_guidance": 3.0}, {"decoder_guidance": 4.0},
            {"prior_guidance": 2.0}, {"prior_guidance": 8.0}, {"prior": "eclipse"}, {"prior": "text"},
            {"decoder_steps": 8}]


@torch.no_grad()
def rates(pipe, captions: list[str], k: int, setting: dict) -> dict:
    detector, right = Detector(), {}
    for start in range(0, len(captions), 4):
        rows = [c for c in captions[start:start + 4] for _ in range(k)]
        g = torch.Generator().manual_seed(1000 + start)
        z = pipe.image_embeds(rows, g, prior=setting.get("prior", "diffusion"),
                              guidance_scale=setting.get("prior_guidance"))
        x = pipe.decode(z, rows, generator=g, guidance_scale=setting.get("decoder_guidance"),
                        steps=setting.get("decoder_steps"))
        x = cascade(pipe.upsamplers[:1], x, generator=g)
        for im, c in zip(to_output(x, "uint8"), rows):
            right.setdefault(" ".join(c.split()[2:4]), []).append(score(detector(im), parse_prompt(c))["all"])
    return {pair: round(float(np.mean(v)), 3) for pair, v in right.items()} | \
        {"all": round(float(np.mean([x for v in right.values() for x in v])), 3)}


@torch.no_grad()
def by_place(pipe, k: int) -> dict:
    detector, right = Detector(), {}
    captions = [f"a large {c} {s} {shapes.PLACE_PHRASES[p]} on a {bg} background"
                for c, s in shapes.colour_shape_pairs(True) for p in shapes.PLACES for bg in shapes.BACKGROUNDS]
    for start in range(0, len(captions), 4):
        rows = [c for c in captions[start:start + 4] for _ in range(k)]
        g = torch.Generator().manual_seed(5000 + start)
        x = cascade(pipe.upsamplers[:1], pipe.decode(pipe.image_embeds(rows, g), rows, generator=g), generator=g)
        for im, c in zip(to_output(x, "uint8"), rows):
            words = c.split()
            kind = "held-out" if tuple(words[2:4]) in shapes.HELD_OUT else "seen"
            right.setdefault((kind, " ".join(words[4:-4])), []).append(score(detector(im), parse_prompt(c))["all"])
    return {f"{kind} / {place}": (round(float(np.mean(v)), 3), len(v)) for (kind, place), v in sorted(right.items())}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--candidates", type=int, default=4)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--places", action="store_true", help="right by place instead, every pair at the defaults")
    args = p.parse_args()
    pipe = load_pipeline(None, torch_dtype=args.dtype)
    if args.places:
        rates_by_place = by_place(pipe, args.candidates)
        print(f"CPU: {cpu_name()}; {torch.get_num_threads()} threads; {pipe.dtype}; every pair large, both backgrounds, "
              f"{args.candidates} candidates each; right per candidate\n\n| pairs / place | right | candidates |\n|---|---|---|")
        for key, (rate, n) in rates_by_place.items():
            print(f"| {key} | {rate:.3f} | {n} |")
        print(json.dumps(rates_by_place))
        return
    captions = [f"a {size} {c} {s} {shapes.PLACE_PHRASES[place]} on a {bg} background" for c, s in shapes.HELD_OUT
                for size in shapes.SIZES for place in ("left", "right", "top", "center") for bg in shapes.BACKGROUNDS]
    print(f"CPU: {cpu_name()}; {torch.get_num_threads()} threads; {pipe.dtype}; {len(captions)} captions x "
          f"{args.candidates} candidates, right per candidate")
    print("\n| setting | " + " | ".join(f"{c} {s}" for c, s in shapes.HELD_OUT) + " | all | s |")
    print("|---" * (len(shapes.HELD_OUT) + 3) + "|")
    report = []
    for setting in SETTINGS:
        start = time.perf_counter()
        r = rates(pipe, captions, args.candidates, setting)
        seconds = time.perf_counter() - start
        report.append({"setting": setting, **r, "seconds": round(seconds, 1)})
        print(f"| {json.dumps(setting) if setting else 'the defaults'} | " +
              " | ".join(f"{r[f'{c} {s}']:.3f}" for c, s in shapes.HELD_OUT) + f" | {r['all']:.3f} | {seconds:.0f} |",
              flush=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
