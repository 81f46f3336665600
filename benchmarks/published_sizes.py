"""The published unCLIP families at their real size: memory and speed, unclip beside diffusers.

Builds a family's folders at the published architecture with seeded random weights
(unclip.pipelines.published: meta-device networks, weights written tensor by tensor in --dtype),
then, each in its own process so each peak is its own, loads the same folders with unclip and
with diffusers' `from_pretrained` and draws the same prompt with the same steps and seed:

- load seconds, peak RSS while loading against the weights' bytes (one copy: <= 1.15x);
- seconds per image (the second of two calls), peak RSS, peak GPU memory (CUDA);
- on the CPU, the whole process too: `unclip generate` against diffusers' script, load included;
- the mean pixel difference between unclip's image and diffusers' (of 255);
- --modes: none (the whole model on --device), model / sequential (offloading onto the GPU),
  slicing (a batch of 2 decoded one by one), tiling (the latent decoder in tiles).

    python benchmarks/published_sizes.py --family kandinsky --device cpu --dtype bfloat16 --keep DIR
    python benchmarks/published_sizes.py --family karlo --device cuda --dtype float16 --modes none model sequential

Prints the machine, a table of parameters per component (built / published), a table of runs,
and ends with one JSON line of every figure. --keep DIR leaves the folders in DIR (DIR/prior,
DIR/decoder, ... as published, each with its model_index.json) and reuses them when they match.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PROMPT = "a red horse on the blue square"
STEP_NAMES = {"kandinsky": ("prior", "decoder"), "karlo": ("prior", "decoder", "super_res"),
              "stable_unclip": ("decoder",)}
DEFAULT_STEPS = {"kandinsky": dict(prior=25, decoder=100), "karlo": dict(prior=25, decoder=25, super_res=7),
                 "stable_unclip": dict(decoder=20)}


def peak_rss_gb() -> float:
    """This process's peak resident memory so far (VmHWM), in GB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) * 1024 / 1e9
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def variation_input():
    from PIL import Image

    g = np.random.default_rng(0)
    return Image.fromarray((g.random((224, 224, 3)) * 255).astype(np.uint8))


# -- one side's loading and call, per family --------------------------------------------------------
def load_unclip(family: str, folders: dict, dtype, device):
    from unclip.pipelines.registry import load_pipeline

    model = folders[{"kandinsky": "decoder", "karlo": "karlo", "stable_unclip": "vit_h"}[family]]
    prior = folders["prior"] if family == "kandinsky" else None
    return load_pipeline(model, torch_dtype=dtype, device=device, compile="off", prior_model=prior)


def call_size(pipe, family: str) -> int:
    """The side in pixels a family draws at by default (its UNet's latent side x 8)."""
    return pipe.unet.config.sample_size * 8 if family != "karlo" else 256


def call_unclip(pipe, family: str, steps: dict, batch: int, generator):
    if family == "kandinsky":
        kw = dict(prior_num_inference_steps=steps["prior"], num_inference_steps=steps["decoder"])
    elif family == "karlo":
        kw = dict(prior_num_inference_steps=steps["prior"], decoder_num_inference_steps=steps["decoder"],
                  super_res_num_inference_steps=steps["super_res"])
    else:
        return pipe(image=variation_input(), num_images_per_prompt=batch, num_inference_steps=steps["decoder"],
                    generator=generator, output_type="np").images
    return pipe(PROMPT, num_images_per_prompt=batch, generator=generator, output_type="np", **kw).images


def load_diffusers(family: str, folders: dict, dtype, device):
    import diffusers
    import transformers
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    if family == "kandinsky":  # the PIL processor: the default one needs torchvision
        proc = CLIPImageProcessorPil.from_pretrained(folders["prior"] / "image_processor")
        prior = diffusers.KandinskyV22PriorPipeline.from_pretrained(folders["prior"], torch_dtype=dtype,
                                                                    image_processor=proc)
        dec = diffusers.KandinskyV22Pipeline.from_pretrained(folders["decoder"], torch_dtype=dtype)
        pipe = diffusers.KandinskyV22CombinedPipeline(
            **dec.components, **{f"prior_{k}": v for k, v in prior.components.items()})
    elif family == "karlo":  # the deprecated pipeline cannot read the folder's index: by component
        from diffusers.pipelines.deprecated.unclip import UnCLIPPipeline

        from unclip.pipelines.published import NETWORKS, network_class

        root, parts = folders["karlo"], {}
        for key, (lib, cls, _, _) in NETWORKS["karlo"].items():
            folder, name = key.split("/")
            if folder == "karlo":
                kw = {"dtype": dtype} if lib == "transformers" else {"torch_dtype": dtype}
                parts[name] = network_class(lib, cls).from_pretrained(root / name, **kw)
        for name in ("prior_scheduler", "decoder_scheduler", "super_res_scheduler"):
            parts[name] = diffusers.UnCLIPScheduler.from_pretrained(root / name)
        parts["tokenizer"] = transformers.CLIPTokenizer.from_pretrained(root / "tokenizer")
        pipe = UnCLIPPipeline(**parts)
    else:
        proc = CLIPImageProcessorPil.from_pretrained(folders["vit_h"] / "feature_extractor")
        pipe = diffusers.StableUnCLIPImg2ImgPipeline.from_pretrained(folders["vit_h"], torch_dtype=dtype,
                                                                     feature_extractor=proc)
    pipe.set_progress_bar_config(disable=True)
    return pipe if device is None else pipe.to(device)


def call_diffusers(pipe, family: str, steps: dict, batch: int, generator):
    if family == "kandinsky":  # at the UNet's own size, as unclip draws by default (512 px published)
        side = pipe.unet.config.sample_size * 2 ** (len(pipe.movq.config.block_out_channels) - 1)
        return pipe(PROMPT, num_images_per_prompt=batch, prior_num_inference_steps=steps["prior"],
                    num_inference_steps=steps["decoder"], generator=generator, output_type="np",
                    height=side, width=side).images
    if family == "karlo":
        return pipe(PROMPT, num_images_per_prompt=batch, prior_num_inference_steps=steps["prior"],
                    decoder_num_inference_steps=steps["decoder"], super_res_num_inference_steps=steps["super_res"],
                    generator=generator, output_type="np").images
    return pipe(image=variation_input(), num_images_per_prompt=batch, num_inference_steps=steps["decoder"],
                generator=generator, output_type="np").images


# -- a worker process: one side, one mode -----------------------------------------------------------
def worker(job: dict) -> dict:
    import torch

    start = time.perf_counter()
    dtype, family, mode = getattr(torch, job["dtype"]), job["family"], job["mode"]
    folders = {k: Path(v) for k, v in job["folders"].items()}
    offloaded = mode in ("model", "sequential")
    load, call = (load_unclip, call_unclip) if job["side"] == "unclip" else (load_diffusers, call_diffusers)
    pipe = load(family, folders, dtype, None if offloaded else job["device"])
    _sync()
    nets = [m for m in vars(pipe).values() if isinstance(m, torch.nn.Module)] if job["side"] != "unclip" \
        else [m for _, m in pipe.networks()]
    weights = sum(t.numel() * t.element_size() for m in nets for t in list(m.parameters()) + list(m.buffers()))
    res = dict(job, load_s=time.perf_counter() - start, load_peak_rss_gb=peak_rss_gb(), weights_gb=weights / 1e9)
    if mode == "model":
        pipe.enable_model_cpu_offload(device=job["device"])
    elif mode == "sequential":
        pipe.enable_sequential_cpu_offload(device=job["device"])
    elif mode == "slicing":
        pipe.enable_vae_slicing()
    elif mode == "tiling":  # tiles of half the image's side, so that a published-size image is tiled
        pipe.enable_vae_tiling()
        decoder = pipe.latent_decoder if job["side"] == "unclip" else pipe.vae
        decoder.tile_latent_min_size = call_size(pipe, family) // 8 // 2
        if hasattr(decoder, "tile_sample_min_size"):  # diffusers' AutoencoderKL tiles by both
            decoder.tile_sample_min_size = decoder.tile_latent_min_size * 8
    batch = 2 if mode == "slicing" else 1
    seconds = []
    for _ in range(job["calls"]):
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        images = call(pipe, family, job["steps"], batch, torch.Generator().manual_seed(0))
        _sync()
        seconds.append((time.perf_counter() - t) / batch)
    res.update(s_per_image=seconds[-1], first_call_s=seconds[0] * batch, peak_rss_gb=peak_rss_gb(),
               image_px=list(np.asarray(images).shape[1:3]))
    if torch.cuda.is_available():
        res["peak_gpu_gb"] = torch.cuda.max_memory_allocated() / 1e9
    np.save(job["image"], np.asarray(images[0], dtype=np.float32))
    return res


def run_child(cmd: list[str], env: dict | None = None) -> tuple[int, object, str, str]:
    """Run `cmd` to its end: (exit code, its resource usage as the kernel counted it, stdout, stderr).
    Its output goes to files, not pipes: a pipe left unread while waiting for the child fills
    (64 KB: a few minutes of progress bars) and stalls it."""
    with tempfile.TemporaryDirectory() as tmp, open(f"{tmp}/out", "w+") as out, open(f"{tmp}/err", "w+") as err:
        p = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=env)
        _, status, usage = os.wait4(p.pid, 0)
        out.seek(0), err.seek(0)
        return os.waitstatus_to_exitcode(status), usage, out.read(), err.read()


def run_worker(job: dict) -> dict:
    """The worker in a fresh process; its peak RSS as the kernel counted it."""
    start = time.perf_counter()
    code, usage, out, err = run_child([sys.executable, __file__, "--worker", json.dumps(job)])
    wall = time.perf_counter() - start
    if code != 0:
        return dict(job, error=(err or out)[-1500:])
    res = json.loads(out.strip().splitlines()[-1])
    res.update(process_s=wall, process_peak_rss_gb=usage.ru_maxrss * 1024 / 1e9)
    return res


def generate_process(family: str, folders: dict, steps: dict, dtype: str, device: str, out: Path) -> dict:
    """`unclip generate` as a user runs it, timed whole with its own peak RSS."""
    if family != "kandinsky":
        return {}
    cmd = [sys.executable, "-m", "unclip", "generate", PROMPT, "--model", str(folders["decoder"]), "--prior-model",
           str(folders["prior"]), "--dtype", dtype, "--device", device, "--compile", "off", "--out", str(out), "--overwrite",
           "--steps", *[f"{k}={v}" for k, v in steps.items()]]
    start = time.perf_counter()
    code, usage, _, err = run_child(cmd)
    if code != 0:
        return dict(side="unclip generate", error=err[-1500:])
    return dict(side="unclip generate", mode="none", process_s=time.perf_counter() - start,
                process_peak_rss_gb=usage.ru_maxrss * 1024 / 1e9)


# -- building -------------------------------------------------------------------------------------
def build(family: str, root: Path, dtype: str, device: str = "cpu") -> dict:
    """The family's folders in `root` (reused when a matching build is there), built in a child
    process so that its peak is its own."""
    marker = root / "published_sizes.json"
    if marker.is_file():  # folders stored in another dtype are cast as they load
        made = json.loads(marker.read_text())
        if made.get("family") == family:
            return dict(made, reused=True)
    code = ("import json, sys, time, torch\nfrom unclip.pipelines.published import write_family\n"
            f"t = time.perf_counter(); w = write_family({family!r}, {str(root)!r}, torch.{dtype}, device={device!r})\n"
            "print(json.dumps(dict(seconds=time.perf_counter() - t, folders={k: str(v) for k, v in w.folders.items()},"
            " weight_gb={k: v / 1e9 for k, v in w.weight_bytes.items()})))")
    status, usage, out, err = run_child([sys.executable, "-c", code])
    if status != 0:
        raise SystemExit(f"building {family} failed:\n{err[-3000:]}")
    made = dict(json.loads(out.strip().splitlines()[-1]), family=family, dtype=dtype,
                build_peak_rss_gb=usage.ru_maxrss * 1024 / 1e9)
    marker.write_text(json.dumps(made))
    return made


def machine(device: str) -> str:
    import torch

    from unclip.runtime.devices import cpu_name

    gpu = f"; GPU {torch.cuda.get_device_name(0)}" if device.startswith("cuda") and torch.cuda.is_available() else ""
    return f"CPU {cpu_name()}, {os.cpu_count()} cores{gpu}; torch {torch.__version__}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--family", choices=list(STEP_NAMES), default="kandinsky")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default="bfloat16")
    p.add_argument("--keep", metavar="DIR", help="write the folders here and leave them (reused when they match)")
    p.add_argument("--steps", nargs="+", metavar="STAGE=N", help="e.g. prior=2 decoder=2 (default: the published "
                   "defaults on a GPU, 2 per stage on a CPU)")
    p.add_argument("--modes", nargs="+", default=["none"], choices=["none", "model", "sequential", "slicing", "tiling"])
    p.add_argument("--sides", nargs="+", default=["unclip", "diffusers"], choices=["unclip", "diffusers"])
    p.add_argument("--calls", type=int, default=2, help="calls per run; the last one is timed")
    p.add_argument("--repeat", type=int, default=1, help="runs of each side, alternating; medians compared")
    p.add_argument("--build-only", action="store_true")
    p.add_argument("--whole-only", action="store_true", help="on a CPU: only the whole processes (unclip generate "
                   "against diffusers' script), --repeat times each, alternating")
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    from unclip.pipelines.published import counts

    steps = dict(DEFAULT_STEPS[args.family]) if args.device != "cpu" else {k: 2 for k in STEP_NAMES[args.family]}
    steps.update({k: int(v) for k, v in (s.split("=") for s in args.steps or [])})
    print(f"machine: {machine(args.device)}", flush=True)
    print(f"{'component':48s} {'built':>10s} {'published':>10s} {'ratio':>6s}")
    params = []
    for key, n, published in counts(args.family):
        ratio = f"{n / published:6.3f}" if published else "     -"
        print(f"{key:48s} {n / 1e6:9.1f}M {published / 1e6 if published else float('nan'):9.1f}M {ratio}", flush=True)
        params.append(dict(component=key, params=n, published=published))
    tmp = None if args.keep else tempfile.TemporaryDirectory()
    root = Path(args.keep or tmp.name)
    root.mkdir(parents=True, exist_ok=True)
    made = build(args.family, root, args.dtype, "cuda" if args.device.startswith("cuda") else "cpu")
    print(f"built {args.family} in {made['dtype']}: {sum(made['weight_gb'].values()):.2f} GB of weights in "
          f"{made['seconds']:.0f} s, peak RSS {made['build_peak_rss_gb']:.2f} GB"
          f"{' (reused)' if made.get('reused') else ''}", flush=True)
    results = dict(machine=machine(args.device), family=args.family, dtype=args.dtype, device=args.device,
                   steps=steps, params=params, build=made, runs=[])
    if not args.build_only:
        results["runs"] = runs(args, made["folders"], steps, root)
    print(json.dumps(results))
    if tmp:
        tmp.cleanup()


def runs(args, folders: dict, steps: dict, root: Path) -> list[dict]:
    print(f"steps {steps}; each run in its own process; s/image: the last of {args.calls} calls "
          "(offloaded runs: their one call)")
    print(f"{'side':16s} {'mode':10s} {'load s':>7s} {'load RSS':>9s} {'weights':>8s} {'s/image':>8s} "
          f"{'peak RSS':>9s} {'GPU peak':>9s} {'process s':>9s} {'diff/255':>8s}", flush=True)
    out, images = [], {}
    plan = [] if args.whole_only else [(m, r, s) for m in args.modes for r in range(args.repeat) for s in args.sides]
    for mode, _, side in plan:
        if side == "diffusers" and mode in ("slicing", "tiling") and args.family == "kandinsky":
            continue  # diffusers' Kandinsky pipelines and VQModel slice and tile nothing
        image = root / f"image_{side}_{mode}.npy"
        calls = 1 if mode in ("model", "sequential") else args.calls  # offloading: slow, timed on its first call
        job = dict(side=side, mode=mode, family=args.family, folders=folders, dtype=args.dtype,
                   device=args.device, steps=steps, calls=calls, image=str(image))
        res = run_worker(job)
        if "error" not in res:
            images[(side, mode)] = np.load(image)
        out.append(res)
        show(res)
    if args.repeat > 1:
        summary(out)
    ref = images.get(("diffusers", "none"))
    if ref is not None:  # every unclip image against diffusers' plain one
        print("mean |unclip - diffusers| (of 255), diffusers without offloading as the reference:")
        for res in out:
            if res["side"] == "unclip" and (res["side"], res["mode"]) in images:
                res["mean_diff_255"] = float(np.abs(images[("unclip", res["mode"])] - ref).mean() * 255)
        for mode in dict.fromkeys(m for s, m in images if s == "unclip"):
            print(f"  unclip {mode}: {np.abs(images[('unclip', mode)] - ref).mean() * 255:.3f}")
    if args.device == "cpu" and "none" in args.modes and args.family == "kandinsky":
        print("whole processes, loading included, one image each:", flush=True)
        whole = []
        for _ in range(args.repeat):
            whole.append(generate_process(args.family, {k: Path(v) for k, v in folders.items()}, steps, args.dtype,
                                          args.device, root / "generate_out"))
            show(whole[-1])
            job = dict(side="diffusers script", mode="none", family=args.family, folders=folders, dtype=args.dtype,
                       device=args.device, steps=steps, calls=1, image=str(root / "image_script.npy"))
            whole.append(run_worker(job))
            show(whole[-1])
        out += whole
        if args.repeat > 1:
            import statistics

            for side in ("unclip generate", "diffusers script"):
                rows = [r for r in whole if r["side"] == side and "error" not in r]
                if rows:
                    print(f"median of {len(rows)}: {side}: {statistics.median(r['process_s'] for r in rows):.1f} s, "
                          f"peak RSS {statistics.median(r['process_peak_rss_gb'] for r in rows):.2f} GB")
    return out


def summary(out: list[dict]) -> None:
    """Medians over the repeated runs of each side and mode, and unclip's speed against diffusers'."""
    import statistics

    med = {}
    for side, mode in {(r["side"], r["mode"]) for r in out if "error" not in r}:
        rows = [r for r in out if (r["side"], r["mode"]) == (side, mode) and "error" not in r]
        med[(side, mode)] = {k: statistics.median(r[k] for r in rows) for k in ("s_per_image", "peak_rss_gb")}
        print(f"median of {len(rows)}: {side} {mode}: {med[(side, mode)]['s_per_image']:.2f} s/image, "
              f"peak RSS {med[(side, mode)]['peak_rss_gb']:.2f} GB")
    for mode in {m for _, m in med}:
        if ("unclip", mode) in med and ("diffusers", mode) in med:
            speed = med[("diffusers", mode)]["s_per_image"] / med[("unclip", mode)]["s_per_image"]
            print(f"unclip's speed, {mode}: {speed:.3f}x diffusers' (median s/image)")
            out.append(dict(side="summary", mode=mode, speed_vs_diffusers=speed, medians={
                f"{s} {m}": v for (s, m), v in med.items() if m == mode}))


def show(r: dict) -> None:
    if "error" in r:
        print(f"{r['side']:16s} {r.get('mode', ''):10s} FAILED: {r['error'][-600:]}", flush=True)
        return

    def f(key, fmt="{:.2f}"):
        return fmt.format(r[key]) if key in r else "-"

    print(f"{r['side']:16s} {r['mode']:10s} {f('load_s', '{:.1f}'):>7s} {f('load_peak_rss_gb'):>9s} "
          f"{f('weights_gb'):>8s} {f('s_per_image'):>8s} {f('process_peak_rss_gb'):>9s} {f('peak_gpu_gb'):>9s} "
          f"{f('process_s', '{:.1f}'):>9s} {f('mean_diff_255'):>8s}", flush=True)


if __name__ == "__main__":
    main()
