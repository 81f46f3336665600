"""What batching gains inside the pipeline: the same requests (prompt, seed) drawn one at a time and
in batches, the seconds of each network per image. A server that batches cannot serve faster than
this once its model is busy all the time (serve_load.py prints how busy it was).

    python benchmarks/batch_gain.py [--requests 24] [--batch 8] [--dtype auto] [--rounds 2]
"""

import argparse
import json
import random
import time
from collections import defaultdict

import torch

from unclip.pipelines.registry import load_pipeline
from unclip.runtime.devices import cpu_name

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange"]  # serve_load.py's clients' prompts
SHAPES = ["circle", "square", "triangle", "star"]
TIMED = {"clip": ["model.text_model", "model.vision_model"], "reranker": ["model.text_model", "model.vision_model"],
         "prior": ["transformer"], "decoder": ["unet"], "upsampler1": ["unet"], "upsampler2": ["unet"]}


def timers(pipe) -> dict:
    """Forward hooks adding each network's seconds, calls and rows to the returned tally."""
    tally, started = defaultdict(lambda: {"s": 0.0, "calls": 0, "rows": 0}), {}
    for name, net in pipe.networks():
        for path in TIMED.get(name, []):
            key = f"{name}.{path.split('.')[-1]}"

            def pre(m, args, key=key):
                started[key] = time.perf_counter()
                tally[key]["calls"] += 1
                tally[key]["rows"] += len(args[0]) if args and torch.is_tensor(args[0]) else 0

            def post(m, args, out, key=key):
                tally[key]["s"] += time.perf_counter() - started[key]

            net.get_submodule(path).register_forward_pre_hook(pre)
            net.get_submodule(path).register_forward_hook(post)
    return tally


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=24)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--rounds", type=int, default=2, help="each way this many times, alternating")
    args = p.parse_args()
    pipe = load_pipeline(None, torch_dtype=args.dtype, device="cpu", compile="off")
    print(f"CPU: {cpu_name()}; torch {torch.__version__}, {torch.get_num_threads()} threads; the shipped model "
          f"at its defaults in {str(pipe.dtype).removeprefix('torch.')}")
    rng = random.Random(0)
    pairs = [(f"a {rng.choice(COLOURS)} {rng.choice(SHAPES)} on a white background", 1000 + i)
             for i in range(args.requests)]
    tally = timers(pipe)
    pipe([pairs[0][0]], generator=[torch.Generator().manual_seed(0)], output_type="uint8")  # warm-up
    rows, n = [], len(pairs)
    for _ in range(args.rounds):
        for b in (1, args.batch):
            tally.clear()
            start = time.perf_counter()
            for i in range(0, n, b):
                chunk = pairs[i:i + b]
                pipe([q for q, _ in chunk], generator=[torch.Generator().manual_seed(s) for _, s in chunk],
                     output_type="uint8")
            total = (time.perf_counter() - start) / n
            nets = {k: dict(v, s=v["s"] / n) for k, v in sorted(tally.items(), key=lambda kv: -kv[1]["s"])}
            rows.append({"batch": b, "s_per_image": total, "networks": nets})
            print(f"batch {b}: {total:.3f} s/image; " + ", ".join(
                f"{k} {v['s']:.3f} s ({v['calls']} calls" + (f", {v['rows'] / n:.0f} rows/image)" if v["rows"] else ")")
                for k, v in nets.items()),
                flush=True)
    best = {b: min(r["s_per_image"] for r in rows if r["batch"] == b) for b in (1, args.batch)}
    print(f"{args.requests} requests: batches of {args.batch} {best[1] / best[args.batch]:.2f}x faster per image "
          f"than one at a time (best of {args.rounds} each)")
    print(json.dumps({"runs": rows, "speedup": best[1] / best[args.batch]}))


if __name__ == "__main__":
    main()
