"""What batching gains inside the pipeline: the same requests (prompt, seed) drawn one at a time and
in batches, the seconds of each network per image. A server that batches cannot serve faster than
this once its model is busy all the time (serve_load.py prints how busy it was).

    python benchmarks/batch_gain.py [--requests 24] [--batch 8] [--dtype auto] [--rounds 2] [--compiled]
                                    [--device cuda]

It ends with each sampled network's milliseconds per row at 2 to 64 rows a call (one call's
inputs repeated): batching can only gain what a network saves per row in larger calls. Beside
them, the GFLOP/s each reaches (torch's FLOP counter) against a 2048 x 2048 matrix product's in
the same dtype: how close to what this CPU can do the networks already run. --compiled then
compiles the networks as `--compile on` does (printing how long that took, with inductor's cache
empty or warm) and measures it all again. On a GPU (`--device cuda`: what a server that batches
could gain there, where `unclip serve` itself cannot be taken) the times wait for the device, and
the per-network split is left out (hooks that wait for the device would time their launches only).
"""

import argparse
import json
import random
import time
from collections import defaultdict

import torch
from torch.utils.flop_counter import FlopCounterMode

from unclip.pipelines.registry import load_pipeline
from unclip.runtime.devices import cpu_name

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange"]  # serve_load.py's clients' prompts
SHAPES = ["circle", "square", "triangle", "star"]
TIMED = {"clip": ["model.text_model", "model.vision_model"], "reranker": ["model.text_model", "model.vision_model"],
         "prior": ["transformer"], "decoder": ["unet"], "upsampler1": ["unet"], "upsampler2": ["unet"]}


def timers(pipe) -> tuple[dict, list]:
    """Forward hooks adding each network's seconds, calls and rows to the returned tally; the hooks."""
    tally, started, hooks = defaultdict(lambda: {"s": 0.0, "calls": 0, "rows": 0}), {}, []
    for name, net in pipe.networks():
        for path in TIMED.get(name, []):
            key = f"{name}.{path.split('.')[-1]}"

            def pre(m, args, key=key):
                started[key] = time.perf_counter()
                tally[key]["calls"] += 1
                tally[key]["rows"] += len(args[0]) if args and torch.is_tensor(args[0]) else 0

            def post(m, args, out, key=key):
                tally[key]["s"] += time.perf_counter() - started[key]

            hooks.append(net.get_submodule(path).register_forward_pre_hook(pre))
            hooks.append(net.get_submodule(path).register_forward_hook(post))
    return tally, hooks


ROWS = (2, 4, 8, 16, 32, 64)


def wait(device: torch.device) -> None:
    """Until `device` has done what was queued: a GPU runs ahead of the Python that feeds it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(dtype: torch.dtype, n: int = 2048, seconds: float = 2.0, device: str = "cpu") -> float:
    """What this device's torch reaches on a large matrix product in `dtype`: the ceiling for networks."""
    a, b = (torch.randn(n, n, dtype=dtype, device=device) for _ in range(2))
    a @ b
    wait(a.device)
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        a @ b
        calls += 1
        if calls % 16 == 0:
            wait(a.device)
    wait(a.device)
    return 2 * n ** 3 * calls / (time.perf_counter() - start) / 1e9


def first_inputs(pipe, prompt: str, names=None) -> dict:
    """{network: (args, kwargs)} of each sampled network's (those in `names`) first call in one
    pipeline call on `prompt` at the defaults."""
    seen = {}

    def keep(name):
        def hook(module, args, kwargs):
            seen.setdefault(name, (args, kwargs))  # returns None: the call's inputs stay as they are
        return hook

    hooks = [net.register_forward_pre_hook(keep(name), with_kwargs=True)
             for name, net in pipe.sampled_networks() if names is None or name in names]
    pipe([prompt], generator=[torch.Generator().manual_seed(0)], output_type="uint8")
    for h in hooks:
        h.remove()
    return seen


def rows_of(inputs: tuple) -> int:
    args, kwargs = inputs
    return next(v for v in (*args, *kwargs.values()) if torch.is_tensor(v) and v.dim()).shape[0]


def repeated(inputs: tuple, rows: int) -> tuple | None:
    """A call's (args, kwargs) with its batch repeated to `rows` rows; None if its rows do not divide."""
    args, kwargs = inputs
    base = rows_of(inputs)
    if rows % base:
        return None

    def grow(v):
        return v.repeat(rows // base, *[1] * (v.dim() - 1)) if torch.is_tensor(v) and v.dim() and len(v) == base else v
    return [grow(v) for v in args], {n: grow(v) for n, v in kwargs.items()}


def requests(n: int) -> list[tuple[str, int]]:
    """`n` (prompt, seed) pairs like serve_load.py's clients'."""
    rng = random.Random(0)
    return [(f"a {rng.choice(COLOURS)} {rng.choice(SHAPES)} on a white background", 1000 + i) for i in range(n)]


def draw(pipe, pairs: list, batch: int) -> float:
    """Seconds per image drawing `pairs` in calls of `batch` requests, each image its own seed."""
    start = time.perf_counter()
    for i in range(0, len(pairs), batch):
        chunk = pairs[i:i + batch]
        pipe([q for q, _ in chunk], generator=[torch.Generator().manual_seed(s) for _, s in chunk], output_type="uint8")
    wait(pipe.device)
    return (time.perf_counter() - start) / len(pairs)


def alternating(pipe, pairs: list, settings: dict, rounds: int, swap: bool = False) -> list[dict]:
    """Draw `pairs` one request at a time and in batches of 8 under each of `settings` ({name:
    function that applies it to `pipe`}), in turn, `rounds` times (`swap`: the order reversed every
    other round, where run-to-run spread is as large as the difference); a row each."""
    out, names = [], list(settings)
    for r in range(rounds):
        for name in (names[::-1] if swap and r % 2 else names):
            settings[name](pipe)
            for batch in (1, 8):
                s = draw(pipe, pairs, batch)
                print(f"| {name} | {batch} | {s:.3f} |", flush=True)
                out.append({"setting": name, "batch": batch, "s_per_image": s})
    return out


@torch.no_grad()
def per_row(pipe, prompt: str, label: str = "", flops: dict | None = None) -> tuple[dict, dict]:
    """({network: {rows: ms per row}}, {network: GFLOP a row}) for each sampled network, replaying the
    inputs of its first call in `prompt`'s pipeline call repeated to each of ROWS rows (those its
    first call's rows divide). `flops`: the GFLOP a row counted before (not counted again)."""
    seen = first_inputs(pipe, prompt)
    curves, flops = {}, dict(flops or {})
    for name, net in pipe.sampled_networks():
        args, kwargs = seen[name]
        if name not in flops:
            counter = FlopCounterMode(display=False)
            with counter:
                net(*args, **kwargs)
            flops[name] = counter.get_total_flops() / rows_of(seen[name]) / 1e9
        curves[name] = {}
        for rows in ROWS:
            if (call := repeated(seen[name], rows)) is None:
                continue
            net(*call[0], **call[1])  # warm-up: oneDNN (cuDNN) picks its kernels for this shape
            wait(pipe.device)
            start, calls = time.perf_counter(), 0
            while time.perf_counter() - start < 1.5:
                net(*call[0], **call[1])
                calls += 1
                wait(pipe.device)
            curves[name][rows] = 1000 * (time.perf_counter() - start) / calls / rows
        print(f"{name}{label}: ms per row at " + ", ".join(f"{r} rows {ms:.2f}" for r, ms in curves[name].items())
              + f"; {flops[name]:.2f} GFLOP a row, so GFLOP/s "
              + ", ".join(f"{flops[name] * 1000 / ms:.0f}" for ms in curves[name].values()), flush=True)
    return curves, flops


def both_ways(pipe, pairs: list, batch: int, rounds: int, tally: dict | None, label: str = "") -> tuple[list, float]:
    """Draw `pairs` one request at a time and in calls of `batch`, alternating, `rounds` times each:
    the runs and how much faster per image batches were (best of each)."""
    runs, n = [], len(pairs)
    for _ in range(rounds):
        for b in (1, batch):
            if tally is not None:
                tally.clear()
            total = draw(pipe, pairs, b)
            nets = {k: dict(v, s=v["s"] / n) for k, v in sorted((tally or {}).items(), key=lambda kv: -kv[1]["s"])}
            runs.append({"batch": b, "compiled": bool(label), "s_per_image": total, "networks": nets})
            print(f"batch {b}{label}: {total:.3f} s/image" + "".join(
                f"; {k} {v['s']:.3f} s ({v['calls']} calls" + (f", {v['rows'] / n:.0f} rows/image)" if v["rows"] else ")")
                for k, v in nets.items()), flush=True)
    best = {b: min(r["s_per_image"] for r in runs if r["batch"] == b) for b in (1, batch)}
    print(f"{n} requests{label}: batches of {batch} {best[1] / best[batch]:.2f}x faster per image than one at a "
          f"time (best of {rounds} each: {best[1]:.3f} against {best[batch]:.3f} s/image)", flush=True)
    return runs, best[1] / best[batch]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=24)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--rounds", type=int, default=2, help="each way this many times, alternating")
    p.add_argument("--device", default="cpu", help="cpu, or cuda[:N] (no per-network split there)")
    p.add_argument("--compiled", action="store_true",
                   help="then all of it again with the networks compiled as --compile on compiles them")
    args = p.parse_args()
    pipe = load_pipeline(None, torch_dtype=args.dtype, device=args.device, compile="off")
    where = torch.cuda.get_device_name(pipe.device) if pipe.device.type == "cuda" else \
        f"CPU: {cpu_name()}; {torch.get_num_threads()} threads"
    print(f"{where}; torch {torch.__version__}; the shipped model at its defaults in "
          f"{str(pipe.dtype).removeprefix('torch.')}")
    pairs = requests(args.requests)
    tally, hooks = timers(pipe) if pipe.device.type == "cpu" else (None, [])
    pipe([pairs[0][0]], generator=[torch.Generator().manual_seed(0)], output_type="uint8")  # warm-up
    runs, speedup = both_ways(pipe, pairs, args.batch, args.rounds, tally)
    ceiling = matmul_gflops(pipe.dtype, device=args.device)
    print(f"a 2048 x 2048 matrix product in {str(pipe.dtype).removeprefix('torch.')}: {ceiling:.0f} GFLOP/s")
    curves, flops = per_row(pipe, pairs[0][0])
    result = {"runs": runs, "speedup": speedup, "ms_per_row": curves, "gflop_per_row": flops,
              "matmul_gflops": ceiling}
    if args.compiled:
        from unclip.runtime.compiled import cache_dir, cache_is_warm, compile_networks

        for h in hooks:  # timing hooks inside a compiled graph would break it
            h.remove()
        state = "warm" if cache_is_warm() else "empty"
        compile_networks(list(pipe.sampled_networks()))
        start = time.perf_counter()
        pipe([pairs[0][0]], generator=[torch.Generator().manual_seed(0)], output_type="uint8")
        result["compile_s"] = time.perf_counter() - start
        print(f"compiled (torch.compile, dynamic shapes; inductor cache {cache_dir()} {state}) in "
              f"{result['compile_s']:.0f} s", flush=True)
        result["runs"] += both_ways(pipe, pairs, args.batch, args.rounds, None, " compiled")[0]
        result["ms_per_row_compiled"] = per_row(pipe, pairs[0][0], " compiled", flops)[0]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
