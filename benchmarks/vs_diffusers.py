"""unclip against diffusers' DalleTwoPipeline on the same Karlo-format weights, side by side.

A Karlo-architecture model scaled to 21 M parameters (CLIP width 128, prior 4 layers x 4
heads x 32, decoder at 32 px with widths 64/128/256, two super-res UNets 32->64) is built with
fixed seeds and written in Karlo's folder layout; unclip loads the folder, diffusers' deprecated
pipeline gets the same components in memory (it cannot load the folder itself). Each runs in its
own worker process (so that each one's peak RSS is its own), the two alternating: a warm-up
each, then --reps timed runs each, of the same prompts (batch 8) with the same steps, guidance
and seed. Prints a table (seconds per image by stage, median over the runs), then one JSON line
with everything, including the largest and mean pixel difference between the two outputs.

    python benchmarks/vs_diffusers.py [--reps 3] [--batch 8] [--device cpu|cuda] [--dtype float32]
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

    from unclip.karlo.synthetic import KarloSizes, random_components

    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    if which == "diffusers":
        from diffusers.pipelines.deprecated.unclip import DalleTwoPipeline

        parts = random_components(KarloSizes(**SIZES), seed=0)
        pipe = DalleTwoPipeline(**parts).to(args.device, dtype)
        pipe.set_progress_bar_config(disable=True)
        modules = {n: getattr(pipe, n) for n in STAGES}
    else:
        from unclip.karlo import KarloPipeline

        pipe = KarloPipeline.from_pretrained(folder, torch_dtype=dtype).to(args.device)
        modules = {n: getattr(pipe, n) for n in STAGES}
    params = sum(p.numel() for m in modules.values() for p in m.parameters())
    seconds: dict = {}
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
        conn.send({"total": total, "stages": dict(seconds), "rss_mb": rss,
                   "images": images if msg == "images" else None})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    args = p.parse_args()
    import os

    import torch

    from unclip.karlo.synthetic import KarloSizes, random_components, write_folder

    args.threads = args.threads or os.cpu_count()
    folder = tempfile.mkdtemp(prefix="karlo21m-")
    write_folder(random_components(KarloSizes(**SIZES), seed=0), folder)
    ctx = mp.get_context("spawn")
    workers = {}
    for which in ("diffusers", "unclip"):
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
    device = args.device if args.device == "cpu" else torch.cuda.get_device_name(0)
    report = {"device": device, "dtype": args.dtype, "threads": args.threads, "batch": args.batch,
              "reps": args.reps, "steps": [25, 25, 7], "guidance": [4.0, 8.0]}
    print(f"{device}, {args.dtype}, {args.threads} threads, batch {args.batch}, steps 25/25/7, guidance 4/8, "
          f"median of {args.reps} alternating runs after a warm-up")
    print(f"{'':<10}{'params':>9}{'s/image':>9}{'text':>7}{'prior':>7}{'decoder':>9}{'super-res':>10}{'peak RSS':>10}")
    for which, (_, _, info) in workers.items():
        r = runs[which]
        per = {k: statistics.median(x["stages"].get(k, 0.0) for x in r) / args.batch
               for k in ("text", "prior", "decoder", "super_res")}
        total = statistics.median(x["total"] for x in r) / args.batch
        rss = max(x["rss_mb"] for x in r)
        report[which] = {"params_m": round(info["params"] / 1e6, 2), "s_per_image": round(total, 4),
                         "stages_s_per_image": {k: round(v, 4) for k, v in per.items()}, "peak_rss_mb": round(rss)}
        print(f"{which:<10}{info['params'] / 1e6:8.1f}M{total:9.3f}{per['text']:7.3f}{per['prior']:7.3f}"
              f"{per['decoder']:9.3f}{per['super_res']:10.3f}{rss:9.0f}M")
    diff = np.abs(images["diffusers"].astype(np.float64) - images["unclip"].astype(np.float64)) * 255
    report["speedup"] = round(report["diffusers"]["s_per_image"] / report["unclip"]["s_per_image"], 3)
    report["max_pixel_diff_255"] = round(float(diff.max()), 4)
    report["mean_pixel_diff_255"] = round(float(diff.mean()), 5)
    print(f"unclip is {report['speedup']:.2f}x diffusers' speed; pixel difference (0-255): "
          f"largest {report['max_pixel_diff_255']:.3f}, mean {report['mean_pixel_diff_255']:.4f}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
