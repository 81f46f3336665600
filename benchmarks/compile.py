"""Which runtime runs the shipped model's sampling networks fastest on this machine: eager
PyTorch, torch.compile (inductor), OpenVINO, ONNX Runtime; in float32 and bfloat16.

Each network that samples many steps (decoder, both upsamplers, diffusion prior) gets the very
inputs its first call gets in one pipeline call at the defaults on --batch prompts (captured by
a hook; the "rows" column: the first reranking round, one candidate per image, guided), and
each runtime is timed on them: the time to build it (compile or
convert, including the first call), then the median of --repeats calls, alternating between
runtimes. The largest difference from eager float32's output is printed beside it.
Then whole pipeline calls at the defaults (batch --batch): eager, compiled, and in ONNX Runtime
as the pipelines run it (`--compile onnx`, float32: unclip.runtime.onnx_runtime).
OpenVINO and ONNX Runtime are optional (`pip install openvino onnx onnxruntime onnxscript`);
a runtime that is not installed or cannot take a network is reported as such.

    python benchmarks/compile.py [--dtypes float32 bfloat16] [--repeats 5] [--batch 8]
        [--pipeline off on onnx] [--skip-networks | --skip-pipeline]

Prints tables and, as its last line, one JSON object.
"""

import argparse
import copy
import inspect
import json
import os
import statistics
import tempfile
import time

import torch

from unclip import load_pipeline
from unclip.runtime.cache import user_cache
from unclip.runtime.devices import cpu_name

RUNTIMES = ("eager", "compile", "openvino", "onnxruntime")


class Positional(torch.nn.Module):
    """A network called with its captured keyword tensors as positional ones, returning one
    tensor: the form exporters take."""

    def __init__(self, net, names, fixed):
        super().__init__()
        self.net, self.names, self.fixed = net, names, fixed

    def forward(self, *tensors):
        return self.net(**dict(zip(self.names, tensors)), **self.fixed)[0]


def capture(pipe, batch: int) -> dict:
    """name -> (module, keyword inputs) of each sampled network's first call at the defaults."""
    seen = {}
    hooks = []
    for name, net in pipe.sampled_networks():
        sig = inspect.signature(net.forward).parameters

        def hook(module, args, kwargs, name=name, params=list(sig)):
            if name not in seen:
                seen[name] = (module, {**dict(zip(params, args)), **kwargs})

        hooks.append(net.register_forward_pre_hook(hook, with_kwargs=True))
    pipe([f"a red circle {i}" for i in range(batch)], generator=torch.Generator().manual_seed(0), output_type="np")
    for h in hooks:
        h.remove()
    return seen


def build(runtime: str, net, inputs: dict, dtype: torch.dtype, folder: str):
    """A callable of the positional input tensors, or the reason there is none."""
    names = [k for k, v in inputs.items() if torch.is_tensor(v)]
    fixed = {k: v for k, v in inputs.items() if not torch.is_tensor(v) and k != "return_dict"}
    wrapped = Positional(net, names, {**fixed, "return_dict": False}).eval()
    tensors = tuple(inputs[k] for k in names)
    if runtime == "eager":
        return wrapped, tensors
    if runtime == "compile":
        return torch.compile(wrapped), tensors
    if runtime == "openvino":
        import openvino as ov

        # converted from float32 (its inputs are numpy, which has no bf16); the CPU plugin then
        # computes in bf16 when asked
        wrapped, tensors = copy.deepcopy(wrapped).float(), tuple(t.float() if t.is_floating_point() else t for t in tensors)
        model = ov.convert_model(wrapped, example_input=tensors)
        hint = {"INFERENCE_PRECISION_HINT": "bf16" if dtype == torch.bfloat16 else "f32"}
        compiled = ov.Core().compile_model(model, "CPU", hint)
        return (lambda *x: torch.from_numpy(compiled([t.numpy() for t in x])[0])), tensors
    if runtime == "onnxruntime":
        import onnxruntime as ort

        if dtype != torch.float32:
            raise RuntimeError("ONNX Runtime's CPU kernels have no bf16 convolutions")
        path = os.path.join(folder, f"{id(net)}.onnx")
        torch.onnx.export(wrapped, tensors, path, dynamo=True)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        feeds = [i.name for i in session.get_inputs()]
        return (lambda *x: torch.from_numpy(session.run(None, {n: t.numpy() for n, t in zip(feeds, x)})[0])), tensors
    raise ValueError(runtime)


def bench_networks(args) -> list[dict]:
    rows, folder = [], tempfile.mkdtemp(prefix="unclip-runtimes-")
    reference = {}
    for dtype_name in args.dtypes:
        dtype = getattr(torch, dtype_name)
        pipe = load_pipeline(args.model, torch_dtype=dtype)
        for name, (net, inputs) in capture(pipe, args.batch).items():
            batch = next(v.shape[0] for v in inputs.values() if torch.is_tensor(v) and v.dim())
            built = {}
            for runtime in args.runtimes:
                start = time.perf_counter()
                try:
                    fn, tensors = build(runtime, net, inputs, dtype, folder)
                    with torch.no_grad():
                        out = fn(*tensors).float()
                except Exception as e:  # noqa: BLE001 - a runtime that cannot take a network is a result
                    rows.append({"network": name, "rows": batch, "dtype": dtype_name, "runtime": runtime,
                                 "error": f"{type(e).__name__}: {str(e).splitlines()[0][:80]}"})
                    continue
                built[runtime] = (fn, tensors, time.perf_counter() - start)
                reference.setdefault(name, out)
                built[runtime] += ((out - reference[name]).abs().max().item(),)
            times = {r: [] for r in built}
            with torch.no_grad():
                for _ in range(args.repeats):
                    for runtime, (fn, tensors, _, _) in built.items():
                        start = time.perf_counter()
                        fn(*tensors)
                        times[runtime].append(time.perf_counter() - start)
            eager = statistics.median(times["eager"]) if "eager" in times else None
            for runtime, (_, _, build_s, diff) in built.items():
                t = statistics.median(times[runtime])
                rows.append({"network": name, "rows": batch, "dtype": dtype_name, "runtime": runtime,
                             "build_s": round(build_s, 2),
                             "call_ms": round(t * 1000, 2), "x_eager": round(eager / t, 2) if eager else None,
                             "max_diff_vs_fp32": round(diff, 5)})
    return rows


def bench_pipeline(args) -> list[dict]:
    """Whole calls at the defaults per dtype and --compile setting (--pipeline: off, on, onnx;
    onnx in float32 only): warm, alternating, median."""
    prompts = [f"a large red circle on the left {i}" for i in range(args.batch)]
    pipes = {}
    for dtype_name in args.dtypes:
        for compiled in args.pipeline:
            if compiled == "onnx" and dtype_name != "float32":
                continue
            start = time.perf_counter()
            pipe = load_pipeline(args.model, torch_dtype=getattr(torch, dtype_name), compile=compiled)
            pipe(prompts, generator=torch.Generator().manual_seed(0), output_type="np")  # warm-up (compiles)
            pipes[(dtype_name, compiled)] = (pipe, time.perf_counter() - start)
    times = {k: [] for k in pipes}
    for _ in range(args.repeats):
        for key, (pipe, _) in pipes.items():
            start = time.perf_counter()
            pipe(prompts, generator=torch.Generator().manual_seed(0), output_type="np")
            times[key].append((time.perf_counter() - start) / args.batch)
    return [{"dtype": d, "compiled": c, "first_call_s": round(pipes[(d, c)][1], 1),
             "s_per_image": round(statistics.median(times[(d, c)]), 4)} for d, c in pipes]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="model folder (default: the shipped model)")
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    p.add_argument("--runtimes", nargs="+", default=list(RUNTIMES), choices=RUNTIMES)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--skip-pipeline", action="store_true")
    p.add_argument("--pipeline", nargs="+", default=["off", "on", "onnx"], choices=["off", "on", "onnx"],
                   help="--compile settings of the whole-call comparison")
    p.add_argument("--skip-networks", action="store_true")
    args = p.parse_args()
    from unclip.runtime.compiled import cache_dir

    cache = cache_dir()
    state = "with kernels in it" if cache.is_dir() and any(cache.iterdir()) else "empty: cold compiles"
    exports = user_cache("onnx")
    onnx_state = "with exports in it" if exports.is_dir() and any(exports.iterdir()) else "empty"
    print(f"CPU: {cpu_name()}; {torch.get_num_threads()} threads; torch {torch.__version__}; inductor cache "
          f"{cache} ({state}); ONNX exports {exports} ({onnx_state})", flush=True)
    rows = [] if args.skip_networks else bench_networks(args)
    if rows:
        print("\n| network | rows | dtype | runtime | build s | ms per call | x eager (same dtype) | max diff vs fp32 |")
        print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['network']} | {r['rows']} | {r['dtype']} | {r['runtime']} | - | - | - | {r['error']} |")
        else:
            print(f"| {r['network']} | {r['rows']} | {r['dtype']} | {r['runtime']} | {r['build_s']} | {r['call_ms']} | "
                  f"{r['x_eager']} | {r['max_diff_vs_fp32']} |", flush=True)
    whole = [] if args.skip_pipeline else bench_pipeline(args)
    if whole:
        print(f"\nwhole calls at the defaults, batch {args.batch}, median of {args.repeats}")
        ref = next((r["s_per_image"] for r in whole if (r["dtype"], r["compiled"]) == ("float32", "off")), None)
        print("| dtype | --compile | first call s (load + build) | s per image | x eager float32 |\n|---|---|---|---|---|")
        for r in whole:
            x = f"{ref / r['s_per_image']:.2f}" if ref else "-"
            print(f"| {r['dtype']} | {r['compiled']} | {r['first_call_s']} | {r['s_per_image']} | {x} |")
    print(json.dumps({"cpu": cpu_name(), "threads": torch.get_num_threads(), "networks": rows, "pipeline": whole}))


if __name__ == "__main__":
    main()
