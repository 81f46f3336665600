"""LoRA fine-tuning at the published size: trainable parameters, peak memory and seconds per step.

Runs `unclip train decoder` as a user would, at batch 1 for --steps steps (the last one timed), on
folders written by benchmarks/published_sizes.py (`--keep DIR`): Kandinsky 2.2's decoder (with its
prior folder, whose image tower embeds the training images) or Karlo's (with its variations folder's
image tower). Full fine-tuning is measured where --full is given, else given by arithmetic: AdamW
in mixed precision keeps per parameter fp32 weights (4 B), fp32 gradients (4 B) and two fp32
moments (8 B), plus the bf16 copy the forward runs on (2 B): 18 B per trained parameter, before
activations.

    python benchmarks/published_finetune.py --family kandinsky --root DIR [--device cpu] [--steps 2]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from published_sizes import run_child

FULL_BYTES_PER_PARAM = 18


def main() -> None:
    from unclip.runtime.devices import cpu_name

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", choices=["kandinsky", "karlo"], default="kandinsky")
    p.add_argument("--root", required=True, help="the folders of published_sizes.py --keep")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--full", action="store_true", help="also train every weight (needs the memory)")
    p.add_argument("--device", default="cpu", help="cpu: hide any GPU from accelerate")
    args = p.parse_args()
    root = Path(args.root)
    if args.family == "kandinsky":
        init = [f"--init={root / 'decoder'}", f"--prior-model={root / 'prior'}"]
        config = ROOT / "configs/kandinsky/decoder_finetune.yaml"
    else:
        init = [f"--init={root / 'karlo'}", f"--image-encoder={root / 'karlo-image-variations'}"]
        config = ROOT / "configs/karlo/decoder_finetune.yaml"
    env = dict(os.environ, **({"CUDA_VISIBLE_DEVICES": ""} if args.device == "cpu" else {}))
    print(f"machine: CPU {cpu_name()}, {os.cpu_count()} cores; device {args.device}; batch 1; "
          f"{args.steps} steps, the last timed", flush=True)
    rows, failed = [], False
    for rank in [args.rank] + ([0] if args.full else []):
        with tempfile.TemporaryDirectory() as out:
            cmd = [sys.executable, "-m", "unclip", "train", "decoder", "--config", str(config), *init,
                   f"--lora.rank={rank}", f"--train.steps={args.steps}", "--train.batch_size=1",
                   "--train.log_every=1", f"--train.checkpoint_every={10 * args.steps}", "--train.sample_every=0",
                   "--train.warmup_steps=0", "--data.num_workers=0", f"--train.out_dir={Path(out) / 'run'}"]
            start = time.perf_counter()
            code, usage, text, err = run_child(cmd, env)
            text += err
            if code != 0:
                print(f"rank {rank}: FAILED\n{text[-2000:]}")
                failed = True
                continue
            found = re.search(r"([\d,]+) trainable parameters .*the (?:network|component) has ([\d,]+)", text)
            trainable, total = (int(found.group(i).replace(",", "")) for i in (1, 2))
            log = [json.loads(line) for line in (Path(out) / "run" / "log.jsonl").read_text().splitlines() if line.strip()]
            rates = [r[k] for r in log for k in r if "per_s" in k or k == "rate"]
            row = dict(family=args.family, rank=rank, trainable=trainable, network=total,
                       s_per_step=1 / rates[-1] if rates else None, peak_rss_gb=usage.ru_maxrss * 1024 / 1e9,
                       process_s=time.perf_counter() - start,
                       full_finetune_gb_arithmetic=total * FULL_BYTES_PER_PARAM / 1e9)
            rows.append(row)
            s = f"{row['s_per_step']:.1f}" if row["s_per_step"] else "-"
            print(f"{'LoRA rank ' + str(rank) if rank else 'full':12s} trainable {trainable / 1e6:8.2f}M of "
                  f"{total / 1e6:.1f}M; {s} s/step; peak RSS {row['peak_rss_gb']:.2f} GB; whole run "
                  f"{row['process_s']:.0f} s", flush=True)
    if rows:
        total = rows[0]["network"]
        print(f"full fine-tuning by arithmetic: {total / 1e6:.0f}M parameters x {FULL_BYTES_PER_PARAM} B = "
              f"{total * FULL_BYTES_PER_PARAM / 1e9:.1f} GB before activations")
    print(json.dumps(rows))
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
