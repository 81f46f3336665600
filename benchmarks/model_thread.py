"""Why the server loads its model on the thread it computes on: torch's parallel operations run
in an OpenMP team per calling thread, and with more OpenMP threads than cores libgomp's threads
barely spin before they sleep between operations.

    python benchmarks/model_thread.py [--requests 12]

Draws the same requests (the shipped model at its defaults, --dtype auto) one at a time, each way
in a fresh process: on the main thread alone (one team); on a second thread after the main thread
ran one parallel operation (two teams, one idle); and through `unclip serve` (the model's seconds
per image from its /metrics, one client, one request at a time).
"""

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import serve_load  # its server and prompts

from unclip.runtime.devices import cpu_name


def requests(n: int) -> list[tuple[str, int]]:
    rng = random.Random(0)
    return [(f"a {rng.choice(serve_load.COLOURS)} {rng.choice(serve_load.SHAPES)} on a white background", 1000 + i)
            for i in range(n)]


def draw(way: str, n: int) -> float:
    """Seconds per image drawn `way` ("one team" or "two teams"), in this process."""
    import threading

    import torch

    from unclip.pipelines.registry import load_pipeline

    pipe = load_pipeline(None, torch_dtype="auto", device="cpu", compile="off")
    out = []

    def run():
        pipe([requests(1)[0][0]], generator=[torch.Generator().manual_seed(1)], output_type="uint8")  # warm-up
        start = time.perf_counter()
        for prompt, seed in requests(n):
            pipe([prompt], generator=[torch.Generator().manual_seed(seed)], output_type="uint8")
        out.append((time.perf_counter() - start) / n)

    if way == "one team":
        run()
    else:
        (torch.randn(1_000_000) * 2).sum()  # the main thread's team
        thread = threading.Thread(target=run)
        thread.start()
        thread.join()
    return out[0]


def served(n: int) -> float:
    """The server's model seconds per image for the same requests, one at a time."""
    from gradio_client import Client

    with serve_load.server(None, 1, None) as (url, _, _, _):
        client = Client(url, auth=(serve_load.USER, serve_load.PASSWORD), verbose=False)
        client.predict(requests(1)[0][0], 1, 1, api_name="/generate")  # warm-up
        before = serve_load.server_counts(url)[1]
        for prompt, seed in requests(n):
            client.predict(prompt, 1, seed, api_name="/generate")
        return (serve_load.server_counts(url)[1] - before) / n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=12)
    p.add_argument("--way", help=argparse.SUPPRESS)  # one way, in a child process
    args = p.parse_args()
    if args.way:
        print(json.dumps(draw(args.way, args.requests)))
        return
    import torch

    from unclip.runtime.precision import resolve_dtype

    print(f"CPU: {cpu_name()}; {args.requests} requests one at a time, the shipped model at its defaults, "
          f"--dtype auto = {str(resolve_dtype('auto', torch.device('cpu'))).removeprefix('torch.')}", flush=True)
    rows = {}
    for way in ("one team", "two teams", "one team", "two teams"):
        r = subprocess.run([sys.executable, __file__, "--way", way, "--requests", str(args.requests)],
                           capture_output=True, text=True, check=True)
        rows.setdefault(way, []).append(float(r.stdout.strip().splitlines()[-1]))
        print(f"{way}: {rows[way][-1]:.3f} s/image", flush=True)
    rows["unclip serve (model time)"] = [served(args.requests)]
    print(f"unclip serve (model time): {rows['unclip serve (model time)'][0]:.3f} s/image", flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
