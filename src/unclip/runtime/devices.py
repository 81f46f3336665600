"""`--device` / `device=`: which device a pipeline computes on."""

from __future__ import annotations

import torch

CHOICES = "auto, cpu, cuda, cuda:N or mps"


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """auto: the first GPU if there is one (CUDA, then Apple's MPS), else the CPU. A device
    that is not on this machine is a ValueError that says what is."""
    if isinstance(name, torch.device):
        name = str(name)
    if name is None or name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", 0)
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"--device {name!r}: expected {CHOICES}") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"--device {name}: this machine has no CUDA GPU (torch {torch.__version__}, "
                             f"built {'with' if torch.version.cuda else 'without'} CUDA); use --device cpu")
        index = 0 if device.index is None else device.index
        if index >= count:
            raise ValueError(f"--device {name}: this machine has {count} CUDA GPU(s), cuda:0..cuda:{count - 1}")
        return torch.device("cuda", index)
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"--device {name}: MPS (Apple's GPU) is not available here; use --device cpu")
        return device
    raise ValueError(f"--device {name!r}: expected {CHOICES}")


def process_group() -> tuple[int, int, callable, torch.device | None]:
    """(rank, world size, wait_for_everyone, the launcher's device for this process) under
    `accelerate launch` with several processes; (0, 1, a no-op, None) otherwise."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1, lambda: None, None
    from accelerate import PartialState

    # without cpu=True accelerate runs CPU processes as one each (no process group)
    cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes") or not torch.cuda.is_available()
    state = PartialState(cpu=cpu)
    return state.process_index, state.num_processes, state.wait_for_everyone, state.device


def cpu_name(flags: bool = True) -> str:
    """This CPU's model name and, with `flags`, which native bf16 it has (AVX-512 BF16, AMX):
    what every CPU speed figure must say, since bf16 is 2-5x faster with them and slower
    without."""
    import platform

    name, found = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        name = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), name)
        found = {w for w in text.split() if w in ("amx_bf16", "avx512_bf16")}
    except OSError:
        pass
    return f"{name} ({', '.join(sorted(found)) or 'no bf16 flags'})" if flags else name
