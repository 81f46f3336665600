"""Offloading on every family's pipeline, on a real accelerator: tiny random folders of Karlo,
Kandinsky 2.2 and Stable unCLIP (with Karlo's prior), and the shipped model, drawn at float32 with
the whole model on --device, then with model and sequential offloading onto it, then with the hooks
removed. Prints, per family and mode, the mean |difference| from the plain images (of 255) and the
peak accelerator memory; a network left on the wrong device fails its row with the error.

    python benchmarks/offload_check.py --device cuda
    python benchmarks/offload_check.py --device cpu    # the hooks with the CPU as their device
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

PROMPT = "a red horse"


def folders(root: Path) -> dict:
    from unclip.pipelines.kandinsky.synthetic import (
        random_decoder,
        random_prior,
        write_decoder,
        write_prior,
    )
    from unclip.pipelines.karlo.synthetic import random_components as karlo
    from unclip.pipelines.karlo.synthetic import write_folder as write_karlo
    from unclip.pipelines.stable_unclip.synthetic import random_components as stable
    from unclip.pipelines.stable_unclip.synthetic import write_folder as write_stable

    write_karlo(karlo(seed=3), root / "karlo")
    write_prior(random_prior(seed=0), root / "k_prior")
    write_decoder(random_decoder(seed=1), root / "k_decoder")
    write_stable(stable(seed=0), root / "stable")
    return {"karlo": (root / "karlo", None), "kandinsky": (root / "k_decoder", root / "k_prior"),
            "stable_unclip": (root / "stable", root / "karlo"), "shapes": (None, None)}


def draw(pipe) -> np.ndarray:
    out = pipe([PROMPT], generator=torch.Generator().manual_seed(0), output_type="np")
    return np.asarray(out.images, dtype=np.float64)


def main() -> None:
    from unclip.pipelines.registry import load_pipeline
    from unclip.runtime import offload

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    args = p.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    print(f"device: {torch.cuda.get_device_name(device) if cuda else 'cpu'}; torch {torch.__version__}")
    print("| family | mode | mean abs diff from no offloading (of 255) | peak accelerator GB |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for family, (model, prior) in folders(Path(tmp)).items():
            try:
                pipe = load_pipeline(model, prior_model=prior, device=device, torch_dtype=torch.float32)
                plain = draw(pipe)
                pipe.to("cpu")
                for mode in (*offload.MODES, "removed"):
                    if cuda:
                        torch.cuda.reset_peak_memory_stats(device)
                    if mode != "removed":
                        offload.attach(pipe, mode, device)
                    else:
                        pipe.remove_all_hooks()
                        pipe.to(device)
                    got = draw(pipe)
                    peak = torch.cuda.max_memory_allocated(device) / 1e9 if cuda else float("nan")
                    print(f"| {family} | {mode} | {np.abs(got - plain).mean() * 255:.4f} | {peak:.3f} |", flush=True)
                    if mode != "removed":
                        pipe.remove_all_hooks()
            except Exception as e:  # noqa: BLE001 (a row per failure, then the next family)
                print(f"| {family} | - | FAILED: {type(e).__name__}: {str(e)[:200]} | - |", flush=True)


if __name__ == "__main__":
    main()
