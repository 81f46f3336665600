"""The `unclip` command. Each subcommand parses its arguments and calls one library function."""

from __future__ import annotations

import argparse
import logging
import sys

STAGES = ("clip", "prior")


def _stage(name: str):
    """(config class, stage class) for a stage name; imported lazily to keep --help fast."""
    if name == "clip":
        from .train.clip import ClipStage, ClipStageConfig

        return ClipStageConfig, ClipStage
    if name == "prior":
        from .train.prior import PriorStage, PriorStageConfig

        return PriorStageConfig, PriorStage
    raise ValueError(f"unknown stage {name!r}; stages are {STAGES}")


def _overrides(extra: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """`--train.lr=3e-4` or `--train.lr 3e-4` -> ["train.lr=3e-4"]."""
    out, i = [], 0
    while i < len(extra):
        tok = extra[i]
        if not tok.startswith("--") or len(tok) < 3:
            parser.error(f"unexpected argument {tok!r}; config overrides look like --train.lr=3e-4")
        key = tok[2:]
        if "=" not in key:
            if i + 1 >= len(extra):
                parser.error(f"override {tok} needs a value")
            key, i = f"{key}={extra[i + 1]}", i + 1
        out.append(key)
        i += 1
    return out


def cmd_data(args) -> None:
    from .data.export import write_shapes

    path = write_shapes(args.out, args.split, args.num, args.size, args.seed)
    print(f"wrote {args.num} images and {path}")


def cmd_train(args, overrides: list[str]) -> None:
    from .config import load, to_dict
    from .train.loop import train

    config_cls, stage_cls = _stage(args.stage)
    cfg = load(config_cls, args.config, overrides)
    stage = stage_cls(cfg)
    model = train(stage, cfg.train, resume=args.resume, run_config=to_dict(cfg))
    print(f"model written to {model}")


def cmd_eval(args) -> None:
    from .evaluate.report import print_report

    if args.what == "clip":
        from .clip import ClipEncoder
        from .evaluate.clip_retrieval import retrieval_accuracy

        if args.model is None:
            raise ValueError("eval clip needs --model DIR (a CLIP folder)")
        figures = retrieval_accuracy(ClipEncoder.from_pretrained(args.model), num=args.num)
        print_report(f"CLIP text-to-image top-1 retrieval among 100 ({args.model})", figures)
    elif args.what == "prior":
        from .evaluate.prior_eval import evaluate_prior
        from .pipeline import UnCLIPPipeline, resolve_model

        path = resolve_model(args.model)
        figures = evaluate_prior(UnCLIPPipeline.from_pretrained(path), num=args.num)
        print_report(f"prior: predicted vs true CLIP image embeddings ({path})", figures)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="unclip", description="unCLIP (DALL-E 2): train, sample, edit, evaluate.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser("data", help="render data sets to disk", description="Render the shapes world to PNGs "
                       "with a manifest.jsonl ({prompt, file, scene} per line).")
    d.add_argument("dataset", choices=["shapes"], help="which data set")
    d.add_argument("--split", choices=["train", "eval"], default="train",
                   help="train: the training stream (held-out pairs never drawn); eval: the fixed evaluation split")
    d.add_argument("--num", type=int, default=100, help="number of images")
    d.add_argument("--size", type=int, default=128, help="image side in pixels")
    d.add_argument("--seed", type=int, default=None, help="seed (default: 0 for train, the fixed eval seed for eval)")
    d.add_argument("--out", required=True, help="output folder")

    t = sub.add_parser("train", help="train one stage from a config file",
                       description="Train a stage. Any config key can be overridden: --train.lr=3e-4 --data.num_workers 2.")
    t.add_argument("stage", choices=STAGES, help="which stage to train")
    t.add_argument("--config", help="YAML or TOML config file (see configs/)")
    t.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in train.out_dir")

    e = sub.add_parser("eval", help="evaluate a trained stage", description="Print a table of figures and, "
                       "as the last line, one JSON object with all of them.")
    e.add_argument("what", choices=["clip", "prior"], help="clip: text-to-image retrieval; prior: cosine "
                   "and retrieval of sampled image embeddings against baselines (shapes eval split)")
    e.add_argument("--model", help="model folder (a CLIP folder for clip, a pipeline folder otherwise; "
                   "default: the shipped model)")
    e.add_argument("--num", type=int, default=500, help="eval split items (groups of 100 per subset)")
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # weight-loading bars would trail our tables
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    try:
        if args.command == "train":
            cmd_train(args, _overrides(extra, parser))
            return 0
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        {"data": cmd_data, "eval": cmd_eval}[args.command](args)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"unclip: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
