"""`compile="onnx"` / `--compile onnx`: ONNX Runtime draws the images eager float32 draws, exports
once per network with the batch dynamic, keeps them on disk under a key of the weights, and
exports again when the cached file is damaged or the weights changed."""

import numpy as np
import pytest
import torch

from unclip.pipelines.registry import load_pipeline
from unclip.runtime import onnx_runtime
from unclip.runtime.compiled import backend

from .test_generate import PROMPTS

pytestmark = [pytest.mark.slow,  # exports take tens of seconds on 2 cores
              pytest.mark.skipif(not onnx_runtime.available(), reason="the onnx extra is not installed")]


def draw(pipe, seeds=(5, 6)) -> np.ndarray:
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    return pipe([PROMPTS[i % 2] for i in range(len(seeds))], generator=gens, output_type="np").images


def exports(cache) -> dict[str, int]:
    names = [f.parent.name.rsplit("-", 1)[0] for f in cache.rglob("model.onnx")]
    return {n: names.count(n) for n in sorted(set(names))}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture
def in_cache(cache, monkeypatch):
    monkeypatch.setattr(onnx_runtime, "user_cache", lambda *parts: cache)
    return cache


def test_onnx_draws_the_eager_images_with_one_export_per_network(tiny_model, in_cache):
    eager = draw(load_pipeline(tiny_model))
    pipe = load_pipeline(tiny_model, compile="onnx")
    assert np.abs(draw(pipe) - eager).max() < 2e-3
    # reranking rounds, guidance and chunks call each network at several batches: one export each
    assert exports(in_cache) == {"decoder": 1, "prior": 1, "upsampler1": 1, "upsampler2": 1}
    assert np.abs(draw(pipe, seeds=(5, 6, 7))[:2] - eager).max() < 2e-3
    assert exports(in_cache) == {"decoder": 1, "prior": 1, "upsampler1": 1, "upsampler2": 1}


def test_cached_exports_are_reused_and_rebuilt_when_damaged_or_stale(tiny_model, in_cache, monkeypatch, tmp_path):
    eager = draw(load_pipeline(tiny_model))
    assert exports(in_cache)  # from the test above
    real_export = torch.onnx.export

    def refuse(*a, **k):
        raise AssertionError("exported again")

    monkeypatch.setattr(torch.onnx, "export", refuse)
    assert np.abs(draw(load_pipeline(tiny_model, compile="onnx")) - eager).max() < 2e-3  # all from the cache
    monkeypatch.setattr(torch.onnx, "export", real_export)
    for f in in_cache.rglob("model.onnx"):  # every cached file damaged: exported anew
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    assert np.abs(draw(load_pipeline(tiny_model, compile="onnx")) - eager).max() < 2e-3
    # other weights in the same architecture: a new export, not the stale one
    pipe = load_pipeline(tiny_model)
    with torch.no_grad():
        for p in pipe.decoder.unet.parameters():
            p.mul_(0.9)
    pipe.save_pretrained(tmp_path / "other")
    other = draw(load_pipeline(tmp_path / "other"))
    assert np.abs(draw(load_pipeline(tmp_path / "other", compile="onnx")) - other).max() < 2e-3
    assert exports(in_cache)["decoder"] == 2 and exports(in_cache)["upsampler1"] == 1


def test_onnx_steps_aside_for_gradients_and_other_dtypes(tiny_model, in_cache):
    pipe = load_pipeline(tiny_model, compile="onnx")
    x = torch.randn(2, 3, 8, 8)
    up = pipe.upsamplers[0].unet
    t = torch.tensor([1, 1])
    with torch.enable_grad():  # training through a pipeline's network: eager, with gradients
        out = up(torch.cat([x, x], 1), t).sample
        assert out.requires_grad
    up.to(torch.bfloat16)
    assert up(torch.cat([x, x], 1).bfloat16(), t).sample.dtype == torch.bfloat16


def test_onnx_is_asked_for_and_only_in_float32_on_a_cpu():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert backend("auto", cpu, torch.float32) is None  # 1.16-1.22x on whole calls after ~50 s of export: asked for
    assert backend("onnx", cpu, torch.float32) == "onnx"
    for device, dtype in ((cpu, torch.bfloat16), (gpu, torch.float32)):
        with pytest.raises(ValueError, match="runs float32 on the CPU"):
            backend("onnx", device, dtype)


def test_the_cli_runs_onnx_and_refuses_it_outside_float32_on_a_cpu(tiny_model, in_cache, tmp_path, capsys):
    from unclip.cli import main

    from .test_bad_inputs import S, fails

    base = ["generate", "a red circle", "--model", str(tiny_model), *S]
    assert main([*base, "--dtype", "float32", "--compile", "onnx", "--out", str(tmp_path / "a")]) == 0
    assert (tmp_path / "a" / "00000.png").is_file()
    fails([*base, "--dtype", "bfloat16", "--compile", "onnx", "--out", str(tmp_path / "b")], capsys,
          "runs float32 on the CPU")
