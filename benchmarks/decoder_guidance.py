"""Decoder guidance sweep: shapes scores of base-resolution images at several guidance
scales, from the same prior samples and the same decoder noise, so only the scale differs.

    python benchmarks/decoder_guidance.py --model DIR [--num 96] [--scales 1 2 3 5 8] [--null text] [--embeds true]
        [--steps N]

`--embeds true` decodes the CLIP image embeddings of the prompts' own renders instead of the
prior's samples, which separates the decoder's errors from the prior's.
"""

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from unclip.data import shapes
from unclip.data.transforms import to_tensor, to_uint8
from unclip.pipelines.dalle2.pipeline import DalleTwoPipeline
from unclip.tasks.evaluate.detector import Detector, score
from unclip.tasks.evaluate.shapes_eval import summarize


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", help="pipeline folder with CLIP, prior and decoder (default: shipped model)")
    p.add_argument("--num", type=int, default=96)
    p.add_argument("--scales", type=float, nargs="+", default=[1, 2, 3, 5, 8])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, help="decoder sampling steps (default: the model's)")
    p.add_argument("--null", choices=["both", "text"], help="what guidance's null pass drops (default: the model's)")
    p.add_argument("--embeds", choices=["prior", "true"], default="prior")
    args = p.parse_args()
    pipe = DalleTwoPipeline.from_pretrained(args.model)
    pipe.decoder.cfg.guidance_null = args.null or pipe.decoder.cfg.guidance_null
    items = shapes.eval_split(args.num)
    prompts, scenes = [it.prompt for it in items], [it.scene for it in items]
    detector = Detector()
    if args.embeds == "true":
        with torch.no_grad():
            pixels = to_tensor([shapes.render(s, pipe.clip.image_size) for s in scenes])
            embeds = F.normalize(pipe.clip.embed_image(pixels).float(), dim=-1)
    else:
        embeds = torch.cat([pipe.image_embeds(prompts[i:i + args.batch],
                                              [torch.Generator().manual_seed(i + j)
                                               for j in range(len(prompts[i:i + args.batch]))])
                            for i in range(0, args.num, args.batch)])
    print(f"{args.num} eval prompts, {args.embeds} embeddings, base resolution {pipe.decoder.cfg.image_size} px, "
          f"{args.steps or pipe.decoder.cfg.sample_steps} {pipe.decoder.cfg.sampler} steps, "
          f"guidance null: {pipe.decoder.cfg.guidance_null}")
    print(f"{'scale':>6}{'single all':>11}{'shape':>7}{'colour':>7}{'size':>6}{'place':>7}{'bg':>6}"
          f"{'two all':>8}{'s/img':>7}")
    for scale in args.scales:
        start, images = time.perf_counter(), []
        for i in range(0, args.num, args.batch):
            gens = [torch.Generator().manual_seed(1000 + i + j) for j in range(len(prompts[i:i + args.batch]))]
            images.append(to_uint8(pipe.decode(embeds[i:i + args.batch], prompts[i:i + args.batch],
                                               generator=gens, guidance_scale=scale,
                                               steps=args.steps)))
        seconds = (time.perf_counter() - start) / args.num
        verdicts = [score(detector(img), s) for img, s in zip(np.concatenate(images), scenes)]
        fig = summarize(scenes, verdicts, None)["in_distribution"]
        one, two = fig["single"], fig["two"]
        print(f"{scale:6.1f}{one['all']:11.3f}{one['shape']:7.3f}{one['colour']:7.3f}{one['size']:6.3f}"
              f"{one['place']:7.3f}{one['background']:6.3f}{two['all']:8.3f}{seconds:7.2f}")


if __name__ == "__main__":
    main()
