"""Two-object scenes drawn one object at a time (issue 47): the first object alone at its place,
then the second inpainted into the other half of the image (RePaint with the same decoder), each
from its own single-object caption, a condition the decoder binds well (novel single objects are
right 0.94-1.00). Against the one-call default, one candidate each, the same seeds, on the eval
split's two-object prompts (in distribution and novel), scored by the shapes detector at 128 px.

    python benchmarks/compose_inpaint.py --num 250 [--dtype bfloat16]
"""

import argparse
import json
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from unclip import load_pipeline
from unclip.data import shapes
from unclip.runtime.devices import cpu_name
from unclip.tasks.evaluate.detector import Detector, score
from unclip.tasks.evaluate.shapes_eval import subset_of

PLACES = {"left of": ("left", "right"), "right of": ("right", "left"), "above": ("top", "bottom"),
          "below": ("bottom", "top")}


def object_captions(scene, size: str = "large") -> list[str]:
    """Each object of a two-object scene alone, at its place, on the scene's background."""
    return [f"a {size} {o.colour} {o.shape} {shapes.PLACE_PHRASES[p]} on a {scene.background} background"
            for o, p in zip(scene.objects, PLACES[scene.relation])]


def half_mask(place: str, side: int) -> np.ndarray:
    """White (repaint) over the half of the image where an object at `place` goes."""
    mask = np.zeros((side, side), np.uint8)
    h = side // 2
    region = {"left": np.s_[:, :h], "right": np.s_[:, h:], "top": np.s_[:h, :], "bottom": np.s_[h:, :]}[place]
    mask[region] = 255
    return mask


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--num", type=int, default=250)
    ap.add_argument("--first", type=int, default=500, help="the two-object prompts of the first N eval items")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--resample", type=int, default=1, help="RePaint jumps back per step")
    args = ap.parse_args()
    pipe = load_pipeline(args.model, torch_dtype=args.dtype)
    items = [it for it in shapes.eval_split(args.first) if it.kind == "two"][:args.num]
    detector, results, seconds = Detector(), {"one call": [], "one object at a time": []}, {}
    for it in tqdm(items, desc="two-object prompts"):
        g = lambda: [torch.Generator().manual_seed(it.index)]  # noqa: E731
        t0 = time.perf_counter()
        whole = pipe(it.prompt, generator=g(), rerank=1, output_type="uint8").images[0]
        seconds["one call"] = seconds.get("one call", 0.0) + time.perf_counter() - t0
        t0 = time.perf_counter()
        first, second = object_captions(it.scene)
        image = pipe(first, generator=g(), rerank=1, output_type="uint8").images[0]
        place = PLACES[it.scene.relation][1]
        image = pipe.inpaint(image, half_mask(place, image.shape[0]), second, generator=g(), rerank=1,
                             resample=args.resample, output_type="uint8").images[0]
        seconds["one object at a time"] = seconds.get("one object at a time", 0.0) + time.perf_counter() - t0
        for name, img in (("one call", whole), ("one object at a time", image)):
            results[name].append((it, score(detector(img), it.scene)["all"]))
    print(f"{len(items)} two-object prompts of the first {args.first} eval items, one candidate each, batch 1, "
          f"the model's defaults otherwise, resample {args.resample}, {args.dtype}, {cpu_name()}")
    print(f"{'setting':<22} {'two':>6} {'novel two':>10} {'s/image':>8}")
    out = {}
    for name, rows in results.items():
        figs = {sub: float(np.mean([ok for it, ok in rows if subset_of(it.scene) == sub]))
                for sub in ("in_distribution", "novel")}
        figs["s_per_image"] = seconds[name] / len(rows)
        out[name] = figs
        n = [sum(subset_of(it.scene) == sub for it, _ in rows) for sub in ("in_distribution", "novel")]
        print(f"{name:<22} {figs['in_distribution']:>6.3f} {figs['novel']:>10.3f} {figs['s_per_image']:>8.2f}"
              f"   (n = {n[0]} / {n[1]})")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
