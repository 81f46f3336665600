"""Which attention the shipped model's networks should run on the CPU: diffusers' plain-matmul
processors (scores materialised, softmax upcast to float32) or its SDPA ones
(torch's scaled_dot_product_attention), for the decoder (AttnAddedKVProcessor against
AttnAddedKVProcessor2_0) and the diffusion prior (AttnProcessor against AttnProcessor2_0).

Three measurements, each alternating between the two:
  1. sampling: ms per row of each network at 2 to 32 rows a call, in float32 and bfloat16 (the
     inputs of its first call at the defaults, repeated), with the largest difference in output;
  2. training: one forward and backward step at --train-rows rows, float32;
  3. whole pipeline calls at the defaults (--dtype, default auto): s/image one request at a time
     and in batches of 8, on the same --requests prompts and seeds.

    python benchmarks/attention.py [--requests 16] [--train-rows 16] [--dtype auto]

Prints tables and, as its last line, one JSON object.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from diffusers.models.attention_processor import (AttnAddedKVProcessor, AttnAddedKVProcessor2_0, AttnProcessor,
                                                  AttnProcessor2_0)

sys.path.insert(0, str(Path(__file__).parent))
from batch_gain import alternating, first_inputs, repeated, requests  # noqa: E402  its prompts and replays

from unclip.pipelines.registry import load_pipeline  # noqa: E402
from unclip.runtime.devices import cpu_name  # noqa: E402

PROCESSORS = {"decoder": {"plain": AttnAddedKVProcessor, "sdpa": AttnAddedKVProcessor2_0},
              "prior": {"plain": AttnProcessor, "sdpa": AttnProcessor2_0}}
ROWS = (2, 4, 8, 16, 32)
PROMPT = "a red circle on a white background"


def attention_of(pipe) -> dict:
    """{network name: the module whose processors to set} for the networks PROCESSORS names."""
    nets = dict(pipe.sampled_networks())
    return {name: nets[name] for name in PROCESSORS if name in nets}


def use(pipe, kind: str) -> None:
    for name, net in attention_of(pipe).items():
        net.set_attn_processor(PROCESSORS[name][kind]())


def output(out) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else next(v for v in out.values() if torch.is_tensor(v))


def timed(fn, seconds: float) -> float:
    fn()  # warm-up: oneDNN picks its kernels for this shape
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        fn()
        calls += 1
    return (time.perf_counter() - start) / calls


@torch.no_grad()
def sampling(pipe, inputs: dict, dtype: str) -> list[dict]:
    rows_out = []
    for name, net in attention_of(pipe).items():
        for rows in ROWS:
            call = repeated(inputs[name], rows)
            if call is None:
                continue
            ms, outs = {"plain": [], "sdpa": []}, {}
            for kind in ("plain", "sdpa", "plain", "sdpa"):
                use(pipe, kind)
                ms[kind].append(1000 * timed(lambda: net(*call[0], **call[1]), 1.0) / rows)
                outs[kind] = output(net(*call[0], **call[1])).float()
            row = {"network": name, "dtype": dtype, "rows": rows, "plain_ms_per_row": min(ms["plain"]),
                   "sdpa_ms_per_row": min(ms["sdpa"]), "max_diff": (outs["plain"] - outs["sdpa"]).abs().max().item()}
            row["sdpa_speedup"] = row["plain_ms_per_row"] / row["sdpa_ms_per_row"]
            print(f"| {name} | {dtype} | {rows} | {row['plain_ms_per_row']:.2f} | {row['sdpa_ms_per_row']:.2f} | "
                  f"{row['sdpa_speedup']:.2f}x | {row['max_diff']:.1e} |", flush=True)
            rows_out.append(row)
    use(pipe, "sdpa")
    return rows_out


def training(pipe, inputs: dict, rows: int) -> list[dict]:
    out = []
    for name, net in attention_of(pipe).items():
        call = repeated(inputs[name], rows)
        if call is None:
            continue
        net.train()

        def step():
            output(net(*call[0], **call[1])).float().pow(2).mean().backward()
            net.zero_grad(set_to_none=True)
        ms = {"plain": [], "sdpa": []}
        for kind in ("plain", "sdpa", "plain", "sdpa"):
            use(pipe, kind)
            ms[kind].append(1000 * timed(step, 3.0))
        net.eval()
        row = {"network": name, "rows": rows, "plain_ms": min(ms["plain"]), "sdpa_ms": min(ms["sdpa"])}
        print(f"| {name} | {rows} | {row['plain_ms']:.0f} | {row['sdpa_ms']:.0f} | "
              f"{row['plain_ms'] / row['sdpa_ms']:.2f}x |", flush=True)
        out.append(row)
    use(pipe, "sdpa")
    return out


@torch.no_grad()
def whole(pipe, n: int) -> list[dict]:
    rows = alternating(pipe, requests(n), {kind: lambda p, kind=kind: use(p, kind) for kind in ("plain", "sdpa")}, 2)
    return [{"attention": r["setting"], "batch": r["batch"], "s_per_image": r["s_per_image"]} for r in rows]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=16)
    p.add_argument("--train-rows", type=int, default=16)
    p.add_argument("--dtype", default="auto", help="the whole-pipeline part's precision")
    args = p.parse_args()
    print(f"CPU: {cpu_name()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    result = {"cpu": cpu_name(), "sampling": [], "training": [], "pipeline": []}
    print("\nsampling, ms per row (best of 2 each, alternating)\n"
          "| network | dtype | rows | plain | sdpa | sdpa speed-up | max diff |\n|---|---|---|---|---|---|---|")
    for dtype in ("float32", "bfloat16"):
        pipe = load_pipeline(None, torch_dtype=dtype, device="cpu", compile="off")
        result["sampling"] += sampling(pipe, first_inputs(pipe, PROMPT, PROCESSORS), dtype)
        if dtype == "float32":
            print("\ntraining, one forward and backward step, float32 (best of 2 each)\n"
                  "| network | rows | plain ms | sdpa ms | sdpa speed-up |\n|---|---|---|---|---|")
            result["training"] = training(pipe, first_inputs(pipe, PROMPT, PROCESSORS), args.train_rows)
            print("\nsampling, ms per row (continued)")
        del pipe
    pipe = load_pipeline(None, torch_dtype=args.dtype, device="cpu", compile="off")
    result["dtype"] = str(pipe.dtype).removeprefix("torch.")
    print(f"\nwhole pipeline calls at the defaults in {result['dtype']}, {args.requests} requests\n"
          "| attention | batch | s per image |\n|---|---|---|")
    result["pipeline"] = whole(pipe, args.requests)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
