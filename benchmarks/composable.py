"""Composable guidance for two-object scenes (issue 47): each object its own condition.

A two-object caption "a C1 S1 REL a C2 S2 on a BG background" is split into its objects with
their places ("a C1 S1 on the left on a BG background", ...), each a condition the decoder draws
well alone (single objects are right 1.00, novel single 0.94-1.00); each gets its own image
embedding from the prior, and the decoder's guidance sums their terms (diffusion.guidance.composed),
optionally beside the whole caption's. Scored by the shapes detector at 128 px, one candidate per
prompt, the same seeds for every setting, on the eval split's two-object prompts (in distribution
and novel).

    python benchmarks/composable.py --num 100 [--dtype bfloat16] [--settings caption objects text-objects]

Settings: caption (the default: the whole caption's condition), objects (each object's caption
and prior embedding), caption+objects (both), text-objects (the whole caption's embedding kept,
each object's words as a condition, guided against the empty caption with that embedding).
"""

import argparse
import json
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from unclip import load_pipeline
from unclip.data import shapes
from unclip.data.embeddings import encode_text
from unclip.data.transforms import to_uint8
from unclip.diffusion.guidance import composed
from unclip.diffusion.sampling import sample
from unclip.runtime.devices import cpu_name
from unclip.tasks.evaluate.detector import Detector, score
from unclip.tasks.evaluate.shapes_eval import subset_of

PLACES = {"left of": ("left", "right"), "right of": ("right", "left"), "above": ("top", "bottom"),
          "below": ("bottom", "top")}


def object_captions(scene) -> list[str]:
    """Each object of a two-object scene alone, at its place, on the scene's background."""
    return [f"a {o.colour} {o.shape} {shapes.PLACE_PHRASES[p]} on a {scene.background} background"
            for o, p in zip(scene.objects, PLACES[scene.relation])]


def decode(pipe, conds, scales, gens, steps, null_kind=None):
    dec = pipe.decoder
    null = dec.null(encode_text(pipe.clip, [""]), null_kind or dec.cfg.guidance_null)
    b, s = conds[0]["image_embed"].shape[0], dec.cfg.image_size
    from unclip.diffusion.sampling import randn
    x_T = randn((b, 3, s, s), gens, device=pipe.device)
    guided = composed(dec.denoise, conds, null, scales)
    return sample(guided, x_T, dec.scheduler, steps=steps, eta=dec.cfg.eta, generator=gens).clamp(-1, 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--num", type=int, default=100, help="two-object prompts of the eval split (first 5x num items)")
    ap.add_argument("--first", type=int, default=500, help="take the two-object prompts of the first N eval items")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--batch-size", type=int, default=10)
    ap.add_argument("--settings", nargs="+", default=["caption", "objects", "caption+objects"])
    ap.add_argument("--object-scale", type=float, default=None, help="guidance per object (default: the decoder's)")
    args = ap.parse_args()
    pipe = load_pipeline(args.model, torch_dtype=args.dtype)
    items = [it for it in shapes.eval_split(args.first) if it.kind == "two"][:args.num]
    w = pipe.decoder.cfg.guidance_scale
    wo = w if args.object_scale is None else args.object_scale
    steps = pipe.sampling_defaults()["decoder_num_inference_steps"]
    detector, results, seconds = Detector(), {}, {}
    for start in tqdm(range(0, len(items), args.batch_size), desc="two-object prompts"):
        batch = items[start:start + args.batch_size]
        prompts = [it.prompt for it in batch]
        gens = lambda: [torch.Generator().manual_seed(it.index) for it in batch]  # noqa: E731
        parts = [object_captions(it.scene) for it in batch]
        for name in args.settings:
            t0 = time.perf_counter()
            conds, scales = [], []
            if "caption" in name.split("+"):
                z = pipe.image_embeds(prompts, gens())
                conds.append(pipe._decoder_cond(z, prompts))
                scales.append(w)
            if "objects" in name.split("+"):
                for k in range(2):
                    captions = [p[k] for p in parts]
                    z = pipe.image_embeds(captions, gens())
                    conds.append(pipe._decoder_cond(z, captions))
                    scales.append(wo)
            null_kind = None
            if name == "text-objects":  # the whole caption's embedding, each object's words
                z = pipe.image_embeds(prompts, gens())
                for k in range(2):
                    conds.append(pipe._decoder_cond(z, [p[k] for p in parts]))
                    scales.append(wo)
                null_kind = "text"
            images = pipe.upsample(decode(pipe, conds, scales, gens(), steps, null_kind), generator=gens())
            seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - t0
            for img, it in zip(to_uint8(images), batch):
                results.setdefault(name, []).append((it, score(detector(img), it.scene)["all"]))
    print(f"{len(items)} two-object prompts of the first {args.first} eval items, one candidate each, decoder "
          f"{steps} steps, guidance {w} (objects {wo}), {args.dtype}, {cpu_name()}")
    print(f"{'setting':<18} {'two':>6} {'novel two':>10} {'s/image':>8}")
    out = {}
    for name, rows in results.items():
        figs = {sub: float(np.mean([ok for it, ok in rows if subset_of(it.scene) == sub]))
                for sub in ("in_distribution", "novel")}
        n = {sub: sum(subset_of(it.scene) == sub for it, _ in rows) for sub in ("in_distribution", "novel")}
        figs["s_per_image"] = seconds[name] / len(rows)
        out[name] = figs
        print(f"{name:<18} {figs['in_distribution']:>6.3f} {figs['novel']:>10.3f} {figs['s_per_image']:>8.2f}"
              f"   (n = {n['in_distribution']} / {n['novel']})")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
