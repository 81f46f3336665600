"""Offloading (enable_model_cpu_offload / enable_sequential_cpu_offload, --offload) and sliced or
tiled latent decoding, on tiny random folders. Without an accelerator the hooks are attached with
the CPU as their execution device: the same arithmetic, so the same images, with hooks that move
weights exactly as they would to a GPU."""

import numpy as np
import pytest
import torch

from unclip.cli import main
from unclip.runtime import offload

from .test_kandinsky import kandinsky  # noqa: F401  (the tiny Kandinsky folders)

SMALL = dict(height=32, width=32, num_inference_steps=2, prior_num_inference_steps=2)


@pytest.fixture(scope="module")
def pipe(kandinsky):  # noqa: F811
    from unclip.pipelines.registry import load_pipeline

    decoder, prior, _ = kandinsky
    return load_pipeline(decoder, prior_model=prior, torch_dtype=torch.float32)  # exact comparisons: float32


def draw(pipe, **kw):
    out = pipe("a red horse", generator=torch.Generator().manual_seed(0), output_type="np", **{**SMALL, **kw})
    return np.asarray(out.images, dtype=np.float64)


def hooked(pipe) -> list[str]:
    return [name for name, net in pipe.networks() if any(hasattr(m, "_hf_hook") for m in net.modules())]


@pytest.mark.parametrize("mode", offload.MODES)
def test_offloaded_images_equal_and_hooks_removed(pipe, mode):
    plain = draw(pipe)
    state = offload.attach(pipe, mode, torch.device("cpu"))
    try:
        assert pipe.device == torch.device("cpu") and state.mode == mode
        names = hooked(pipe)
        if mode == "sequential":  # the prior reads its statistics outside forward: kept whole
            assert "prior" not in names and "unet" in names
        else:
            assert sorted(names) == sorted(n for n, _ in pipe.networks())
        np.testing.assert_array_equal(draw(pipe), plain)
    finally:
        pipe.remove_all_hooks()
    assert hooked(pipe) == [] and pipe._offload is None
    assert all(p.device.type == "cpu" for _, net in pipe.networks() for p in net.parameters())
    np.testing.assert_array_equal(draw(pipe), plain)


def test_model_offload_keeps_one_network_at_a_time(pipe):
    """Each network computes as the one network the hooks hold on the accelerator (the one before it
    parked back in CPU memory)."""
    state = offload.attach(pipe, "model", torch.device("cpu"))
    seen = []
    try:
        for name, net in pipe.networks():
            net.register_forward_hook(lambda m, a, o, name=name: seen.append((name, state.current is m)))
        draw(pipe)
    finally:
        pipe.remove_all_hooks()
        for _, net in pipe.networks():
            net._forward_hooks.clear()
    assert seen and all(ok for _, ok in seen)
    assert {"text_encoder", "prior", "unet"} <= {n for n, _ in seen}


def test_offload_without_an_accelerator_is_a_clear_error(pipe, tmp_path, kandinsky, capsys):  # noqa: F811
    if torch.cuda.is_available():
        pytest.skip("this machine has an accelerator")
    with pytest.raises(ValueError, match="accelerator"):
        pipe.enable_model_cpu_offload()
    with pytest.raises(ValueError, match="accelerator"):
        pipe.enable_sequential_cpu_offload()
    decoder, prior, _ = kandinsky
    for mode in offload.MODES:
        code = main(["generate", "a red horse", "--model", str(decoder), "--prior-model", str(prior),
                     "--offload", mode, "--out", str(tmp_path / mode)])
        err = capsys.readouterr().err
        assert code == 2 and "accelerator" in err and "Traceback" not in err
        assert not (tmp_path / mode).exists()


def test_to_device_refused_while_offloaded(pipe):
    offload.attach(pipe, "model", torch.device("cpu"))
    try:
        with pytest.raises(ValueError, match="remove_all_hooks"):
            pipe.to("cpu")
    finally:
        pipe.remove_all_hooks()


def test_vae_slicing_gives_the_same_images(pipe):
    plain = draw(pipe, num_images_per_prompt=2)
    pipe.enable_vae_slicing()
    try:
        np.testing.assert_allclose(draw(pipe, num_images_per_prompt=2), plain, atol=1e-5)
    finally:
        pipe.disable_vae_slicing()


@torch.no_grad()
def test_vae_tiling_has_no_visible_seams(pipe):
    """A 128 px image (64 latents) decoded in 32-latent tiles differs from the whole decode by a mean of
    at most 2/255, and the tiles really ran (the MoVQ saw tile-sized inputs)."""
    from unclip.runtime.latent_decoding import decode

    g = torch.Generator().manual_seed(1)
    latents = torch.randn(1, 4, 64, 64, generator=g) * 0.5
    sizes = []

    def one(z):
        sizes.append(tuple(z.shape[-2:]))
        return pipe.movq.decode(z, force_not_quantize=True).sample.float()

    whole = one(latents).clamp(-1, 1)
    pipe.enable_vae_tiling()
    try:
        tiled = decode(pipe.movq, latents, one, pipe.movq_factor, tile=32).clamp(-1, 1)
    finally:
        pipe.disable_vae_tiling()
    assert tiled.shape == whole.shape and (32, 32) in sizes
    mean = float((tiled - whole).abs().mean() * 127.5)
    assert mean <= 2.0, mean


def test_pixel_models_have_no_latent_decoder():
    from unclip.pipelines.registry import load_pipeline

    pipe = load_pipeline(None)
    assert pipe.latent_decoder is None
    with pytest.raises(ValueError, match="no latent decoder"):
        pipe.enable_vae_tiling()


@pytest.mark.parametrize("command", ["generate", "invert", "vary", "interpolate", "edit", "inpaint", "probe", "eval",
                                     "demo", "serve"])
def test_every_sampling_command_takes_offload(command):
    from unclip.cli import build_parser

    parser, _ = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    option = next(a for a in sub._actions if "--offload" in a.option_strings)
    assert tuple(option.choices) == offload.MODES


def test_serve_with_offload_and_no_accelerator_refuses_before_serving(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has an accelerator")
    pytest.importorskip("gradio")
    assert main(["serve", "--offload", "model", "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert "accelerator" in err and "Traceback" not in err


def test_reduced_precision_decodes_channels_last_on_the_cpu_only():
    """Below float32 on the CPU the latent decoders take channels-last latents (faster there);
    float32 keeps diffusers' layout, so its images stay exactly diffusers'."""
    from unclip.runtime.latent_decoding import fast_layout

    z = torch.randn(2, 4, 8, 8)
    fast = fast_layout(z, torch.bfloat16)
    assert fast.dtype == torch.bfloat16 and fast.is_contiguous(memory_format=torch.channels_last)
    assert not fast.is_contiguous() and torch.equal(fast.float(), z.to(torch.bfloat16).float())
    same = fast_layout(z, torch.float32)
    assert same.is_contiguous() and torch.equal(same, z)
