"""N concurrent clients against `unclip serve` on loopback for M minutes.

    python benchmarks/serve_load.py --clients 32 --minutes 5 > docs/results/serve_load.txt

Starts the server (the shipped model unless --model), then each client thread loops: it asks
/generate for one image of a prompt and seed of its own, and checks that the PNG it gets back
carries that prompt and seed (so no result reaches the wrong client). One request in
--abandon is dropped half a second after it was sent, as a closed browser tab drops it. Prints
requests answered with an image, answered with a message (busy, past the time limit), errors,
requests without an answer, results delivered to the wrong client, p50 / p95 latency, the
jobs the server ran (from its log) and its peak RSS. Only 127.0.0.1 is contacted; the run is
bounded in time and stops by itself.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from unclip.runtime.devices import cpu_name

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange"]
SHAPES = ["circle", "square", "triangle", "star"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def client_loop(url: str, index: int, stop_at: float, abandon: int, timeout: float, results: list, lock):
    from gradio_client import Client

    client = Client(url, verbose=False)
    rng = random.Random(index)
    n = 0
    while time.monotonic() < stop_at:
        n += 1
        prompt = f"a {rng.choice(COLOURS)} {rng.choice(SHAPES)} on a white background"
        seed = index * 100_000 + n
        start = time.monotonic()
        job = client.submit(prompt, 1, seed, api_name="/generate")
        if abandon and n % abandon == 0:
            time.sleep(0.5)
            job.cancel()
            outcome = "abandoned"
        else:
            try:
                gallery = job.result(timeout=timeout)
                record = json.loads(Image.open(gallery[0]["image"]).text["unclip"])
                outcome = "image" if (record["prompt"], record["seed"]) == (prompt, seed) else "wrong client"
            except TimeoutError:
                outcome = "no answer"
            except Exception as e:  # noqa: BLE001 (gradio_client raises AppError for gr.Error, others for faults)
                text = str(e)
                outcome = "message" if type(e).__name__ == "AppError" or "queue is full" in text.lower() \
                    else f"error: {type(e).__name__}: {text[:80]}"
        with lock:
            results.append((outcome, time.monotonic() - start))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--model", help="model folder (default: the shipped model)")
    p.add_argument("--abandon", type=int, default=8, help="every Nth request of a client is dropped (0: none)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds a client waits for an answer")
    args = p.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    log_path = Path(tempfile.mkdtemp(prefix="serve-load-")) / "serve.log"
    cmd = [sys.executable, "-m", "unclip", "serve", "--port", str(port), *(["--model", args.model] if args.model else [])]
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; "
          f"{args.clients} clients for {args.minutes:g} min against `{' '.join(cmd[2:])}`", flush=True)
    with open(log_path, "w") as log:
        server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while "unclip serve: http" not in log_path.read_text():
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not start:\n{log_path.read_text()[-2000:]}")
            time.sleep(0.5)
        results, lock, peak = [], threading.Lock(), 0
        stop_at = time.monotonic() + args.minutes * 60
        threads = [threading.Thread(target=client_loop, args=(url, i, stop_at, args.abandon, args.timeout, results, lock),
                                    daemon=True) for i in range(args.clients)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads) and time.monotonic() < stop_at + args.timeout + 30:
            peak = max(peak, rss_kb(server.pid, "VmRSS:"))
            time.sleep(1)
        unfinished = sum(t.is_alive() for t in threads)
        peak = max(peak, rss_kb(server.pid, "VmHWM:"))
    finally:
        server.terminate()
        server.wait(timeout=30)
    counts = Counter(o if not o.startswith("error") else "error" for o, _ in results)
    answered = [s for o, s in results if o in ("image", "message")]
    ran = len(re.findall(r"job generate done", log_path.read_text()))
    print(f"requests sent: {len(results)}; clients still waiting at the end: {unfinished}")
    for key in ("image", "message", "abandoned", "no answer", "wrong client", "error"):
        print(f"  {key}: {counts.get(key, 0)}")
    for o in sorted({o for o, _ in results if o.startswith("error")}):
        print(f"    {o}")
    if answered:
        print(f"latency of answered requests: p50 {np.percentile(answered, 50):.1f} s, "
              f"p95 {np.percentile(answered, 95):.1f} s")
    print(f"jobs the server ran: {ran} (answered with an image: {counts.get('image', 0)}; "
          f"abandoned: {counts.get('abandoned', 0)})")
    print(f"server peak RSS: {peak / 1024:.0f} MB")
    print(f"server log: {log_path}")


if __name__ == "__main__":
    main()
