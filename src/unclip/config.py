"""Typed, strict configuration: dataclasses loaded from YAML or TOML with dotted overrides.

An unknown key, a value of the wrong type or an impossible value is a `ConfigError` that
names the key, raised before any work starts.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A bad configuration value; `key` is the dotted path of the offending entry."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"config key '{key}': {message}" if key else message)


def check(condition: bool, key: str, message: str) -> None:
    """Raise a ConfigError for `key` unless `condition` holds (for `__post_init__` checks)."""
    if not condition:
        raise ConfigError(key, message)


@dataclass
class DataConfig:
    """Where training images and captions come from."""

    source: Literal["shapes", "folder"] = "shapes"
    path: str | None = None  # image folder or folder of .tar shards, for source="folder"
    image_size: int = 64
    seed: int = 0
    two_prob: float = 0.5  # shapes: share of two-object scenes
    paraphrase_prob: float = 0.5  # shapes: share of paraphrased / partial captions
    hard_negatives: bool = False  # shapes: pair each scene with a near miss in the batch (CLIP)
    num_workers: int = 1

    def __post_init__(self):
        check(self.image_size >= 8, "image_size", f"must be at least 8, got {self.image_size}")
        check(0 <= self.two_prob <= 1, "two_prob", "must be in [0, 1]")
        check(0 <= self.paraphrase_prob <= 1, "paraphrase_prob", "must be in [0, 1]")
        check(self.num_workers >= 0, "num_workers", "must be >= 0")
        check(self.source != "folder" or bool(self.path), "path", "is required for source 'folder'")


@dataclass
class TrainConfig:
    """The shared training loop's settings. `batch_size` is the global batch of one optimizer
    step, split over processes and gradient-accumulation micro-batches."""

    out_dir: str = "runs/run"
    steps: int = 1000
    batch_size: int = 64
    grad_accum: int = 1
    lr: float = 3e-4
    warmup_steps: int = 100
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    # auto: bf16 autocast where the hardware runs it natively (a GPU, a CPU with AVX-512 BF16 or
    # AMX), else fp32; bf16 on a CPU without it is slower than fp32. Weights stay fp32.
    mixed_precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 200
    keep_checkpoints: int = 2
    sample_every: int = 0  # 0: only at the end

    def __post_init__(self):
        for name in ("steps", "batch_size", "grad_accum", "log_every", "checkpoint_every"):
            check(getattr(self, name) > 0, name, f"must be positive, got {getattr(self, name)}")
        check(math.isfinite(self.lr) and self.lr > 0, "lr", f"must be a positive finite number, got {self.lr}")
        for name in ("eps", "weight_decay", "grad_clip"):
            value = getattr(self, name)
            check(math.isfinite(value) and value >= 0, name, f"must be a finite number >= 0, got {value}")
        check(self.warmup_steps >= 0, "warmup_steps", "must be >= 0")
        check(all(0 <= b < 1 for b in self.betas), "betas", "each must be in [0, 1)")
        check(0 <= self.ema_decay < 1, "ema_decay", "must be in [0, 1)")
        check(self.grad_clip >= 0, "grad_clip", "must be >= 0 (0 turns clipping off)")
        check(self.keep_checkpoints >= 1, "keep_checkpoints", "must be at least 1")
        check(self.sample_every >= 0, "sample_every", "must be >= 0")
        check(
            self.batch_size % self.grad_accum == 0,
            "batch_size",
            f"{self.batch_size} is not divisible by grad_accum={self.grad_accum}",
        )


# ---------------------------------------------------------------------------- loading


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    """Build dataclass `cls` from a plain dict, strictly (unknown keys and bad types raise)."""
    if not isinstance(data, dict):
        raise ConfigError(prefix, f"expected a table of keys, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(data) - set(names))
    if unknown:
        key = f"{prefix}{unknown[0]}"
        raise ConfigError(key, f"unknown key; valid keys here are: {', '.join(names)}")
    kwargs = {k: _coerce(hints[k], v, f"{prefix}{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{prefix}{e.key}", str(e).split(": ", 1)[-1]) from None


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, key)
    if origin is Literal:
        if value not in args:
            raise ConfigError(key, f"must be one of {list(args)}, got {value!r}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, f"expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis and len(args) != len(value):
            raise ConfigError(key, f"expected {len(args)} values, got {len(value)}")
        item_types = [args[0]] * len(value) if origin is list or args[-1] is Ellipsis else args
        return origin(_coerce(t, v, f"{key}[{i}]") for i, (t, v) in enumerate(zip(item_types, value)))
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp in (int, float, str, bool) and not (isinstance(value, tp) and not _bool_as_number(tp, value)):
        raise ConfigError(key, f"expected {tp.__name__}, got {value!r}")
    return value


def _bool_as_number(tp: type, value: Any) -> bool:
    return tp in (int, float) and isinstance(value, bool)


def read_file(path: str | Path) -> dict:
    """A YAML (.yaml/.yml) or TOML (.toml) file as a dict; a missing file is a clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    if path.suffix not in (".toml", ".yaml", ".yml"):
        raise ConfigError("", f"config file must end in .yaml, .yml or .toml: {path}")
    try:
        text = path.read_text()
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text) or {}
    except (UnicodeDecodeError, yaml.YAMLError, tomllib.TOMLDecodeError) as e:
        raise ConfigError("", f"config file {path} cannot be parsed: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError("", f"config file {path} must hold a table of keys")
    return data


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `key.sub=value` overrides (values parsed as YAML scalars) to a raw config dict."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(item, "an override must look like key.sub=value")
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(key, f"'{part}' is not a table")
        value = yaml.safe_load(raw)
        if isinstance(value, bool) and raw.lower() not in ("true", "false"):
            value = raw  # YAML 1.1 reads yes/no/on/off as booleans; keep the word
        node[parts[-1]] = value
    return data


def load(cls: type, path: str | Path | None = None, overrides: list[str] = ()) -> Any:
    """Load config `cls` from an optional file plus overrides; everything is checked here."""
    data = read_file(path) if path else {}
    return from_dict(cls, apply_overrides(data, list(overrides)))


def to_dict(cfg: Any) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


__all__ = ["ConfigError", "DataConfig", "TrainConfig", "load", "from_dict", "to_dict"]
