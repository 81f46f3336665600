"""Training throughput of the decoder and both upsamplers at their shapes presets (the
presets' batch sizes, data rendering included), in fp32 and under bf16 autocast: s/step,
images/s, and the achieved FLOP/s (matmuls and convolutions of forward and backward, counted
by torch's FlopCounterMode on one step) as a share of this machine's matmul peak, measured in
the same run.

    python benchmarks/train_cascade.py [--steps 10] [--clip runs/clip/model] [--precisions fp32 bf16]

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
    from unclip.data.stream import ShapesSource
    from unclip.models.clip import ClipEncoder
    from unclip.models.tokenizer import train_tokenizer
    from unclip.train.clip import ClipStageConfig

    cfg = load(ClipStageConfig, "configs/shapes/clip.yaml").model
    tok = train_tokenizer(ShapesSource(64).captions(2000), cfg.vocab_size, cfg.max_length)
    ClipEncoder.from_config(cfg, tok).save_pretrained(folder)
    return str(folder)


def matmul_peak(dtype: torch.dtype, n: int = 1024, reps: int = 20) -> float:
    """GFLOP/s of an n x n matmul in `dtype`, best of three timings."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 * reps / best / 1e9


def step_flops(stage, batch: int, precision: str) -> float:
    """Matmul and convolution FLOPs of one training step (forward and backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    module = stage.module.train()
    data = next(iter(make_loader(stage.source(), batch, workers=0)))
    with FlopCounterMode(display=False) as counter:
        with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
            loss = module(data)
        loss.backward()
    module.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def throughput(stage, batch: int, steps: int, precision: str) -> tuple[float, float]:
    module = stage.module.train()
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-4)
    batches = iter(make_loader(stage.source(), batch, workers=stage.data_workers))
    for i in range(steps + 2):  # two warm-up steps
        if i == 2:
            start = time.perf_counter()
        with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
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
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    args = p.parse_args()
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    with tempfile.TemporaryDirectory() as tmp:
        clip = args.clip or random_clip(Path(tmp) / "clip")
        rows = []
        cfg = load(DecoderStageConfig, "configs/shapes/decoder.yaml", [f"clip={clip}"])
        rows.append(("decoder", cfg.model.image_size, cfg.train.batch_size, DecoderStage(cfg)))
        for n in (1, 2):
            cfg = load(UpsamplerStageConfig, f"configs/shapes/upsampler{n}.yaml")
            rows.append((f"upsampler{n}", cfg.data.image_size, cfg.train.batch_size, UpsamplerStage(cfg)))
        print(f"{torch.get_num_threads()} threads, {args.steps} steps each; matmul peak (1024^2) "
              f"fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s")
        print(f"{'stage':<11}{'target px':>10}{'batch':>6}{'params (M)':>11}{'precision':>10}{'s/step':>8}"
              f"{'images/s':>9}{'GFLOP/step':>11}{'GFLOP/s':>8}{'of peak':>8}")
        for name, size, batch, stage in rows:
            params = sum(p.numel() for p in stage.module.parameters() if p.requires_grad) / 1e6
            for precision in args.precisions:
                flops = step_flops(stage, batch, precision) / 1e9
                s, rate = throughput(stage, batch, args.steps, precision)
                print(f"{name:<11}{size:>10}{batch:>6}{params:>11.1f}{precision:>10}{s:8.2f}{rate:9.1f}"
                      f"{flops:11.1f}{flops / s:8.0f}{flops / s / peaks[precision]:8.0%}")


if __name__ == "__main__":
    main()
