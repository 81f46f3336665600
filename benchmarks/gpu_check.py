"""Every command and the API on a GPU against the CPU: the same seed's images, and the time.

    python benchmarks/gpu_check.py --out runs/gpu_check            # cuda against cpu
    python benchmarks/gpu_check.py --devices cpu cpu --out /tmp/x  # the script itself, anywhere

For each job (generate at the model's defaults, invert, vary, interpolate, edit, eval shapes on
a few prompts, the demo, and the Python API) it runs the command once per device with the same
seed in float32, then prints the mean |difference| of the images (of 255) and the seconds of
each whole command. Commit the output with the GPU's name (it is printed first).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

PROMPTS = ["a red circle on a white background", "a blue square above a green star on a black background"]


def run(cmd: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "unclip", *cmd], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"unclip {' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - start


def images(folder: Path) -> list[np.ndarray]:
    return [np.asarray(Image.open(p)).astype(float) for p in sorted(folder.glob("*.png")) if p.name[0].isdigit()]


def main() -> None:
    import torch

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--devices", nargs=2, default=["cuda", "cpu"], metavar=("DEVICE", "REFERENCE"))
    p.add_argument("--model", help="model folder (default: the shipped model)")
    p.add_argument("--out", default="runs/gpu_check")
    args = p.parse_args()
    if "cuda" in " ".join(args.devices) and not torch.cuda.is_available():
        print("no CUDA GPU on this machine: nothing to check (--devices cpu cpu checks the script itself)")
        return
    out = Path(args.out)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(f"GPU: {gpu}; CPU: {platform.processor() or platform.machine()}; torch {torch.__version__}")
    model = ["--model", args.model] if args.model else []
    picture = out / "input.png"
    out.mkdir(parents=True, exist_ok=True)
    from unclip.data import shapes

    Image.fromarray(shapes.render(shapes.eval_split(1)[0].scene, 128)).save(picture)
    Image.fromarray(shapes.render(shapes.eval_split(2)[1].scene, 128)).save(out / "other.png")
    jobs = {
        "generate": ["generate", *PROMPTS, "--num-images", "2", "--seed", "3"],
        "invert": ["invert", str(picture), "--steps", "20"],
        "vary": ["vary", str(picture), "--num-images", "2", "--steps", "20"],
        "interpolate": ["interpolate", str(picture), str(out / "other.png"), "--frames", "3", "--steps", "20"],
        "edit": ["edit", str(picture), "--to", "a blue circle on a white background", "--frames", "3", "--steps", "20"],
    }
    rows = []
    for name, cmd in jobs.items():
        seconds, got = {}, {}
        for device in args.devices:
            folder = out / f"{name}-{device}"
            seconds[device] = run([*cmd, *model, "--device", device, "--dtype", "float32", "--out", str(folder),
                                   "--overwrite"])
            got[device] = images(folder)
        a, b = got.values()
        diff = float(np.mean([np.abs(x - y).mean() for x, y in zip(a, b)]))
        rows.append((name, *seconds.values(), diff))
    for device in args.devices:  # eval and demo: figures and timing, per device
        start = time.perf_counter()
        run(["eval", "shapes", *model, "--num", "16", "--device", device, "--dtype", "float32",
             "--out", str(out / f"eval-{device}")])
        report = json.loads((out / f"eval-{device}" / "report.json").read_text())
        print(f"eval shapes (16 prompts) on {device}: {time.perf_counter() - start:.1f} s; "
              f"{json.dumps(report['in_distribution'])}")
        print(f"demo on {device}: {run(['demo', *model, '--device', device, '--out', str(out / f'demo-{device}')]):.1f} s")
    # the API, warm, in this process
    from unclip import load_pipeline

    api = {}
    for device in args.devices:
        pipe = load_pipeline(args.model, device=device)
        pipe(PROMPTS[0], generator=torch.Generator().manual_seed(0))  # warm
        start = time.perf_counter()
        api[device] = pipe(PROMPTS, generator=[torch.Generator().manual_seed(i) for i in range(2)],
                           output_type="np").images
        rows.append((f"API on {device} (warm)", time.perf_counter() - start, float("nan"), float("nan")))
    d0, d1 = args.devices
    rows.append(("API images", float("nan"), float("nan"), float(np.abs(api[d0] - api[d1]).mean() * 255)))
    print(f"| job | s on {d0} | s on {d1} | mean abs diff (of 255) |\n|---|---|---|---|")
    for name, a, b, diff in rows:
        print(f"| {name} | {a:.2f} | {b:.2f} | {diff:.3f} |")


if __name__ == "__main__":
    main()
