"""The decoder's attention softmax in float32 or in the network's own dtype, on the CPU.

diffusers' simple cross-attention (`Attention(upcast_softmax=True)`, which the decoder's
AttnAddedKVProcessor follows) copies the attention scores to float32 before the softmax and the
probabilities back after it: at bf16 two copies of the largest tensor in the network (at 16 rows
a call, 64 x 256 x 284 scores at the 16 px level). The scores themselves come from a bf16 matrix
product either way, and torch's softmax accumulates in float32 inside. At float32 the two are the
same computation.

Alternating between the two (each first in every other round), best of --rounds each:
  1. the decoder's ms per row at 2 to 64 rows a call (its first call's inputs at the defaults,
     repeated), in --dtype, with the largest difference in its output, and at float32 (must be 0);
  2. whole pipeline calls at the defaults: s/image one request at a time and in batches of 8, on
     the same --requests prompts and seeds.

    python benchmarks/softmax_dtype.py [--dtype auto] [--requests 24] [--rounds 4]
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from diffusers.models.attention_processor import Attention

sys.path.insert(0, str(Path(__file__).parent))
from batch_gain import alternating, draw, first_inputs, repeated, requests  # noqa: E402  its prompts and replays

from unclip.pipelines.registry import load_pipeline  # noqa: E402
from unclip.runtime.devices import cpu_name  # noqa: E402

ROWS = (2, 4, 8, 16, 32, 64)
PROMPT = "a red circle on a white background"


def upcast(pipe, on: bool) -> None:
    for m in dict(pipe.sampled_networks())["decoder"].modules():
        if isinstance(m, Attention):
            m.upcast_softmax = on


def output(out) -> torch.Tensor:
    return (out[0] if isinstance(out, tuple) else out.sample).float()


@torch.no_grad()
def per_row(pipe, rounds: int, seconds: float = 1.0) -> list[dict]:
    net, inputs = dict(pipe.sampled_networks())["decoder"], first_inputs(pipe, PROMPT, ["decoder"])["decoder"]
    dtype, rows_out = str(pipe.dtype).removeprefix("torch."), []
    for rows in ROWS:
        if (call := repeated(inputs, rows)) is None:
            continue
        ms, outs = {True: [], False: []}, {}
        for r in range(rounds):
            for on in ((True, False) if r % 2 == 0 else (False, True)):  # each first in turn
                upcast(pipe, on)
                net(*call[0], **call[1])  # warm-up: oneDNN picks its kernels for this shape
                start, calls = time.perf_counter(), 0
                while time.perf_counter() - start < seconds:
                    outs[on] = output(net(*call[0], **call[1]))
                    calls += 1
                ms[on].append(1000 * (time.perf_counter() - start) / calls / rows)
        row = {"dtype": dtype, "rows": rows, "float32_softmax": min(ms[True]), "own_dtype_softmax": min(ms[False]),
               "max_diff": (outs[True] - outs[False]).abs().max().item()}
        print(f"| {dtype} | {rows} | {row['float32_softmax']:.2f} | {row['own_dtype_softmax']:.2f} | "
              f"{row['float32_softmax'] / row['own_dtype_softmax']:.2f}x | {row['max_diff']:.1e} |", flush=True)
        rows_out.append(row)
    return rows_out


@torch.no_grad()
def whole(pipe, n: int, rounds: int) -> list[dict]:
    pairs = requests(n)
    draw(pipe, pairs[:8], 8)  # warm-up
    rows = alternating(pipe, pairs, {"float32": lambda p: upcast(p, True), "own dtype": lambda p: upcast(p, False)},
                       rounds, swap=True)
    return [{"float32_softmax": r["setting"] == "float32", "batch": r["batch"], "s_per_image": r["s_per_image"]}
            for r in rows]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--requests", type=int, default=24)
    p.add_argument("--rounds", type=int, default=4)
    args = p.parse_args()
    print(f"CPU: {cpu_name()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    result = {"cpu": cpu_name()}
    print("\nthe decoder, ms per row (best of each, alternating)\n"
          "| dtype | rows | softmax in float32 | in the network's dtype | speed-up | max diff |\n|---|---|---|---|---|---|")
    pipe = load_pipeline(None, torch_dtype="float32", device="cpu", compile="off")
    result["float32"] = per_row(pipe, 1, 0.5)
    del pipe
    pipe = load_pipeline(None, torch_dtype=args.dtype, device="cpu", compile="off")
    result["dtype"] = str(pipe.dtype).removeprefix("torch.")
    result["per_row"] = per_row(pipe, args.rounds)
    print(f"\nwhole pipeline calls at the defaults in {result['dtype']}, {args.requests} requests\n"
          "| softmax | batch | s per image |\n|---|---|---|")
    result["pipeline"] = whole(pipe, args.requests, args.rounds)
    for batch in (1, 8):
        best = {on: min(r["s_per_image"] for r in result["pipeline"] if r["batch"] == batch
                        and r["float32_softmax"] == on) for on in (True, False)}
        print(f"batch {batch}: {best[True]:.3f} s/image with the float32 softmax, {best[False]:.3f} in "
              f"{result['dtype']} ({best[True] / best[False]:.2f}x)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
