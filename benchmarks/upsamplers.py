"""Each upsampler of a model folder against bicubic, on held-out eval scenes (issue 17).

For every stage: the true render at the stage's output size, its area-downsampled version as
input, either clean or corrupted the way the stage was trained (blur for the first, BSR for
the second); PSNR and SSIM of the upsampler's output and of bicubic against the truth.

    python benchmarks/upsamplers.py [--model DIR] [--num 64] [--steps N]
"""

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F

from unclip.data import shapes
from unclip.data.degrade import DEGRADATIONS
from unclip.data.transforms import to_tensor
from unclip.models.upsampler import upsample
from unclip.pipelines.dalle2.pipeline import DalleTwoPipeline
from unclip.tasks.evaluate.image_metrics import psnr, ssim


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model folder (default: the shipped shapes model)")
    ap.add_argument("--num", type=int, default=64, help="eval scenes")
    ap.add_argument("--steps", type=int, default=None, help="sampling steps (default: each upsampler's own)")
    ap.add_argument("--base", type=int, default=32, help="input side of the first upsampler")
    args = ap.parse_args()
    torch.manual_seed(0)
    pipe = DalleTwoPipeline.from_pretrained(args.model)
    items = shapes.eval_split(args.num)
    rows, size = [], args.base
    print(f"{'stage':>5} {'input':>8} {'bicubic dB':>10} {'upsampler dB':>12} {'gain':>6} "
          f"{'bicubic SSIM':>12} {'upsampler SSIM':>14} {'s/img':>6}")
    for stage, up in enumerate(pipe.upsamplers, start=1):
        size *= up.cfg.factor
        truth = to_tensor(np.stack([shapes.render(it.scene, size) for it in items]))
        low = F.interpolate(truth, scale_factor=1 / up.cfg.factor, mode="area")
        rng, corrupt = np.random.default_rng(stage), DEGRADATIONS[up.cfg.degradation]
        degraded = torch.cat([corrupt(low[i:i + 1], rng) for i in range(len(low))])
        for name, x in (("clean", low), (up.cfg.degradation, degraded)):
            start = time.perf_counter()
            out = torch.cat([up.sample(chunk, steps=args.steps, generator=torch.Generator().manual_seed(i))
                             for i, chunk in enumerate(x.split(16))])
            sec = (time.perf_counter() - start) / len(x)
            bicubic = upsample(x, up.cfg.factor)
            row = {"stage": stage, "input": name, "size": size, "psnr_bicubic": psnr(bicubic, truth),
                   "psnr": psnr(out, truth), "ssim_bicubic": ssim(bicubic, truth), "ssim": ssim(out, truth),
                   "s_per_image": sec}
            rows.append(row)
            print(f"{stage:>5} {name:>8} {row['psnr_bicubic']:>10.2f} {row['psnr']:>12.2f} "
                  f"{row['psnr'] - row['psnr_bicubic']:>+6.2f} {row['ssim_bicubic']:>12.4f} {row['ssim']:>14.4f} {sec:>6.3f}")
    print(json.dumps({"num": args.num, "steps": args.steps, "rows": rows}))


if __name__ == "__main__":
    main()
