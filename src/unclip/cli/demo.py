"""`unclip demo`: a grid of canonical prompts drawn by the shipped default model, or, with
`--train`, by a small model of every stage trained here from scratch (configs/demo)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from unclip.cli.flags import device_flag, offload_flag

DEMO_CONFIGS = Path(__file__).resolve().parents[3] / "configs" / "demo"

PROMPTS = [
    "a large red circle on the left on a white background",
    "a small blue square at the top on a black background",
    "a large yellow triangle in the center on a white background",
    "a large purple star on the right on a black background",
    "a small green square at the bottom on a white background",
    "a red square to the left of a blue circle on a white background",
    "a orange star above a green triangle on a black background",  # the spec's form: always "a"
    "a blue triangle below a yellow circle on a white background",
]


def run_demo(out: str | Path = "unclip-demo", model: str | Path | None = None, seed: int = 0,
             device: str | None = "auto", offload: str | None = None) -> Path:
    """Generate PROMPTS once each on `device` and save `grid.png` beside the images; returns the grid path."""
    import numpy as np
    from PIL import Image

    from unclip.pipelines.registry import load_pipeline
    from unclip.plot import image_grid
    from unclip.tasks.generate import generate_files

    start = time.perf_counter()
    pipe = load_pipeline(model, device=device, offload=offload)
    out = Path(out)
    manifest = generate_files(pipe, PROMPTS, out, seed=seed, batch_size=len(PROMPTS), overwrite=True)
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    images = np.stack([np.asarray(Image.open(out / r["file"])) for r in records])
    image_grid(images, [r["prompt"] for r in records], cols=4).save(out / "grid.png")
    print(f"{len(records)} images in {time.perf_counter() - start:.1f} s; grid: {out / 'grid.png'}")
    return out / "grid.png"


def train_demo(out: str | Path = "unclip-demo-train", configs: str | Path | None = None,
               eval_num: int = 48) -> dict:
    """Train every stage from scratch with the presets in `configs` (clip.yaml, prior.yaml,
    decoder.yaml, prior_ar.yaml if present, and the upsampler*.yaml files in name order), assemble them into out/model,
    draw the demo grid and score `eval_num` eval prompts. Rerunning resumes where it stopped."""
    from unclip.config import load, to_dict
    from unclip.pipelines.dalle2 import DalleTwoPipeline
    from unclip.pipelines.dalle2.assemble import assemble
    from unclip.tasks.evaluate.report import print_report
    from unclip.tasks.evaluate.shapes_eval import evaluate_model
    from unclip.train import stage_classes
    from unclip.train.loop import train

    start, out = time.perf_counter(), Path(out)
    configs = Path(configs) if configs else DEMO_CONFIGS
    upsamplers = sorted(p.stem for p in configs.glob("upsampler*.yaml"))
    ar = ["prior_ar"] if (configs / "prior_ar.yaml").is_file() else []
    stages = ["clip", "prior", *ar, "decoder", *upsamplers]
    missing = [n for n in ("clip", "prior", "decoder") if not (configs / f"{n}.yaml").is_file()]
    if missing:
        raise FileNotFoundError(f"{configs} lacks {', '.join(m + '.yaml' for m in missing)}")
    clip = out / "clip" / "model"
    for name in stages:
        overrides = [f"train.out_dir={out / name}"]
        prior = [f"clip={clip}", f"cache={out / 'prior-cache'}"]  # both priors share the cache
        overrides += {"prior": prior, "prior_ar": prior, "decoder": [f"clip={clip}"]}.get(name, [])
        config_cls, stage_cls = stage_classes("upsampler" if name.startswith("upsampler") else name)
        cfg = load(config_cls, configs / f"{name}.yaml", overrides)
        print(f"[{time.perf_counter() - start:5.0f} s] training {name}", flush=True)
        train(stage_cls(cfg), cfg.train, resume=True, run_config=to_dict(cfg))
    parts = [out / n / "model" for n in stages[1:]]
    assemble(parts, out / "model")
    grid = run_demo(out / "grid", out / "model")
    figures = evaluate_model(DalleTwoPipeline.from_pretrained(out / "model"), out / "eval", num=eval_num)
    print_report(f"shapes scores of the demo model on {eval_num} eval prompts (report in {out / 'eval'})",
                 figures)
    print(f"trained and evaluated in {(time.perf_counter() - start) / 60:.1f} min; grid: {grid}")
    return figures


def cmd_demo(args) -> None:
    if args.train:
        if args.model:
            raise ValueError("--train trains its own model; leave out --model")
        train_demo(args.out or "unclip-demo-train", args.configs, args.eval_num)
    else:
        run_demo(args.out or "unclip-demo", args.model, args.seed, device=args.device, offload=args.offload)


def add_demo(sub) -> dict:
    dm = sub.add_parser("demo", help="draw a grid of canonical prompts with the default model",
                        description="Generate a handful of canonical shapes prompts and save grid.png.")
    dm.add_argument("--model", help="model folder (default: the shipped model)")
    dm.add_argument("--out", help="output folder (default: unclip-demo, or unclip-demo-train with --train)")
    dm.add_argument("--seed", type=int, default=0)
    dm.add_argument("--train", action="store_true", help="first train a small model of every stage "
                    "from scratch (about 20 min on 2 CPU cores), then draw its grid and score it")
    dm.add_argument("--configs", help="with --train: folder of stage presets (default: configs/demo)")
    dm.add_argument("--eval-num", type=int, default=48, help="with --train: eval prompts to score")
    device_flag(dm)
    offload_flag(dm)
    return {"demo": cmd_demo}
