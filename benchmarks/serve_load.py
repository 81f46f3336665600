"""Concurrent clients against `unclip serve` on loopback: batched against one request at a time,
and a long run with logins and intruders.

    python benchmarks/serve_load.py --compare 1 8 32 --minutes 2     # throughput, p50 / p95
    python benchmarks/serve_load.py --clients 32 --minutes 5 --intruders 100

Each run starts its own server (the shipped model unless --model) with a login
(UNCLIP_SERVE_AUTH), and each client thread logs in once, then loops: it asks /generate for one
image of a prompt and seed of its own and checks that the PNG it gets back carries that prompt
and seed (so no result reaches the wrong client). --compare runs every client count twice:
`--batch-size 8` (batched) and `--batch-size 1` (one at a time). Throughput is images answered
per minute, from the first request to the last answer. --intruders N sends N requests with no
or wrong credentials during the load: each must be refused and the server must draw nothing
for them (its /metrics count of images equals the clients' images). --abandon N drops every
Nth request half a second after sending it. Prints the server's peak RSS and its RSS in the
first and the last minute (bounded: no growth). Only 127.0.0.1 is contacted.
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
import urllib.error
import urllib.request
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from unclip.runtime.devices import cpu_name

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange"]
SHAPES = ["circle", "square", "triangle", "star"]
USER, PASSWORD = "load", "test-password"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int, field: str = "VmRSS:") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return 0.0


@contextmanager
def server(model: str | None, batch_size: int, device: str | None, batch_wait: float | None = None):
    """`unclip serve` with a login on a free port: (url, process, log path, command)."""
    port = free_port()
    log_path = Path(tempfile.mkdtemp(prefix="serve-load-")) / "serve.log"
    cmd = [sys.executable, "-m", "unclip", "serve", "--port", str(port), "--batch-size", str(batch_size),
           *(["--batch-wait", f"{batch_wait:g}"] if batch_wait is not None else []),
           *(["--model", model] if model else []), *(["--device", device] if device else [])]
    env = {**os.environ, "UNCLIP_SERVE_AUTH": f"{USER}:{PASSWORD}", "GRADIO_ANALYTICS_ENABLED": "False"}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 180
        while "unclip serve: http" not in log_path.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not start:\n{log_path.read_text()[-2000:]}")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/", proc, log_path, " ".join(cmd[2:])
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def client_loop(client, index: int, stop_at: float, abandon: int, timeout: float, results: list, lock):
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
            results.append((outcome, start, time.monotonic()))


def intrude(url: str, n: int, outcomes: Counter) -> None:
    """`n` attempts without the right login, spread out: half with no credentials at all (the page's
    API and the queue directly), half with a wrong password. Counts how each was answered."""
    from gradio_client import Client

    for i in range(n):
        try:
            if i % 2:
                Client(url, auth=(USER, f"wrong-{i}"), verbose=False)
            elif i % 4 == 0:
                Client(url, verbose=False)
            else:
                body = json.dumps({"data": ["a red circle", 1, i], "fn_index": 0, "session_hash": f"x{i}"}).encode()
                urllib.request.urlopen(urllib.request.Request(url + "gradio_api/queue/join", data=body,
                                                              headers={"Content-Type": "application/json"}), timeout=30)
            outcomes["ACCEPTED"] += 1
        except urllib.error.HTTPError as e:
            outcomes[f"refused (HTTP {e.code})"] += 1
        except Exception as e:  # noqa: BLE001
            outcomes[f"refused ({type(e).__name__}: {str(e)[:60]})"] += 1
        time.sleep(0.5)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds a process has used so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_counts(url: str) -> tuple[float, float]:
    """(images drawn, seconds the model computed) from the server's /metrics."""
    with urllib.request.urlopen(url + "metrics", timeout=30) as r:
        text = r.read().decode()
    images = sum(float(m) for m in re.findall(r"^unclip_model_images_total (\S+)$", text, re.M))
    busy = re.search(r"^unclip_model_busy_seconds_total (\S+)$", text, re.M)
    return images, float(busy.group(1)) if busy else float("nan")


def run(args, clients: int, batch_size: int, minutes: float, intruders: int = 0) -> dict:
    from gradio_client import Client

    wait = args.batch_wait if batch_size > 1 else None
    with server(args.model, batch_size, args.device, wait) as (url, proc, log_path, cmd):
        with urllib.request.urlopen(url + "healthz", timeout=30) as r:
            health = json.loads(r.read())
        print(f"  server computes on {health['device']} in {health['dtype']} (its /healthz)", flush=True)
        logged_in = [Client(url, auth=(USER, PASSWORD), verbose=False) for _ in range(clients)]
        busy_before = server_counts(url)[1]
        cpu_before = cpu_seconds(proc.pid), cpu_seconds(os.getpid())
        results, lock, rss = [], threading.Lock(), []
        start = time.monotonic()
        stop_at = start + minutes * 60
        threads = [threading.Thread(target=client_loop, args=(c, i, stop_at, args.abandon, args.timeout, results, lock),
                                    daemon=True) for i, c in enumerate(logged_in)]
        refused = Counter()
        if intruders:
            threads.append(threading.Thread(target=intrude, args=(url, intruders, refused), daemon=True))
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads) and time.monotonic() < stop_at + args.timeout + 30:
            rss.append((time.monotonic() - start, rss_mb(proc.pid)))
            time.sleep(1)
        unfinished = sum(t.is_alive() for t in threads)
        peak = max([r for _, r in rss] + [rss_mb(proc.pid, "VmHWM:")])
        drawn, busy = server_counts(url)
        wall = time.monotonic() - start
        server_cpu, client_cpu = cpu_seconds(proc.pid) - cpu_before[0], cpu_seconds(os.getpid()) - cpu_before[1]
        ran = len(re.findall(r"job generate done", log_path.read_text()))
        withdrawn = len(re.findall(r"job generate cancelled", log_path.read_text()))
        batches = [int(b) for b in re.findall(r"batch of (\d+) requests", log_path.read_text())]
    counts = Counter(o if not o.startswith("error") else "error" for o, _, _ in results)
    answered = [(s, e) for o, s, e in results if o == "image"]
    span = (max(e for _, e in answered) - start) / 60 if answered else float("nan")
    first = [r for t, r in rss if t < 60]
    last = [r for t, r in rss if t > rss[-1][0] - 60]
    return {"clients": clients, "batch_size": batch_size, "minutes": minutes, "command": cmd, "sent": len(results),
            "unfinished": unfinished, **{k: counts.get(k, 0) for k in ("image", "message", "abandoned", "no answer",
                                                                       "wrong client", "error")},
            "errors": sorted({o for o, _, _ in results if o.startswith("error")}),
            "images_per_min": len(answered) / span if answered else 0.0,
            "p50_s": float(np.percentile([e - s for s, e in answered], 50)) if answered else None,
            "p95_s": float(np.percentile([e - s for s, e in answered], 95)) if answered else None,
            "jobs_ran": ran, "jobs_withdrawn": withdrawn, "images_drawn": drawn, "mean_batch": float(np.mean(batches)) if batches else None,
            "model_busy": (busy - busy_before) / wall, "model_s_per_image": (busy - busy_before) / max(drawn, 1),
            "server_cores": server_cpu / wall, "client_cores": client_cpu / wall, "peak_rss_mb": peak, "rss_first_min_mb": max(first) if first else None,
            "rss_last_min_mb": max(last) if last else None, "intruders": dict(refused),
            "rss_by_minute_mb": [round(max(r for t, r in rss if m * 60 <= t < (m + 1) * 60))
                                 for m in range(int(rss[-1][0] // 60) + 1) if any(m * 60 <= t < (m + 1) * 60 for t, _ in rss)]}


def show(r: dict) -> None:
    print(f"\n{r['clients']} clients, --batch-size {r['batch_size']}, {r['minutes']:g} min: `{r['command']}`")
    print(f"  requests sent {r['sent']}; answered with their own image {r['image']}; message {r['message']}; "
          f"abandoned {r['abandoned']}; no answer {r['no answer']}; wrong client {r['wrong client']}; "
          f"error {r['error']}; clients still waiting at the end {r['unfinished']}")
    for e in r["errors"]:
        print(f"    {e}")
    if r["p50_s"] is not None:
        print(f"  throughput {r['images_per_min']:.2f} images/min; latency p50 {r['p50_s']:.1f} s, "
              f"p95 {r['p95_s']:.1f} s; mean batch {r['mean_batch'] or 0:.2f} requests; the model computed "
              f"{100 * r['model_busy']:.0f}% of the time")
        print(f"  cores in use on average: the server {r['server_cores']:.2f}, the load's clients "
              f"{r['client_cores']:.2f} (of {os.cpu_count()})")
    print(f"  server: jobs run {r['jobs_ran']}, withdrawn (their client left) {r['jobs_withdrawn']}, images drawn (its /metrics) {r['images_drawn']:.0f}; peak RSS "
          f"{r['peak_rss_mb']:.0f} MB (first minute {r['rss_first_min_mb'] or 0:.0f}, last minute "
          f"{r['rss_last_min_mb'] or 0:.0f}; by minute {r['rss_by_minute_mb']})")
    if r["intruders"]:
        print(f"  intruders (no or wrong credentials): {sum(r['intruders'].values())} sent; " +
              "; ".join(f"{k}: {v}" for k, v in sorted(r["intruders"].items())))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--compare", type=int, nargs="+", metavar="CLIENTS",
                   help="for each client count: batched (--batch-size 8) against one at a time (--batch-size 1)")
    p.add_argument("--clients", type=int, default=32, help="without --compare: this many clients, batched")
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--intruders", type=int, default=0, help="requests with no or wrong credentials during the run")
    p.add_argument("--model", help="model folder (default: the shipped model)")
    p.add_argument("--device", help="the server's --device (default: its own)")
    p.add_argument("--batch-wait", type=float, help="the batched server's --batch-wait (default: its own)")
    p.add_argument("--abandon", type=int, default=0, help="every Nth request of a client is dropped (0: none)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds a client waits for an answer")
    args = p.parse_args()
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; {time.strftime('%Y-%m-%d')}", flush=True)
    rows = []
    plan = [(c, b) for c in args.compare for b in (8, 1)] if args.compare else [(args.clients, 8)]
    for clients, batch in plan:
        rows.append(run(args, clients, batch, args.minutes, args.intruders))
        show(rows[-1])
        sys.stdout.flush()
    if args.compare:
        print("\nclients | batched images/min | one at a time | speedup | p50 / p95 batched | p50 / p95 one at a time")
        for c in args.compare:
            b, one = (next(r for r in rows if r["clients"] == c and r["batch_size"] == s) for s in (8, 1))
            speed = b["images_per_min"] / one["images_per_min"] if one["images_per_min"] else float("nan")
            print(f"{c:7d} | {b['images_per_min']:18.2f} | {one['images_per_min']:13.2f} | {speed:6.2f}x | "
                  f"{b['p50_s']:.1f} / {b['p95_s']:.1f} s | {one['p50_s']:.1f} / {one['p95_s']:.1f} s")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
