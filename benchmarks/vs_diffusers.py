"""unclip against diffusers' UnCLIPPipeline on the same Karlo-format weights, side by side.

A Karlo-architecture model scaled to 21 M parameters (CLIP width 128, prior 4 layers x 4
heads x 32, decoder at 32 px with widths 64/128/256, two super-res UNets 32->64) is built with
fixed seeds and written in Karlo's folder layout; unclip loads the folder, diffusers' deprecated
pipeline gets the same components in memory (it cannot load the folder itself). diffusers runs
in --dtype (float32 by default: on a CPU it has no bf16 path, its antialiased bicubic upscale
lacks a bf16 kernel); unclip runs in float32, at its defaults (`--dtype auto`: bf16 where the
precision probe finds it faster) and at its defaults compiled (`--compile on`), compiled with
CUDA graphs (`+graphs`: `pipe.compile(mode="reduce-overhead")`, for a GPU), or in ONNX
Runtime (`float32+onnx`, `--compile onnx`). Each runs in its
own worker process (so that each one's peak RSS is its own), all alternating: a warm-up each
(which compiles), then --reps timed runs each, of the same prompts (batch 8) with the same steps,
guidance and seed. Prints the CPU and its bf16 flags, a table (seconds per image by stage, median
over the runs; compiled networks are not split by stage), then one JSON line with everything,
including each one's largest and mean pixel difference from diffusers' images.

    python benchmarks/vs_diffusers.py [--reps 3] [--batch 8] [--device cpu|cuda] [--dtype float32]
        [--variants diffusers float32 auto auto+compile float16+graphs float32+onnx]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import statistics
import tempfile
import time

import numpy as np

PROMPTS = ["a red horse", "a blue circle", "the photo of a horse", "a red square on the blue",
           "a horse on the square", "the blue photo", "a circle of red", "a photo"]
STAGES = {"text_encoder": "text", "prior": "prior", "decoder": "decoder", "super_res_first": "super_res",
          "super_res_last": "super_res"}
SIZES = dict(embed_dim=128, text_layers=4, text_heads=4, prior_layers=4, prior_heads=4, prior_head_dim=32,
             base_size=32, decoder_channels=(64, 128, 256), decoder_head_dim=32, cross_attention_dim=128,
             layers_per_block=1, super_res_size=64, super_res_channels=(64, 128))


def time_stages(modules: dict, seconds: dict) -> None:
    """Add each module's forward time to seconds[stage] (synchronising on CUDA)."""
    import torch

    def sync():
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    for name, module in modules.items():
        stage = STAGES[name]

        def pre(_m, _a, _k=None):
            sync()
            _m._t0 = time.perf_counter()

        def post(_m, _a, _o, stage=stage, _k=None):
            sync()
            seconds[stage] = seconds.get(stage, 0.0) + time.perf_counter() - _m._t0

        module.register_forward_pre_hook(pre)
        module.register_forward_hook(post)


def worker(which: str, folder: str, args, conn) -> None:
    import torch

    from unclip.pipelines.karlo.synthetic import KarloSizes, random_components

    torch.set_num_threads(args.threads)
    if which == "diffusers":
        from diffusers.pipelines.deprecated.unclip import UnCLIPPipeline

        parts = random_components(KarloSizes(**SIZES), seed=0)
        pipe = UnCLIPPipeline(**parts).to(args.device, getattr(torch, args.dtype))
        pipe.set_progress_bar_config(disable=True)
    else:
        from unclip import load_pipeline

        dtype, _, backend = which.partition("+")
        pipe = load_pipeline(folder, torch_dtype=dtype, device=args.device,
                             compile={"": "auto", "compile": "on", "graphs": "off", "onnx": "onnx"}[backend])
        if backend == "graphs":
            pipe.compile(mode="reduce-overhead")
    modules = {n: getattr(pipe, n) for n in STAGES}
    params = sum(p.numel() for m in modules.values() for p in m.parameters())
    seconds: dict = {}
    if not {"compile", "graphs"} & set(which.split("+")):  # hooks would be traced into compiled graphs
        time_stages(modules, seconds)
    prompts = (PROMPTS * (args.batch // len(PROMPTS) + 1))[:args.batch]
    conn.send({"params": params})
    while (msg := conn.recv()) != "stop":
        seconds.clear()
        start = time.perf_counter()
        with torch.no_grad():
            images = pipe(prompts, generator=torch.Generator().manual_seed(0), output_type="np").images
        total = time.perf_counter() - start
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MB (Linux reports kB)
        conn.send({"total": total, "stages": dict(seconds), "rss_mb": rss, "dtype": str(pipe.dtype),
                   "images": images if msg == "images" else None})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--variants", nargs="+", default=["diffusers", "float32", "auto", "auto+compile"],
                   help="diffusers, and unclip at a --dtype (and --compile auto), +compile for --compile on, "
                   "+graphs for torch.compile's reduce-overhead mode (CUDA graphs), +onnx for --compile onnx")
    args = p.parse_args()
    import os

    import torch

    from unclip.pipelines.karlo.synthetic import KarloSizes, random_components, write_folder

    args.threads = args.threads or os.cpu_count()
    folder = tempfile.mkdtemp(prefix="karlo21m-")
    write_folder(random_components(KarloSizes(**SIZES), seed=0), folder)
    ctx = mp.get_context("spawn")
    workers = {}
    for which in args.variants:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=worker, args=(which, folder, args, child), daemon=True)
        proc.start()
        workers[which] = (proc, parent, parent.recv())
    runs = {w: [] for w in workers}
    images = {}
    for rep in range(args.reps + 1):  # rep 0 is the warm-up
        for which, (_, conn, _) in workers.items():
            conn.send("images" if rep == args.reps else "run")
            out = conn.recv()
            if out["images"] is not None:
                images[which] = out.pop("images")
            if rep > 0:
                runs[which].append(out)
    for _, conn, _ in workers.values():
        conn.send("stop")
    from unclip.runtime.devices import cpu_name

    device = cpu_name() if args.device == "cpu" else torch.cuda.get_device_name(0)
    report = {"device": device, "diffusers_dtype": args.dtype, "threads": args.threads, "batch": args.batch,
              "reps": args.reps, "steps": [25, 25, 7], "guidance": [4.0, 8.0]}
    print(f"{device}, {args.threads} threads, batch {args.batch}, steps 25/25/7, guidance 4/8, "
          f"median of {args.reps} alternating runs after a warm-up")
    print(f"{'':<34}{'computes in':>15}{'s/image':>9}{'x diffusers':>12}{'text':>7}{'prior':>7}{'decoder':>9}"
          f"{'super-res':>10}{'peak RSS':>10}{'max diff':>9}{'mean diff':>10}")
    base = statistics.median(x["total"] for x in runs["diffusers"]) / args.batch if "diffusers" in runs else None
    for which, (_, _, info) in workers.items():
        r = runs[which]
        per = {k: statistics.median(x["stages"].get(k, 0.0) for x in r) / args.batch
               for k in ("text", "prior", "decoder", "super_res")}
        total = statistics.median(x["total"] for x in r) / args.batch
        rss = max(x["rss_mb"] for x in r)
        name = which if which == "diffusers" else \
            f"unclip --dtype {which.replace('+compile', ' --compile on').replace('+graphs', ' +graphs')}"
        row = {"computes_in": r[0]["dtype"], "params_m": round(info["params"] / 1e6, 2),
               "s_per_image": round(total, 4), "peak_rss_mb": round(rss),
               "stages_s_per_image": {k: round(v, 4) for k, v in per.items()} if per["decoder"] else None}
        if base:
            row["x_diffusers"] = round(base / total, 3)
        if "diffusers" in images:
            diff = np.abs(images["diffusers"].astype(np.float64) - images[which].astype(np.float64)) * 255
            row["max_pixel_diff_255"], row["mean_pixel_diff_255"] = round(float(diff.max()), 4), round(float(diff.mean()), 5)
        report[name] = row
        stages = "".join(f"{per[k]:{w}.3f}" for k, w in (("text", 7), ("prior", 7), ("decoder", 9), ("super_res", 10))) \
            if per["decoder"] else f"{'(compiled: not split)':>33}"
        print(f"{name:<34}{row['computes_in'].replace('torch.', ''):>15}{total:9.3f}{row.get('x_diffusers', 1):11.2f}x"
              f"{stages}{rss:9.0f}M{row.get('max_pixel_diff_255', 0):9.2f}{row.get('mean_pixel_diff_255', 0):10.4f}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
