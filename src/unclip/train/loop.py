"""The one training loop every stage plugs into.

A stage supplies a module whose `forward(batch)` returns the scalar loss, the data source, a
preview (metrics and/or sample images, computed with EMA weights) and an export. The loop
owns the rest: accelerate for devices and processes, AdamW with warmup and cosine decay,
gradient accumulation and clipping, EMA, mixed precision, atomic checkpoints with exact
resume, a JSONL loss log, a loss-curve PNG and a progress bar.

Exact resume: the data stream is a pure function of the sample index (see data/stream.py)
and the global RNG is reseeded from (seed, step, rank) at every step, so a resumed run
needs only the weights, EMA, optimizer, LR schedule and step to repeat an unbroken run.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import yaml
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from torch import nn
from tqdm.auto import tqdm

from unclip.config import ConfigError, TrainConfig
from unclip.data.stream import Source, make_loader
from unclip.plot import loss_curve
from unclip.runtime.precision import mixed_precision_for
from unclip.train.checkpoint import atomic_write, has_checkpoints, load_latest, save_checkpoint


class Stage(Protocol):
    name: str
    module: nn.Module  # forward(batch) -> scalar loss; holds every trained parameter; an optional
    # set_step(step) is called before each step (the dVAE's temperature and KL weight follow it)
    data_workers: int

    def source(self) -> Source: ...
    def preview(self, module: nn.Module, folder: Path, step: int) -> dict: ...
    def export(self, module: nn.Module, folder: Path) -> None: ...


class EMA:
    """Exponential moving average of a module's floating-point state, kept in fp32, frozen
    parameters left out (a fine-tuned family's towers: billions of weights that never change). The
    decay warms up as (1 + step) / (10 + step) so that short runs are not dominated by the init."""

    def __init__(self, module: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().float().clone() for k, v in _float_state(module).items()}

    def to(self, device) -> EMA:
        self.shadow = {k: v.to(device) for k, v in self.shadow.items()}
        return self

    @torch.no_grad()
    def update(self, module: nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        for k, v in _float_state(module).items():
            self.shadow[k].lerp_(v.detach().float(), 1 - decay)

    def copy_of(self, module: nn.Module) -> nn.Module:
        """A CPU copy of `module` carrying the averaged weights, in eval mode (previews and
        exports then run the same wherever training ran)."""
        ema = copy.deepcopy(module).cpu()
        ema.load_state_dict(self.shadow, strict=False)
        return ema.eval()


def _float_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The floating-point state that training changes: every float tensor but frozen parameters."""
    frozen = {n for n, p in module.named_parameters() if not p.requires_grad}
    return {k: v for k, v in module.state_dict().items() if v.is_floating_point() and k not in frozen}


def resolved_precision(name: str) -> str:
    """accelerate's mixed_precision for a config's `train.mixed_precision` on the device training
    will use (a GPU unless ACCELERATE_USE_CPU says otherwise), guessed before accelerate decides."""
    on_gpu = torch.cuda.is_available() and os.environ.get("ACCELERATE_USE_CPU", "").lower() not in ("1", "true", "yes")
    return mixed_precision_for(name, torch.device("cuda" if on_gpu else "cpu"))


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to the full rate, then cosine decay to 10% of it at the last step."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def step_seed(seed: int, step: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0])


def _to_device(batch: dict, device) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


RUN_FILES = ("config.yaml", "log.jsonl", "checkpoints", "model")


def check_out_dir(cfg: TrainConfig, resume: bool) -> None:
    """Before a stage is built: a fresh run refuses an `out_dir` that an earlier run (killed or
    finished) wrote to, so that nothing it left (checkpoints, a tokenizer) is silently reused.
    Race-free under accelerate: the main process writes config.yaml only after every process
    has met in `Accelerator()`, which each reaches after this check."""
    out = Path(cfg.out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError("train.out_dir", f"{out} is a file, not a folder")
    if not resume and any((out / name).exists() for name in RUN_FILES):
        raise FileExistsError(f"{out} already holds a run: pass --resume to continue it, or choose another "
                              "train.out_dir")


def config_changes(old: dict, new: dict, prefix: str = "") -> dict:
    """{dotted key: [old, new]} for every setting that differs."""
    out = {}
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out.update(config_changes(a, b, f"{prefix}{key}."))
        elif a != b:
            out[f"{prefix}{key}"] = [a, b]
    return out


def train(stage: Stage, cfg: TrainConfig, resume: bool = False, run_config: dict | None = None,
          allow_changes: bool = False):
    """Train `stage` for `cfg.steps` optimizer steps; returns the path of the exported model.
    Resuming with settings other than the checkpoint's is refused unless `allow_changes`, and
    then the changes are logged."""
    # "auto": what the hardware runs fast; the device is accelerate's choice, guessed before it
    # is made (a PartialState made here would fix the process setup before Accelerator reads it)
    precision = resolved_precision(cfg.mixed_precision)
    accelerator = Accelerator(mixed_precision=precision, gradient_accumulation_steps=cfg.grad_accum)
    if cfg.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        raise ConfigError("train.mixed_precision", "fp16 needs a GPU; use 'bf16' or 'fp32' on the CPU")
    world, rank, main = accelerator.num_processes, accelerator.process_index, accelerator.is_main_process
    if cfg.batch_size % (world * cfg.grad_accum):
        raise ConfigError("train.batch_size", f"{cfg.batch_size} does not split over {world} "
                          f"processes x {cfg.grad_accum} accumulation steps")
    micro = cfg.batch_size // (world * cfg.grad_accum)
    out, ckpt_dir = Path(cfg.out_dir), Path(cfg.out_dir) / "checkpoints"

    module = stage.module
    trained = [p for p in module.parameters() if p.requires_grad]  # frozen parts (a CLIP) excluded
    opt = torch.optim.AdamW(trained, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
                            weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg))
    ema = EMA(module, cfg.ema_decay)
    start, changes = 0, {}
    if has_checkpoints(ckpt_dir) and not resume:
        raise FileExistsError(f"{out} already holds checkpoints: pass --resume to continue that run, "
                              "or choose another train.out_dir")
    found = load_latest(ckpt_dir) if resume else None
    if found is not None:
        path, state = found
        changes = config_changes(json.loads(state.get("config") or "{}"), run_config or {}) if run_config else {}
        if changes and not allow_changes:
            listed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in list(changes.items())[:6])
            raise ConfigError("", f"--resume with settings other than the run's ({listed}); resume with the "
                              "run's settings, or pass --resume-with-changes to continue with these")
        try:
            module.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError) as e:
            raise ConfigError("", f"{path} does not fit this model ({str(e).splitlines()[0]})") from None
        sched.load_state_dict(state["scheduler"])
        ema.shadow = state["ema"]
        start = state["step"]
    if main:
        out.mkdir(parents=True, exist_ok=True)
        if run_config is not None:
            (out / "config.yaml").write_text(yaml.safe_dump(run_config, sort_keys=False))
        _truncate_log(out / "log.jsonl", start)
        _log(out, {"step": start, "run": {"processes": world, "micro_batch": micro,
                                          "device": str(accelerator.device), "resumed": start > 0}})
        if changes:
            _log(out, {"step": start, "config_changed": changes})

    model, opt = accelerator.prepare(module, opt)  # the LR schedule counts optimizer steps itself
    ema.to(accelerator.device)  # the average lives beside the weights (a GPU, when there is one)
    source = stage.source()
    if main and getattr(source, "skipped", 0):
        _log(out, {"step": start, "skipped_at_index": source.skipped})  # files without a caption
    loader = make_loader(source, micro, rank, world, start * cfg.grad_accum, stage.data_workers)
    batches = iter(loader)
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc=f"train {stage.name}",
               disable=not main, dynamic_ncols=True)
    tick, unreadable = time.perf_counter(), set()  # distinct files, however often they come round
    schedule = getattr(accelerator.unwrap_model(model), "set_step", None)  # objectives that follow the step
    for step in bar:
        torch.manual_seed(step_seed(cfg.seed, step, rank))
        model.train()
        if schedule is not None:
            schedule(step)
        losses = []
        for _ in range(cfg.grad_accum):
            batch = next(batches)
            if not batch["captions"]:
                raise ValueError(f"every image of a batch at step {step} was unreadable "
                                 f"(e.g. {batch['skipped'][0]}); check the data folder")
            unreadable.update(batch["skipped"])
            with accelerator.accumulate(model):
                loss = model(_to_device(batch, accelerator.device))
                accelerator.backward(loss)
                if accelerator.sync_gradients and cfg.grad_clip > 0:
                    accelerator.clip_grad_norm_(trained, cfg.grad_clip)
                opt.step()
                opt.zero_grad(set_to_none=True)
            losses.append(loss.detach().float())
        sched.step()
        ema.update(accelerator.unwrap_model(model), step)
        loss = accelerator.reduce(torch.stack(losses).mean(), "mean").item()
        if not math.isfinite(loss):
            raise FloatingPointError(f"loss became {loss} at step {step}; lower train.lr or check the data")
        done = step + 1
        rate = cfg.batch_size / (time.perf_counter() - tick)
        if main:
            record = {"step": done, "loss": loss, "lr": sched.get_last_lr()[0], "samples_per_s": rate}
            if unreadable:
                record["skipped"] = len(unreadable)
            _log(out, record)
            if done % cfg.log_every == 0 or done == cfg.steps:
                bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{rate:.0f}")
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            accelerator.wait_for_everyone()
            if main:
                state = {"step": done, "model": accelerator.unwrap_model(model).state_dict(),
                         "optimizer": opt.optimizer.state_dict(), "scheduler": sched.state_dict(),
                         "ema": ema.shadow, "config": json.dumps(run_config or {})}
                save_checkpoint(ckpt_dir, done, state, cfg.keep_checkpoints)
                plot_log(out)
        is_preview = cfg.sample_every and done % cfg.sample_every == 0 and done != cfg.steps
        if main and is_preview:
            _log(out, {"step": done, "preview": stage.preview(ema.copy_of(stage.module), out / "samples", done)})
        tick = time.perf_counter()  # throughput counts training alone, not previews or checkpoints
    bar.close()
    accelerator.wait_for_everyone()
    if main:
        final = ema.copy_of(stage.module)
        stage.export(final, out / "model")
        _log(out, {"step": cfg.steps, "preview": stage.preview(final, out / "samples", cfg.steps)})
        plot_log(out)
    accelerator.wait_for_everyone()  # every process tears the process group down together
    accelerator.end_training()
    AcceleratorState._reset_state()  # so a later train() in this process may pick another precision
    return out / "model"


def _log(out: Path, record: dict) -> None:
    with open(out / "log.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


def _truncate_log(path: Path, step: int) -> None:
    """On resume, drop log lines past the checkpoint so the log reads like one unbroken run."""
    if not path.exists():
        return
    lines = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= step]
    atomic_write(path, lambda tmp: tmp.write_text("".join(ln + "\n" for ln in lines)))


def read_log(out: Path) -> list[dict]:
    path = Path(out) / "log.jsonl"
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln] if path.exists() else []


def plot_log(out: Path) -> None:
    rows = [r for r in read_log(out) if "loss" in r]
    img = loss_curve([r["step"] for r in rows], [r["loss"] for r in rows], f"training loss: {out}")
    atomic_write(out / "loss.png", lambda tmp: img.save(tmp, format="PNG"))
