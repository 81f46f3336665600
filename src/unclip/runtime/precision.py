"""Which precision to compute in: reduced precision only where it is faster on this hardware.

CPUs differ, and their flags do not tell: one machine of this project's kind ran bf16 matmuls
4x faster than fp32, another without AVX-512 BF16 5x slower, and one *with* the avx512_bf16
flag still ran bf16 at 168 GFLOP/s against 290 in fp32 (torch 2.13, 2 threads). So on a CPU
`auto` measures: a convolution and a matmul in both precisions (about 0.3 s, once per CPU and
torch version, remembered in precision.json under $UNCLIP_CACHE, default ~/.cache/unclip).
GPUs with bf16 use it. Asking for
a reduced precision that is slower here works, and says so once.
"""

from __future__ import annotations

import functools
import json
import logging
import time

import torch

from unclip.runtime.cache import user_cache
from unclip.runtime.devices import cpu_name

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
log = logging.getLogger(__name__)


CACHE = user_cache("precision.json")


def _cpu_key() -> str:
    return f"{cpu_name(flags=False)}|torch {torch.__version__}|{torch.get_num_threads()} threads"


def measure_bf16_speedup() -> float:
    """fp32 time / bf16 time of a small convolution and matmul workload on this CPU."""
    conv = torch.nn.Conv2d(64, 64, 3, padding=1)
    x, a = torch.randn(8, 64, 32, 32), torch.randn(512, 512)
    seconds = {}
    with torch.no_grad():
        for dtype in (torch.float32, torch.bfloat16):
            c, xx, aa = conv.to(dtype), x.to(dtype), a.to(dtype)
            c(xx), aa @ aa  # warm-up
            best = float("inf")
            for _ in range(3):
                start = time.perf_counter()
                c(xx), aa @ aa, aa @ aa
                best = min(best, time.perf_counter() - start)
            seconds[dtype] = best
    return seconds[torch.float32] / seconds[torch.bfloat16]


@functools.cache
def cpu_bf16_is_faster() -> bool:
    return cpu_bf16_speedup() > 1.1


def cpu_bf16_speedup() -> float:
    """fp32 time / bf16 time on this CPU, measured once and remembered in precision.json."""
    key = _cpu_key()
    try:
        known = json.loads(CACHE.read_text())
    except (OSError, ValueError):
        known = {}
    if key not in known:
        known[key] = round(measure_bf16_speedup(), 3)
        try:
            CACHE.parent.mkdir(parents=True, exist_ok=True)
            CACHE.write_text(json.dumps(known, indent=1))
        except OSError:
            pass  # a read-only home: measure again next time
    return known[key]


def native_reduced(device: str | torch.device = "cpu") -> torch.dtype | None:
    """The reduced precision that is faster than fp32 on `device` (bf16 on GPUs that have it;
    on a CPU, bf16 if measured faster), or None."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_bf16_is_faster() else None


@functools.cache
def _warn_once(name: str) -> None:
    log.warning("%s on this CPU: it works, but measured slower than float32 here (see %s); "
                "--dtype auto picks float32 on this machine", name, CACHE)


def resolve_dtype(name: str = "auto", device: str | torch.device = "cpu") -> torch.dtype:
    """`--dtype` / `torch_dtype` by name: auto, float32, bfloat16 or float16."""
    if name == "auto":
        return native_reduced(device) or torch.float32
    if name not in DTYPES:
        raise ValueError(f"dtype must be auto or one of {', '.join(DTYPES)}, got {name!r}")
    dtype = DTYPES[name]
    if dtype != torch.float32 and torch.device(device).type == "cpu" and native_reduced("cpu") is None:
        _warn_once(name)
    return dtype


def mixed_precision_for(name: str, device: torch.device) -> str:
    """accelerate's mixed_precision for a config's `train.mixed_precision` on `device`."""
    if name == "auto":
        reduced = native_reduced(device)
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(reduced, "no")
    if name == "bf16" and device.type == "cpu" and native_reduced("cpu") is None:
        _warn_once("train.mixed_precision bf16")
    return "no" if name == "fp32" else name
