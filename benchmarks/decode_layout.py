"""Latent decoding on the CPU: latents as diffusers lays them out (contiguous) against channels-last,
which unclip uses below float32 (unclip.runtime.latent_decoding.fast_layout). Each decoder and
layout in a fresh process: seconds per decode (the better of two after a warm-up), the process's
peak RSS, and how far the two layouts' pixels lie apart.

    python benchmarks/published_sizes.py --family kandinsky --keep /tmp/pub/kandinsky --build-only
    python benchmarks/published_sizes.py --family stable_unclip --keep /tmp/pub/su --build-only
    python benchmarks/decode_layout.py --movq /tmp/pub/kandinsky/decoder/movq \\
        --vae /tmp/pub/su/stable-diffusion-2-1-unclip/vae [--dtype bfloat16 float32]
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def worker(kind: str, folder: str, dtype: str, layout: str, out: str) -> dict:
    import diffusers
    import torch

    dt = getattr(torch, dtype)
    net = getattr(diffusers, "VQModel" if kind == "movq" else "AutoencoderKL").from_pretrained(folder, torch_dtype=dt)
    side = 64 if kind == "movq" else 96  # latents of the published sizes: 512 and 768 px
    z = torch.randn(1, 4, side, side, generator=torch.Generator().manual_seed(0)).to(dt)
    if layout == "channels_last":
        z = z.contiguous(memory_format=torch.channels_last)
    kw = {"force_not_quantize": True} if kind == "movq" else {}
    seconds = []
    with torch.no_grad():
        for _ in range(3):
            t = time.perf_counter()
            image = net.decode(z, **kw).sample
            seconds.append(time.perf_counter() - t)
    torch.save(image.float().contiguous(), out)
    return dict(kind=kind, dtype=dtype, layout=layout, px=image.shape[-1], s=min(seconds[1:]),
                peak_rss_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    p.add_argument("--movq", help="a Kandinsky 2.2 decoder folder's movq/")
    p.add_argument("--vae", help="a Stable unCLIP folder's vae/")
    p.add_argument("--dtype", nargs="+", default=["bfloat16", "float32"])
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker)))
        return
    import torch

    from unclip.runtime.devices import cpu_name

    print(f"CPU: {cpu_name()}; torch {torch.__version__}; {torch.get_num_threads()} threads")
    print(f"{'decoder':8s} {'dtype':9s} {'px':>4s} {'contiguous s':>13s} {'channels-last s':>16s} {'speedup':>8s} "
          f"{'peak RSS GB':>14s} {'mean diff/255':>14s}", flush=True)
    rows, tmp = [], Path(tempfile.mkdtemp())
    for kind, folder in (("movq", args.movq), ("vae", args.vae)):
        for dtype in args.dtype if folder else []:
            res = {}
            for layout in ("contiguous", "channels_last"):
                out = tmp / f"{kind}_{dtype}_{layout}.pt"
                run = subprocess.run([sys.executable, __file__, "--worker", kind, folder, dtype, layout, str(out)],
                                     capture_output=True, text=True, check=True)
                res[layout] = json.loads(run.stdout.strip().splitlines()[-1])
            a, b = (torch.load(tmp / f"{kind}_{dtype}_{lay}.pt") for lay in ("contiguous", "channels_last"))
            diff = float((a - b).abs().mean() * 127.5)  # pixels in [-1, 1]
            c, cl = res["contiguous"], res["channels_last"]
            print(f"{kind:8s} {dtype:9s} {c['px']:4d} {c['s']:13.2f} {cl['s']:16.2f} {c['s'] / cl['s']:7.2f}x "
                  f"{c['peak_rss_gb']:6.2f} / {cl['peak_rss_gb']:5.2f} {diff:14.3f}", flush=True)
            rows.append(dict(kind=kind, dtype=dtype, contiguous=c, channels_last=cl, mean_diff_255=diff))
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
