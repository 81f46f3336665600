"""Where the two-object errors come from (issue 17): the same two-object eval prompts with
the same seeds, each stage swapped for a perfect one in turn, scored at 128 px.

- prior: the default (diffusion prior, decoder, upsamplers);
- true embedding: the CLIP image embedding of a true render of the prompt's scene in place of
  the prior's sample (what a perfect prior would give);
- true embedding, no caption: the same, with the empty caption (the decoder's text path off);
- prior, bicubic: the default's own 32 px images, enlarged by bicubic instead of the upsamplers.

    python benchmarks/two_objects.py [--model DIR] [--num 100]
"""

import argparse
import json

import numpy as np
import torch
from tqdm.auto import tqdm

from unclip.data import shapes
from unclip.data.transforms import to_uint8
from unclip.models.upsampler import upsample
from unclip.pipelines.dalle2.pipeline import DalleTwoPipeline
from unclip.tasks.evaluate.detector import Detector, score
from unclip.tasks.evaluate.shapes_eval import subset_of


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model folder (default: the shipped shapes model)")
    ap.add_argument("--num", type=int, default=100, help="two-object eval prompts (in distribution and novel)")
    ap.add_argument("--batch-size", type=int, default=10)
    args = ap.parse_args()
    pipe = DalleTwoPipeline.from_pretrained(args.model)
    items = [it for it in shapes.eval_split(5 * args.num) if it.kind == "two"][:args.num]
    detector, results = Detector(), {}
    scale = int(np.prod([up.cfg.factor for up in pipe.upsamplers]))

    def add(name, images, batch):
        for img, it in zip(to_uint8(images), batch):
            results.setdefault(name, []).append((it, score(detector(img), it.scene)["all"]))

    for start in tqdm(range(0, len(items), args.batch_size), desc="two-object prompts"):
        batch = items[start:start + args.batch_size]
        prompts = [it.prompt for it in batch]
        gens = lambda: [torch.Generator().manual_seed(it.index) for it in batch]  # noqa: E731
        true_z = pipe.embed_images([shapes.render(it.scene, 64) for it in batch])
        prior_z = pipe.image_embeds(prompts, gens())
        base = pipe.decode(prior_z, prompts, generator=gens())
        add("prior", pipe.upsample(base, generator=gens()), batch)
        add("prior, bicubic", upsample(base, scale), batch)
        add("true embedding", pipe.upsample(pipe.decode(true_z, prompts, generator=gens()), generator=gens()), batch)
        add("true embedding, no caption", pipe.upsample(pipe.decode(true_z, None, generator=gens()),
                                                        generator=gens()), batch)

    print(f"{'setting':<28} {'in distribution':>15} {'novel':>6} {'all':>6}")
    out = {}
    for name, rows in results.items():
        figs = {sub: float(np.mean([ok for it, ok in rows if subset_of(it.scene) == sub]))
                for sub in ("in_distribution", "novel")}
        figs["all"] = float(np.mean([ok for _, ok in rows]))
        out[name] = figs
        print(f"{name:<28} {figs['in_distribution']:>15.3f} {figs['novel']:>6.3f} {figs['all']:>6.3f}")
    print(json.dumps({"num": len(items), "two_objects_all_right": out}))


if __name__ == "__main__":
    main()
