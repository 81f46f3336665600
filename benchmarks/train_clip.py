"""CLIP training on this machine: bf16 autocast against fp32, in one run.

Trains the shapes CLIP preset for the same number of steps in each precision and prints
seconds per step, images/s, the mean loss of the last 20 steps and top-1 retrieval among 100
on the first 100 in-distribution eval captions (EMA weights).

    python benchmarks/train_clip.py [--steps 150]
"""

import argparse
import tempfile
import time

from unclip.config import load
from unclip.train.clip import ClipStage, ClipStageConfig
from unclip.train.loop import read_log, train


def run(precision: str, steps: int, out: str) -> dict:
    cfg = load(ClipStageConfig, "configs/shapes/clip.yaml",
               [f"train.out_dir={out}", f"train.steps={steps}", f"train.mixed_precision={precision}",
                "train.sample_every=0", f"train.checkpoint_every={steps}"])
    t = time.perf_counter()
    train(ClipStage(cfg), cfg.train)
    seconds = time.perf_counter() - t
    log = read_log(out)
    losses = [r["loss"] for r in log if "loss" in r]
    preview = [r["preview"] for r in log if "preview" in r][-1]
    return {"s_per_step": seconds / steps, "images_per_s": steps * cfg.train.batch_size / seconds,
            "last20_loss": sum(losses[-20:]) / len(losses[-20:]), "retrieval_top1": preview["retrieval_top1"]}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=150)
    args = p.parse_args()
    rows = {}
    for precision in ("bf16", "fp32"):
        with tempfile.TemporaryDirectory() as out:
            rows[precision] = run(precision, args.steps, out)
    print(f"\nCLIP preset, {args.steps} steps each")
    print(f"{'precision':<10}{'s/step':>8}{'img/s':>8}{'loss(last20)':>14}{'top1@100':>10}")
    for name, r in rows.items():
        print(f"{name:<10}{r['s_per_step']:8.2f}{r['images_per_s']:8.0f}"
              f"{r['last20_loss']:14.4f}{r['retrieval_top1']:10.2f}")


if __name__ == "__main__":
    main()
