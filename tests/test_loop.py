"""The shared training loop, exercised with the tiny CLIP stage."""

import json

import pytest
import torch
from PIL import Image

from unclip.config import to_dict
from unclip.train.clip import ClipStage
from unclip.train.loop import EMA, lr_factor, read_log, train

from .conftest import TINY, Interrupt, die_during_step


def losses(out):
    return {r["step"]: r["loss"] for r in read_log(out) if "loss" in r}


def test_resume_repeats_an_unbroken_run_exactly(tiny_clip_cfg, tmp_path):
    full_cfg = tiny_clip_cfg(f"train.out_dir={tmp_path / 'full'}")
    train(ClipStage(full_cfg), full_cfg.train)

    cfg = tiny_clip_cfg(f"train.out_dir={tmp_path / 'cut'}")
    stage = ClipStage(cfg)
    die_during_step(stage, 5)  # after the checkpoint at step 3
    with pytest.raises(Interrupt):
        train(stage, cfg.train)
    assert sorted((tmp_path / "cut" / "checkpoints").glob("step_*.pt"))[-1].name == "step_00000003.pt"
    with pytest.raises(FileExistsError, match="--resume"):
        train(ClipStage(cfg), cfg.train)
    train(ClipStage(cfg), cfg.train, resume=True)

    full, cut = losses(tmp_path / "full"), losses(tmp_path / "cut")
    assert list(cut) == list(range(1, 7))  # the log reads like one run: no repeated steps
    for step in full:
        assert cut[step] == full[step], step
    a = torch.load(tmp_path / "full/checkpoints/step_00000006.pt", weights_only=True)
    b = torch.load(tmp_path / "cut/checkpoints/step_00000006.pt", weights_only=True)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for k in a["ema"]:
        assert torch.equal(a["ema"][k], b["ema"][k]), k


def test_training_lowers_the_loss_and_writes_its_artefacts(tiny_clip_cfg, tmp_path):
    cfg = tiny_clip_cfg("train.steps=60", "train.batch_size=16", "train.lr=3e-3", "train.warmup_steps=5",
                        "train.checkpoint_every=20", "train.keep_checkpoints=2", "train.sample_every=30")
    train(ClipStage(cfg), cfg.train)
    out = tmp_path / "run"
    curve = list(losses(out).values())
    assert sum(curve[-10:]) / 10 < 0.8 * sum(curve[:10]) / 10
    assert Image.open(out / "loss.png").size[0] > 100
    assert [p.name for p in sorted((out / "checkpoints").glob("step_*.pt"))] == [
        "step_00000040.pt", "step_00000060.pt"]
    assert not list(out.rglob("*.tmp*"))  # atomic writes leave no partial files
    previews = [r for r in read_log(out) if "preview" in r]
    assert [r["step"] for r in previews] == [30, 60]
    assert 0 <= previews[-1]["preview"]["retrieval_top1"] <= 1
    assert json.loads((out / "model" / "config.json").read_text())["model_type"] == "clip"


def test_gradient_accumulation_matches_one_big_batch(tiny_clip_cfg, tmp_path):
    """Same global batch, same samples: the first step's loss is the mean over micro-batches."""
    a = tiny_clip_cfg(f"train.out_dir={tmp_path / 'a'}", "train.steps=1")
    b = tiny_clip_cfg(f"train.out_dir={tmp_path / 'b'}", "train.steps=1", "train.grad_accum=2")
    train(ClipStage(a), a.train)
    train(ClipStage(b), b.train)
    # contrastive loss is not additive over micro-batches, so only check both ran on the data
    assert losses(tmp_path / "a")[1] > 0 and losses(tmp_path / "b")[1] > 0


def test_lr_schedule_warms_up_then_decays():
    from unclip.config import TrainConfig

    cfg = TrainConfig(steps=100, warmup_steps=10)
    f = [lr_factor(s, cfg) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(x >= y for x, y in zip(f[10:], f[11:])) and f[-1] == pytest.approx(0.1, abs=0.01)


def test_ema_tracks_the_weights():
    m = torch.nn.Linear(2, 2)
    ema = EMA(m, decay=0.5)
    with torch.no_grad():
        m.weight.fill_(1.0)
    for step in range(1000, 1020):
        ema.update(m, step)
    assert torch.allclose(ema.copy_of(m).weight, torch.ones(2, 2), atol=1e-4)


def cut_run(tiny_clip_cfg, tmp_path, name, die_at=5, *overrides):
    """A tiny CLIP run killed during step `die_at` (checkpoints every 3 steps)."""
    cfg = tiny_clip_cfg(f"train.out_dir={tmp_path / name}", *overrides)
    stage = ClipStage(cfg)
    die_during_step(stage, die_at)
    with pytest.raises(Interrupt):
        train(stage, cfg.train, run_config=to_dict(cfg))
    return cfg


def test_checkpoints_carry_checksums_and_a_damaged_latest_falls_back(tiny_clip_cfg, tmp_path, caplog):
    cfg = cut_run(tiny_clip_cfg, tmp_path, "cut", 8, "train.steps=9")  # checkpoints at 3 and 6
    ckpts = tmp_path / "cut" / "checkpoints"
    assert (ckpts / "step_00000006.pt.sha256").is_file()
    (ckpts / ".step_00000009.pt.tmp123").write_bytes(b"half a checkpoint")  # a kill during a write
    latest = ckpts / "step_00000006.pt"
    latest.write_bytes(latest.read_bytes()[:1000])  # truncated
    with caplog.at_level("WARNING"):
        train(ClipStage(cfg), cfg.train, resume=True, run_config=to_dict(cfg))
    assert "step_00000006.pt" in caplog.text and "checksum" in caplog.text
    assert not list(ckpts.glob(".*.tmp*"))
    assert [r["step"] for r in read_log(tmp_path / "cut") if r.get("run")][-1] == 3  # resumed from 3


def test_resume_refuses_changed_settings_unless_asked(tiny_clip_cfg, tmp_path):
    cfg = cut_run(tiny_clip_cfg, tmp_path, "cut")
    changed = tiny_clip_cfg(f"train.out_dir={tmp_path / 'cut'}", "train.lr=5e-4")
    with pytest.raises(ValueError, match=r"train.lr: 0.001 -> 0.0005.*--resume-with-changes"):
        train(ClipStage(changed), changed.train, resume=True, run_config=to_dict(changed))
    train(ClipStage(changed), changed.train, resume=True, run_config=to_dict(changed), allow_changes=True)
    logged = [r["config_changed"] for r in read_log(tmp_path / "cut") if "config_changed" in r]
    assert logged == [{"train.lr": [0.001, 0.0005]}]
    assert cfg.train.lr == 0.001


def test_a_fresh_run_refuses_a_folder_a_run_left(tiny_clip_cfg, tmp_path, capsys):
    from unclip.cli import main

    cut_run(tiny_clip_cfg, tmp_path, "cut", die_at=2)  # killed before its first checkpoint
    assert (tmp_path / "cut" / "tokenizer").is_dir()
    args = ["train", "clip", "--config", str(TINY / "clip.yaml"), f"--train.out_dir={tmp_path / 'cut'}"]
    assert main(args) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(args + ["--train.lr=.inf"]) == 2
    assert "lr" in capsys.readouterr().err


def test_the_average_leaves_frozen_weights_out():
    """A fine-tuned family's frozen towers (billions of weights) get no float32 shadow."""
    from torch import nn

    from unclip.train.loop import EMA

    net = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    net[0].requires_grad_(False)
    ema = EMA(net, 0.9)
    assert sorted(ema.shadow) == ["1.bias", "1.weight"]
    with torch.no_grad():
        net[1].weight.add_(1.0)
    ema.update(net, step=0)
    copy = ema.copy_of(net)
    assert torch.equal(copy[0].weight, net[0].weight)  # the frozen layer as it is


def test_lora_loads_the_frozen_networks_in_bf16_under_bf16_mixed_precision():
    from unclip.train.finetune import LoraSettings, frozen_dtype

    assert frozen_dtype(LoraSettings(rank=4), "bf16") == torch.bfloat16
    assert frozen_dtype(LoraSettings(rank=4), "fp32") == torch.float32
    assert frozen_dtype(LoraSettings(rank=0), "bf16") == torch.float32  # full fine-tuning trains them all
