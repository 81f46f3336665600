"""Where two `unclip eval shapes` runs of the same prompts and seeds disagree, image by image.

Two runs that differ only in precision (or runtime, or device) draw from the same noise, so their
figures should differ only where their images do. This reads both runs' images (OUT/images, as
`unclip eval shapes --out OUT` writes them), scores each with the shapes detector as the eval
does, and prints per subset: each run's figure, how many verdicts flip, and how far apart the
images are (mean absolute difference, of 255); then every flipped image.

    python benchmarks/eval_agreement.py runs/eval-500 runs/eval-500-fp32

Prints tables and, as its last line, one JSON object.
"""

import argparse
import json
from pathlib import Path

import numpy as np

from unclip.data.transforms import open_rgb
from unclip.tasks.evaluate.detector import Detector, parse_prompt, score
from unclip.tasks.evaluate.shapes_eval import subset_of

SUBSETS = {("in_distribution", 1): "single", ("in_distribution", 2): "two", ("novel", 1): "novel_single",
           ("novel", 2): "novel_two"}


def read_run(out: Path) -> dict:
    """prompt -> (file, uint8 image) of a run's manifest."""
    manifest = out / "images" / "manifest.jsonl"
    if not manifest.is_file():
        raise SystemExit(f"{out} has no images/manifest.jsonl: give an `unclip eval shapes --out` folder")
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    return {r["prompt"]: np.asarray(open_rgb(manifest.parent / r["file"]), dtype=np.float32) for r in records}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    p.add_argument("--apart", type=float, default=3.0, help="images further apart than this (of 255) count as drawn "
                   "differently")
    args = p.parse_args()
    a, b = read_run(args.a), read_run(args.b)
    prompts = [q for q in a if q in b]
    if not prompts:
        raise SystemExit("the two runs share no prompt")
    detector = Detector()
    rows = []
    for q in prompts:
        scene = parse_prompt(q)
        right = [bool(score(detector(img.astype(np.uint8)), scene)["all"]) for img in (a[q], b[q])]
        rows.append({"prompt": q, "subset": SUBSETS[(subset_of(scene), len(scene.objects))],
                     "right": right, "apart": float(np.abs(a[q] - b[q]).mean())})
    print(f"A = {args.a}, B = {args.b}: {len(prompts)} prompts in both")
    print("\n| subset | images | A right | B right | verdicts flipped | images > "
          f"{args.apart:g}/255 apart | mean apart (of 255) |")
    print("|---|---|---|---|---|---|---|")
    report = {"a": str(args.a), "b": str(args.b), "subsets": {}, "flipped": []}
    for name in SUBSETS.values():
        sub = [r for r in rows if r["subset"] == name]
        if not sub:
            continue
        fig = {"images": len(sub), "a_right": round(float(np.mean([r["right"][0] for r in sub])), 3),
               "b_right": round(float(np.mean([r["right"][1] for r in sub])), 3),
               "flipped": sum(r["right"][0] != r["right"][1] for r in sub),
               "apart": sum(r["apart"] > args.apart for r in sub),
               "mean_apart": round(float(np.mean([r["apart"] for r in sub])), 3)}
        report["subsets"][name] = fig
        print(f"| {name} | {fig['images']} | {fig['a_right']:.3f} | {fig['b_right']:.3f} | {fig['flipped']} | "
              f"{fig['apart']} | {fig['mean_apart']:.2f} |")
    flipped = [r for r in rows if r["right"][0] != r["right"][1]]
    print(f"\nflipped verdicts ({len(flipped)}):")
    for r in flipped:
        print(f"- {r['subset']}: {r['prompt']!r}: A {'right' if r['right'][0] else 'wrong'}, "
              f"B {'right' if r['right'][1] else 'wrong'}, images {r['apart']:.2f}/255 apart")
        report["flipped"].append({k: r[k] for k in ("prompt", "subset", "right")} | {"apart": round(r["apart"], 3)})
    print(json.dumps(report))


if __name__ == "__main__":
    main()
