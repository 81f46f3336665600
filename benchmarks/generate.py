"""`unclip generate` speed on this machine. First the cold start: a fresh `unclip generate`
process, from its start until its first image is on disk. Then warm seconds per image at
batch 1 and 16, split by stage, with the network evaluations each stage makes (calls, and
rows: guidance doubles the rows of a call, best-of-n multiplies the prior's).

    python benchmarks/generate.py [--model DIR] [--batches 1 16]
"""

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from unclip.pipeline import UnCLIPPipeline

PROMPT = "a large red circle on the left on a white background"


def count_calls(module, tally: dict) -> None:
    """Wrap module.denoise so that every call adds to tally["calls"] and tally["rows"]."""
    real = module.denoise

    def counted(x_t, t, cond):
        tally["calls"] += 1
        tally["rows"] += x_t.shape[0]
        return real(x_t, t, cond)

    module.denoise = counted


def cold_start(model: str | None) -> float:
    """Seconds from launching `unclip generate PROMPT` until its first PNG exists."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "unclip", "generate", PROMPT, "--out", out]
        start = time.perf_counter()
        proc = subprocess.Popen(cmd + (["--model", model] if model else []),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while not any(Path(out).glob("*.png")):
            if proc.poll() not in (None, 0):
                raise RuntimeError(f"{' '.join(cmd)} failed with exit code {proc.returncode}")
            time.sleep(0.02)
        seconds = time.perf_counter() - start
        proc.wait()
    return seconds


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", help="pipeline folder (default: the shipped model)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    args = p.parse_args()
    print(f"cold start (process start to first image written): {cold_start(args.model):.1f} s")
    pipe = UnCLIPPipeline.from_pretrained(args.model)
    stages = [("prior", pipe.prior), ("decoder", pipe.decoder)] + \
             [(f"upsampler{i}", up) for i, up in enumerate(pipe.upsamplers, start=1)]
    tallies = {name: {"calls": 0, "rows": 0} for name, _ in stages}
    for name, module in stages:
        count_calls(module, tallies[name])
    print(f"model {args.model or 'default'}; {torch.get_num_threads()} threads; default sampling settings")
    print(f"{'batch':>5} {'stage':<11}{'s/image':>9}{'calls':>7}{'rows/image':>11}")
    pipe([PROMPT], generator=[torch.Generator().manual_seed(0)])  # warm-up
    for b in args.batches:
        for t in tallies.values():
            t.update(calls=0, rows=0)
        gens = [torch.Generator().manual_seed(i) for i in range(b)]
        seconds = {}
        start = time.perf_counter()
        z = pipe.image_embeds([PROMPT] * b, gens)
        seconds["prior"] = time.perf_counter() - start
        t = time.perf_counter()
        x = pipe.decode(z, [PROMPT] * b, generator=gens)
        seconds["decoder"] = time.perf_counter() - t
        for i, up in enumerate(pipe.upsamplers, start=1):
            t = time.perf_counter()
            x = up.sample(x, generator=gens)
            seconds[f"upsampler{i}"] = time.perf_counter() - t
        total = time.perf_counter() - start
        for name, _ in stages:
            print(f"{b:5d} {name:<11}{seconds[name] / b:9.3f}{tallies[name]['calls']:7d}"
                  f"{tallies[name]['rows'] / b:11.0f}")
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{b:5d} {'total':<11}{total / b:9.3f}   ({x.shape[-1]} px images; peak RSS so far {rss:.0f} MB)")


if __name__ == "__main__":
    main()
