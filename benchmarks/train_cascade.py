"""Training throughput of the decoder and both upsamplers at their shapes presets (bf16
autocast, the presets' batch sizes, data rendering included): images/s and s/step.

    python benchmarks/train_cascade.py [--steps 10] [--clip runs/clip/model]

The decoder needs a CLIP folder (its image embeddings are computed on the fly); without one
a random CLIP of the preset's size is used, which costs the same.
"""

import argparse
import tempfile
import time
from pathlib import Path

import torch

from unclip.config import load
from unclip.data.stream import make_loader
from unclip.train.decoder import DecoderStage, DecoderStageConfig
from unclip.train.upsampler import UpsamplerStage, UpsamplerStageConfig


def random_clip(folder: Path) -> str:
    from unclip.clip import ClipEncoder
    from unclip.data.stream import ShapesSource
    from unclip.tokenizer import train_tokenizer
    from unclip.train.clip import ClipStageConfig

    cfg = load(ClipStageConfig, "configs/shapes/clip.yaml").model
    tok = train_tokenizer(ShapesSource(64).captions(2000), cfg.vocab_size, cfg.max_length)
    ClipEncoder.from_config(cfg, tok).save_pretrained(folder)
    return str(folder)


def throughput(stage, batch: int, steps: int) -> tuple[float, float]:
    module = stage.module.train()
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-4)
    batches = iter(make_loader(stage.source(), batch, workers=stage.data_workers))
    for i in range(steps + 2):  # two warm-up steps
        if i == 2:
            start = time.perf_counter()
        with torch.autocast("cpu", torch.bfloat16):
            loss = module(next(batches))
        loss.backward()
        opt.step()
        opt.zero_grad()
    seconds = (time.perf_counter() - start) / steps
    return seconds, batch / seconds


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--clip", help="CLIP folder for the decoder (default: a random one)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clip = args.clip or random_clip(Path(tmp) / "clip")
        rows = []
        cfg = load(DecoderStageConfig, "configs/shapes/decoder.yaml", [f"clip={clip}"])
        rows.append(("decoder", cfg.model.image_size, cfg.train.batch_size, DecoderStage(cfg)))
        for n in (1, 2):
            cfg = load(UpsamplerStageConfig, f"configs/shapes/upsampler{n}.yaml")
            rows.append((f"upsampler{n}", cfg.data.image_size, cfg.train.batch_size, UpsamplerStage(cfg)))
        print(f"{torch.get_num_threads()} threads, bf16 autocast, {args.steps} steps each")
        print(f"{'stage':<11}{'target px':>10}{'batch':>6}{'params (M)':>11}{'s/step':>8}{'images/s':>9}")
        for name, size, batch, stage in rows:
            params = sum(p.numel() for p in stage.module.parameters() if p.requires_grad) / 1e6
            s, rate = throughput(stage, batch, args.steps)
            print(f"{name:<11}{size:>10}{batch:>6}{params:>11.1f}{s:8.2f}{rate:9.1f}")


if __name__ == "__main__":
    main()
