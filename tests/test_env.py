"""`unclip env`: a report to paste into a bug report, on any machine, downloading nothing."""

import pytest
import torch

from unclip.cli import main


def test_env_names_what_it_found(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("UNCLIP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    for what in ("unclip:", "Python:", "torch:", "diffusers:", "transformers:", "accelerate:", "peft:", "gradio:",
                 "CPU flags:", "--dtype auto on cpu:", "torch.compile on cpu:", "--compile auto on cpu", "inductor cache:",
                 "huggingface_hub cache:", "HF_HUB_OFFLINE:"):
        assert what in out, what
    assert torch.__version__ in out and str(tmp_path / "cache") in out
    assert "HF_HUB_OFFLINE:" in out and out.split("HF_HUB_OFFLINE:")[1].split()[0] == "1"
    if not torch.cuda.is_available():
        assert "GPU:" in out and "none" in out.split("GPU:")[1].splitlines()[0]


def test_env_reports_a_gpu_it_is_shown(capsys, monkeypatch):
    """On a machine with a GPU each one gets a row with its memory and what auto does there."""

    class Props:
        name, total_memory = "Fake GPU", 8 * 2**30

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: Props)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    assert "GPU cuda:0:" in out and "Fake GPU, 8.0 GiB" in out
    assert "--dtype auto on cuda:0:" in out and "bfloat16" in out.split("--dtype auto on cuda:0:")[1].splitlines()[0]
    line = next(ln for ln in out.splitlines() if "--compile auto on cuda:0, 2 images" in ln)
    assert "eager" in line
    assert "torch.compile on cuda:0:" in out  # whether Triton and a C compiler are there


@pytest.mark.parametrize("missing", ["gradio"])
def test_a_missing_package_is_said_not_fatal(capsys, monkeypatch, missing):
    from importlib import metadata

    real = metadata.version

    def version(name):
        if name == missing:
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(metadata, "version", version)
    assert main(["env"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if f"{missing}:" in ln)
    assert "not installed" in line
