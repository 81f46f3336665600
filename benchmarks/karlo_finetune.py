"""Fine-tuning a Karlo-layout decoder in full against LoRA: trainable parameters, seconds per
step and peak memory, each run in a process of its own (so its peak is its own).

    python benchmarks/karlo_finetune.py --size small --steps 10 > docs/results/karlo_finetune_cpu.txt
    python benchmarks/karlo_finetune.py --size karlo --steps 20 --device cuda   # on a GPU: Karlo's own sizes

--size: tiny (the tests' folder), small (a decoder of about 100 M parameters at 64 px), karlo
(Karlo's decoder widths 320/640/960/1280 and super-res, random weights, about 3.5 GB in fp32).
Weights are random: nothing is downloaded. Peak memory is the process's peak RSS on the CPU,
torch.cuda.max_memory_allocated on a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = {
    "tiny": {},
    "small": {"embed_dim": 256, "text_layers": 2, "text_heads": 4, "vision_width": 128, "clip_image_size": 64,
              "patch_size": 16, "base_size": 64, "decoder_channels": (128, 256, 384, 512), "decoder_head_dim": 64,
              "cross_attention_dim": 512, "layers_per_block": 2, "super_res_size": 128,
              "super_res_channels": (32, 64)},
    "karlo": {"embed_dim": 768, "text_layers": 2, "text_heads": 12, "vision_width": 256, "clip_image_size": 224,
              "patch_size": 32, "base_size": 64, "decoder_channels": (320, 640, 960, 1280), "decoder_head_dim": 64,
              "cross_attention_dim": 1536, "layers_per_block": 3, "super_res_size": 256,
              "super_res_channels": (64, 128)},
}


def child(args) -> None:
    """One fine-tuning run; prints a JSON line with its figures."""
    import torch

    from unclip.config import load
    from unclip.train.karlo import KarloDecoderStage, KarloFinetuneConfig
    from unclip.train.loop import train

    overrides = [f"init={args.folder}/karlo", f"image_encoder={args.folder}/variations", f"train.out_dir={args.out}",
                 f"train.steps={args.steps}", f"train.batch_size={args.batch}", "train.warmup_steps=1",
                 "train.checkpoint_every=100000", "train.sample_every=0", "data.num_workers=0",
                 f"lora.rank={args.rank}", f"gradient_checkpointing={str(args.checkpointing).lower()}",
                 f"train.mixed_precision={args.precision}"]
    cfg = load(KarloFinetuneConfig, Path(__file__).parents[1] / "configs/karlo/decoder_finetune.yaml", overrides)
    stage = KarloDecoderStage(cfg)
    trainable = sum(p.numel() for p in stage.module.parameters() if p.requires_grad)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    train(stage, cfg.train)
    seconds = (time.perf_counter() - start) / args.steps
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if args.device == "cuda" else \
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    print(json.dumps({"trainable": trainable, "s_per_step": seconds, "peak_gib": peak}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=list(SIZES), default="small")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--ranks", type=int, nargs="+", default=[0, 16], help="0: full fine-tuning")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--precision", default="auto", help="train.mixed_precision: auto, fp32, bf16, fp16")
    p.add_argument("--checkpointing", action="store_true", help="gradient checkpointing")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--rank", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--folder", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)
    import torch

    from unclip.pipelines.karlo.synthetic import KarloSizes, random_components, write_folder
    from unclip.runtime.devices import cpu_name

    folder = Path(tempfile.mkdtemp(prefix="karlo-ft-bench-"))
    sizes = KarloSizes(**SIZES[args.size])
    write_folder(random_components(sizes, seed=0), folder / "karlo")
    write_folder(random_components(sizes, seed=1, variations=True), folder / "variations")
    where = torch.cuda.get_device_name(0) if args.device == "cuda" else cpu_name()
    print(f"{args.size} Karlo-layout decoder, random weights; batch {args.batch}, {args.steps} steps; {where}; "
          f"mixed precision {args.precision}; gradient checkpointing {args.checkpointing}")
    print("| training | trainable parameters | s per step | peak memory (GiB) |\n|---|---|---|---|")
    for rank in args.ranks:
        out = folder / f"run-{rank}"
        env = {**os.environ, **({"ACCELERATE_USE_CPU": "1"} if args.device == "cpu" else {})}
        done = subprocess.run([sys.executable, __file__, "--child", "--rank", str(rank), "--folder", str(folder),
                               "--out", str(out), "--steps", str(args.steps), "--batch", str(args.batch),
                               "--device", args.device, "--precision", args.precision,
                               *(["--checkpointing"] if args.checkpointing else [])],
                              capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise SystemExit(done.stderr[-3000:])
        f = json.loads(done.stdout.strip().splitlines()[-1])
        name = "full" if rank == 0 else f"LoRA rank {rank}"
        print(f"| {name} | {f['trainable']:,} | {f['s_per_step']:.2f} | {f['peak_gib']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
