"""Every command on a GPU against the CPU: the same seed's images at float32, and the seconds.

    python benchmarks/gpu_check.py --out runs/gpu_check              # cuda against cpu
    python benchmarks/gpu_check.py --devices cpu cpu --out /tmp/x    # the script itself, anywhere

Each job runs once per device, each run in its own process with its own time limit (--limit), and
its row is printed the moment both are done: seconds on each device and the mean |difference| of
their images (of 255), or what the job compares instead (losses, scores). Jobs: generate, invert,
vary, interpolate, edit, inpaint, probe, eval (shapes, 16 prompts), demo, serve (one HTTP request
through gradio_client), train (20 steps of a tiny decoder), lora (10 LoRA steps on a tiny Kandinsky
decoder), accelerate (`accelerate launch` with one process), and first (the first `unclip
generate` at the defaults, --compile auto, against --compile off, with an empty compile cache).
The GPU's name is printed first; commit the output with it. --jobs picks some; --parallel runs
both devices' commands of a job at once (on the H200 machine each command spends ~15 s starting).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

PROMPTS = ["a red circle on a white background", "a blue square above a green star on a black background"]
ROOT = Path(__file__).resolve().parents[1]
JOBS = ("generate", "invert", "vary", "interpolate", "edit", "inpaint", "probe", "eval", "demo", "serve", "train",
        "lora", "accelerate", "first")


class Failed(Exception):
    pass


def env_for(device: str, **extra) -> dict:
    """Training picks its device through accelerate: a CPU run hides the GPU."""
    env = {**os.environ, **extra}
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def run(args: list[str], limit: float, env: dict | None = None, module: bool = True) -> float:
    """Seconds of one command in its own process; Failed with its error's tail, or on the limit."""
    cmd = [sys.executable, "-m", "unclip", *args] if module else args
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, env=env)
    except subprocess.TimeoutExpired:
        raise Failed(f"past its limit of {limit:.0f} s") from None
    except OSError as e:
        raise Failed(str(e)) from None
    if done.returncode != 0:
        raise Failed((done.stderr or done.stdout).strip().splitlines()[-1][:200] if (done.stderr or done.stdout)
                     else f"exit {done.returncode}")
    return time.perf_counter() - start


def images(folder: Path) -> list[np.ndarray]:
    return [np.asarray(Image.open(p).convert("RGB")).astype(float)
            for p in sorted(folder.rglob("*.png")) if p.name[0].isdigit()]


def diff(a: list[np.ndarray], b: list[np.ndarray]) -> str:
    if not a or len(a) != len(b):
        return f"images: {len(a)} against {len(b)}"
    return f"{np.mean([np.abs(x - y).mean() for x, y in zip(a, b)]):.3f}"


def last_loss(folder: Path) -> float:
    rows = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines() if line.strip()]
    losses = [r["loss"] for r in rows if "loss" in r]
    return losses[-1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_once(device: str, out: Path, limit: float) -> tuple[float, list[np.ndarray]]:
    """Start `unclip serve` on loopback, ask /generate for one image, stop it."""
    try:
        from gradio_client import Client
    except ImportError:
        raise Failed("gradio is not installed here: the web app is checked on the CPU") from None
    port = free_port()
    log = out / f"serve-{device}.log"
    start = time.perf_counter()
    with open(log, "w") as f:
        # eager: a compiled server compiles before it opens (minutes cold), and this row checks serving
        server = subprocess.Popen([sys.executable, "-m", "unclip", "serve", "--port", str(port), "--device", device,
                                   "--dtype", "float32", "--compile", "off"], stdout=f, stderr=subprocess.STDOUT)
    try:
        while "unclip serve: http" not in log.read_text():
            if server.poll() is not None or time.perf_counter() - start > limit:
                raise Failed(f"the server did not start: {log.read_text()[-200:]}")
            time.sleep(0.5)
        gallery = Client(f"http://127.0.0.1:{port}/", verbose=False).predict(PROMPTS[0], 1, 3, api_name="/generate")
        return time.perf_counter() - start, [np.asarray(Image.open(gallery[0]["image"]).convert("RGB")).astype(float)]
    finally:
        server.terminate()
        server.wait(timeout=30)


def tiny_kandinsky(out: Path) -> tuple[Path, Path]:
    from unclip.pipelines.kandinsky.synthetic import (
        random_decoder,
        random_prior,
        write_decoder,
        write_prior,
    )

    if not (out / "decoder").is_dir():
        write_prior(random_prior(seed=0), out / "prior")
        write_decoder(random_decoder(seed=1), out / "decoder")
    return out / "decoder", out / "prior"


def job(name: str, device: str, out: Path, limit: float, inputs: dict, tag: str) -> tuple[float, object]:
    """(seconds, what the two devices' runs are compared by) of one job on one device; its files in a
    fresh folder named by `tag`."""
    import shutil

    folder = out / f"{name}-{tag}"
    shutil.rmtree(folder, ignore_errors=True)
    common = ["--device", device, "--dtype", "float32", "--out", str(folder), "--overwrite"]
    pic, other, mask = (str(inputs[k]) for k in ("picture", "other", "mask"))
    commands = {
        "generate": ["generate", *PROMPTS, "--num-images", "2", "--seed", "3"],
        "invert": ["invert", pic, "--steps", "20"],
        "vary": ["vary", pic, "--num-images", "2", "--steps", "20"],
        "interpolate": ["interpolate", pic, other, "--frames", "3", "--steps", "20"],
        "edit": ["edit", pic, "--to", "a blue circle on a white background", "--frames", "3", "--steps", "20"],
        "inpaint": ["inpaint", pic, "a blue square above a red circle on a white background", "--mask", mask],
        "probe": ["probe", "pca", pic, "--dims", "1", "4", "16"],
    }
    if name in commands:
        return run([*commands[name], *common], limit), images(folder)
    if name == "eval":
        seconds = run(["eval", "shapes", "--num", "16", "--device", device, "--dtype", "float32", "--out",
                       str(folder)], limit)
        report = json.loads((folder / "report.json").read_text())
        scores = report.get("in_distribution", {})
        return seconds, (images(folder), " ".join(f"{k} {v.get('all')}" for k, v in scores.items() if isinstance(v, dict)))
    if name == "demo":
        return run(["demo", "--device", device, "--out", str(folder)], limit), images(folder)
    if name == "serve":
        return serve_once(device, out, limit)
    if name == "train":
        seconds = run(["train", "decoder", "--config", str(ROOT / "configs/tiny/decoder.yaml"),
                       f"--clip={ROOT / 'src/unclip/assets/shapes/clip'}", "--train.steps=20",
                       f"--train.out_dir={folder}", "--train.checkpoint_every=20"], limit, env_for(device))
        return seconds, last_loss(folder)
    if name == "lora":
        decoder, prior = tiny_kandinsky(out / "kandinsky")
        seconds = run(["train", "decoder", "--config", str(ROOT / "configs/kandinsky/decoder_finetune.yaml"),
                       f"--init={decoder}", f"--prior-model={prior}", "--lora.rank=4", "--train.steps=10",
                       "--train.batch_size=2", "--train.checkpoint_every=10", "--train.sample_every=0",
                       f"--train.out_dir={folder}"], limit, env_for(device))
        return seconds, last_loss(folder)
    if name == "accelerate":
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", *(["--cpu"] if device == "cpu" else []),
               "-m", "unclip", "generate", *PROMPTS, "--num-images", "2", "--seed", "3", *common]
        return run(cmd, limit, env_for(device), module=False), images(folder)
    raise ValueError(name)


def compare(name: str, a, b) -> str:
    if name in ("train", "lora"):
        return f"last loss {a:.4f} / {b:.4f}"
    if name == "demo":  # the demo has no --dtype: auto (bf16 on a GPU and on CPUs with native bf16)
        return f"{diff(a, b)} (--dtype auto)"
    if name == "eval":
        return f"{diff(a[0], b[0])}; all right: {a[1]} / {b[1]}"
    return diff(a, b)


def first_command(device: str, out: Path, limit: float) -> str:
    """The first `unclip generate` a user runs on `device`, at the defaults, against --compile off,
    each with an empty compile cache."""
    walls = {}
    for setting in ("auto", "off"):
        cache = tempfile.mkdtemp(prefix="inductor-")
        walls[setting] = run(["generate", *PROMPTS, "--device", device, "--compile", setting, "--out",
                              str(out / f"first-{setting}"), "--overwrite"], limit,
                             env_for(device, TORCHINDUCTOR_CACHE_DIR=cache, UNCLIP_CACHE=cache))
    return f"| first | auto {walls['auto']:.1f} | off {walls['off']:.1f} | auto / off {walls['auto'] / walls['off']:.2f} |"


def main() -> None:
    import torch

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--devices", nargs=2, default=["cuda", "cpu"], metavar=("DEVICE", "REFERENCE"))
    p.add_argument("--out", default="runs/gpu_check")
    p.add_argument("--jobs", nargs="+", choices=JOBS, default=list(JOBS))
    p.add_argument("--limit", type=float, default=120, help="seconds each run of a job may take")
    p.add_argument("--parallel", action="store_true", help="run the two devices' commands of a job at once "
                   "(halves the wall on a GPU machine with many cores; the seconds then overlap)")
    args = p.parse_args()
    if "cuda" in " ".join(args.devices) and not torch.cuda.is_available():
        print("no CUDA GPU on this machine: nothing to check (--devices cpu cpu checks the script itself)")
        return
    from unclip.data import shapes
    from unclip.runtime.devices import cpu_name

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(f"GPU: {gpu}; CPU: {cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__}", flush=True)
    inputs = {"picture": out / "input.png", "other": out / "other.png", "mask": out / "mask.png"}
    Image.fromarray(shapes.render(shapes.eval_split(1)[0].scene, 128)).save(inputs["picture"])
    Image.fromarray(shapes.render(shapes.eval_split(2)[1].scene, 128)).save(inputs["other"])
    mask = np.zeros((128, 128), np.uint8)
    mask[:, 64:] = 255
    Image.fromarray(mask).save(inputs["mask"])
    d0, d1 = args.devices
    print(f"| job | s on {d0} | s on {d1} | mean abs diff (of 255) or what is compared |\n|---|---|---|---|", flush=True)
    failed = 0
    for name in args.jobs:
        try:
            if name == "first":
                print(first_command(d0, out, args.limit * 2), flush=True)
                continue
            if args.parallel and name not in ("serve",):  # each side's process start (~15 s) overlaps the other's
                from concurrent.futures import ThreadPoolExecutor

                with ThreadPoolExecutor(2) as pool:
                    runs = [pool.submit(job, name, d, out, args.limit, inputs, f"{i}-{d}") for i, d in enumerate((d0, d1))]
                    (s0, a), (s1, b) = (r.result() for r in runs)
            else:
                (s0, a), (s1, b) = (job(name, d, out, args.limit, inputs, f"{i}-{d}") for i, d in enumerate((d0, d1)))
            print(f"| {name} | {s0:.1f} | {s1:.1f} | {compare(name, a, b)} |", flush=True)
        except Failed as e:
            failed += 1
            print(f"| {name} | - | - | not run: {e} |", flush=True)
    print(f"{len(args.jobs) - failed} of {len(args.jobs)} jobs ran", flush=True)


if __name__ == "__main__":
    main()
