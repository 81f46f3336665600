"""The `unclip` command: one module per group of commands, each adding its parsers and naming
the function that runs each (flags.py holds the flags they share)."""

from __future__ import annotations

import argparse
import gc
import logging
import sys
from pathlib import Path

from unclip.cli import demo, edit, env, evaluate, generate, serve, train

OUTPUT_COMMANDS = ("generate", "invert", "vary", "interpolate", "edit", "inpaint", "probe")
# in the order `unclip --help` lists them
GROUPS = (train.add_data, train.add_train, generate.add_generate, edit.add_edit, edit.add_inpaint, edit.add_probe,
          demo.add_demo, serve.add_serve, train.add_assemble, evaluate.add_eval, env.add_env)


def _overrides(extra: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """`--train.lr=3e-4` or `--train.lr 3e-4` -> ["train.lr=3e-4"]."""
    out, i = [], 0
    while i < len(extra):
        tok = extra[i]
        if not tok.startswith("--") or len(tok) < 3:
            parser.error(f"unexpected argument {tok!r}; config overrides look like --train.lr=3e-4")
        key = tok[2:]
        name, eq, value = key.partition("=")
        key = name.replace("-", "_") + eq + value  # --image-encoder DIR: the config key image_encoder
        if "=" not in key:
            if i + 1 >= len(extra):
                parser.error(f"override {tok} needs a value")
            key, i = f"{key}={extra[i + 1]}", i + 1
        out.append(key)
        i += 1
    return out


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    """The parser, and each command's function."""
    p = argparse.ArgumentParser(prog="unclip", description="unCLIP (DALL-E 2): train, sample, edit, evaluate.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands = {}
    for add in GROUPS:
        commands.update(add(sub))
    return p, commands


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # weight-loading bars would trail our tables
    parser, commands = build_parser()
    args, extra = parser.parse_known_args(argv)
    out = Path(args.out) if args.command in OUTPUT_COMMANDS else None
    fresh_out = out is not None and not out.exists()
    try:
        if args.command == "train":
            commands["train"](args, _overrides(extra, parser))
            return 0
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        commands[args.command](args)
    except (ValueError, OSError, FloatingPointError) as e:
        if isinstance(e, OSError) and e.filename and e.strerror:
            e = f"{e.strerror}: {e.filename}"
        print(f"unclip: error: {e}", file=sys.stderr)
        if fresh_out and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a failed command leaves no empty folder behind
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())


def run() -> None:
    """The `unclip` program (`python -m unclip` too): main(), then exit without the collector's
    passes over every object torch and transformers made as the interpreter finalizes: they took
    1.2 s of a 7 s `unclip generate` here (benchmarks/generate.py --cold-only). Frozen, the objects
    are still freed; atexit handlers and logging's flush still run. Not in main(): tests call it
    in one process many times, where frozen cycles would never be collected."""
    code = main()
    gc.freeze()
    sys.exit(code)
