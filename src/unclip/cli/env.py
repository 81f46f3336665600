"""`unclip env`: what this machine is and what unclip does on it, ready to paste into a bug report
(as `diffusers-cli env`). It never downloads and never fails for lack of a GPU or a package."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("torch", "diffusers", "transformers", "accelerate", "peft", "safetensors", "gradio")


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _commit() -> str:
    here = Path(__file__).resolve().parents[3]
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else "not a git checkout"
    except (OSError, subprocess.SubprocessError):
        return "git not found"


def _size(folder: Path) -> str:
    if not folder.is_dir():
        return "absent"
    total = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    return f"{total / 1e6:.1f} MB"


def _cpu_flags() -> str:
    try:
        words = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return "unknown (no /proc/cpuinfo)"
    names = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_bf16": "AVX-512 BF16", "amx_bf16": "AMX"}
    return ", ".join(label for flag, label in names.items() if flag in words) or "none of AVX2, AVX-512, AMX"


def report() -> list[tuple[str, str]]:
    """(what, value) rows."""
    import torch

    from unclip.runtime.cache import user_cache
    from unclip.runtime.compiled import LONG_JOB, cache_dir, decide, missing_toolchain
    from unclip.runtime.devices import cpu_name
    from unclip.runtime.precision import cpu_bf16_speedup, resolve_dtype

    rows = [("unclip", f"{_version('unclip')} ({_commit()})"), ("Python", platform.python_version()),
            ("OS", platform.platform())]
    rows += [(name, _version(name)) for name in PACKAGES]
    rows += [("CPU", f"{cpu_name(flags=False)}, {os.cpu_count()} cores"), ("CPU flags", _cpu_flags())]
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            rows.append((f"GPU cuda:{i}", f"{props.name}, {props.total_memory / 2**30:.1f} GiB"))
            devices.append(torch.device("cuda", i))
    else:
        rows.append(("GPU", f"none (torch built {'with CUDA ' + torch.version.cuda if torch.version.cuda else 'for the CPU'})"))
    speedup = cpu_bf16_speedup()
    for device in devices:
        dtype = resolve_dtype("auto", device)
        why = f"bf16 measured {speedup:.2f}x fp32 here" if device.type == "cpu" else "the GPU's native precision"
        rows.append((f"--dtype auto on {device}", f"{str(dtype).removeprefix('torch.')} ({why})"))
        rows.append((f"torch.compile on {device}", missing_toolchain(device) or "can build kernels here"))
        if device.type == "cpu":
            rows.append((f"--compile auto on {device}", decide("auto", device, dtype, None).reason))
            continue
        for images in (2, LONG_JOB, None):
            what = f"{images} images" if images is not None else "serve"
            rows.append((f"--compile auto on {device}, {what}", decide("auto", device, dtype, images).reason))
    hub = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME") or os.path.expanduser("~/.cache/huggingface"), "hub")
    rows += [("huggingface_hub cache", f"{hub} ({_size(Path(hub))})"),
             ("unclip cache", f"{user_cache()} ({_size(user_cache())})"),
             ("inductor cache", f"{cache_dir()} ({_size(cache_dir())})"),
             ("HF_HUB_OFFLINE", os.environ.get("HF_HUB_OFFLINE", "unset"))]
    return rows


def cmd_env(args) -> None:
    rows = report()
    width = max(len(k) for k, _ in rows)
    print("\n".join(f"- {k + ':':{width + 1}s} {v}" for k, v in rows))


def add_env(sub) -> dict:
    sub.add_parser("env", help="this machine and what unclip does on it, for a bug report",
                   description="Print versions, the CPU's flags, each GPU, what --dtype auto and --compile auto "
                   "choose on each device, and the cache folders with their sizes. Downloads nothing.")
    return {"env": cmd_env}
