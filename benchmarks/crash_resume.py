"""kill -9 at random moments of a tiny training run, then --resume: is the result bit-identical?

One unbroken run of the tiny CLIP preset is the reference. Each trial starts the same run in a
fresh folder, waits until training has begun, kills the process with SIGKILL at a moment drawn
uniformly over the reference's training time (so kills land in steps, checkpoint writes, the
final export), then runs `--resume` (again, until it finishes) and compares: every logged loss
and every tensor of the final checkpoint and of the exported model must equal the reference's.

    python benchmarks/crash_resume.py [--trials 50] [--steps 200] [--seed 0]

Prints trials, resumed, bit-identical, lost steps (per kill: steps done, by the log, that the
resumed run had to repeat), and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]


def command(out: Path, steps: int, resume: bool) -> list[str]:
    return [sys.executable, "-m", "unclip", "train", "clip", "--config", str(ROOT / "configs/tiny/clip.yaml"),
            f"--train.out_dir={out}", f"--train.steps={steps}", "--train.checkpoint_every=2",
            "--train.keep_checkpoints=2"] + (["--resume"] if resume else [])


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}


def losses(out: Path) -> dict[int, float]:
    rows = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines() if x]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def tensors(out: Path, steps: int) -> dict[str, torch.Tensor]:
    state = torch.load(out / "checkpoints" / f"step_{steps:08d}.pt", weights_only=True)
    flat = {f"model.{k}": v for k, v in state["model"].items()} | {f"ema.{k}": v for k, v in state["ema"].items()}
    return flat | {f"export.{k}": v for k, v in load_file(out / "model" / "model.safetensors").items()}


def run(out: Path, steps: int, resume: bool = False) -> None:
    done = subprocess.run(command(out, steps, resume), env=env(), capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"training failed:\n{done.stderr[-2000:]}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=50)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="crash-resume-"))
    ref = root / "reference"
    proc = subprocess.Popen(command(ref, args.steps, False), env=env(), stderr=subprocess.DEVNULL)
    while not (ref / "log.jsonl").exists():
        time.sleep(0.01)
    begun = time.perf_counter()
    proc.wait()
    train_time = time.perf_counter() - begun
    ref_losses, ref_tensors = losses(ref), tensors(ref, args.steps)
    print(f"reference: {args.steps} steps, {train_time:.1f} s from the first log line to the exit")
    resumed = identical = 0
    lost, finished_before_kill = [], 0
    for trial in range(args.trials):
        out = root / f"trial{trial:03d}"
        proc = subprocess.Popen(command(out, args.steps, False), env=env(), stderr=subprocess.DEVNULL)
        while not (out / "log.jsonl").exists() and proc.poll() is None:
            time.sleep(0.005)
        time.sleep(rng.uniform(0, train_time))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        else:
            finished_before_kill += 1
        proc.wait()
        before = max(losses(out), default=0)
        run(out, args.steps, resume=True)
        resumed += 1
        starts = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines() if '"run"' in x]
        lost.append(before - starts[-1]["step"] if len(starts) > 1 else 0)
        same = losses(out) == ref_losses
        got = tensors(out, args.steps)
        same = same and got.keys() == ref_tensors.keys() and all(torch.equal(got[k], ref_tensors[k]) for k in got)
        identical += same
        print(f"trial {trial + 1}/{args.trials}: killed after step {before}, resumed, "
              f"{'bit-identical' if same else 'DIFFERENT'}", flush=True)
    report = {"trials": args.trials, "resumed": resumed, "bit_identical": identical,
              "finished_before_kill": finished_before_kill, "lost_steps_mean": sum(lost) / len(lost),
              "lost_steps_max": max(lost), "steps": args.steps, "checkpoint_every": 2}
    print(f"trials {args.trials}, resumed {resumed}, bit-identical {identical}, lost steps per kill: mean "
          f"{report['lost_steps_mean']:.2f}, at most {report['lost_steps_max']} (checkpoints every 2 steps)")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
