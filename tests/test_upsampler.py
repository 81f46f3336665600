"""Upsamplers and their corruptions."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from unclip.data.degrade import bsr, gaussian_blur, gaussian_kernel
from unclip.models.upsampler import Upsampler, UpsamplerConfig, random_crops, upsample
from unclip.tasks.evaluate.image_metrics import psnr


def tiny_upsampler(**kw):
    torch.manual_seed(0)
    kw = {"block_out_channels": (32, 32), "layers_per_block": 1, "timesteps": 100, "sample_steps": 3, **kw}
    return Upsampler.from_config(UpsamplerConfig(**kw))


def test_gaussian_blur_is_the_papers_kernel_and_keeps_flat_images():
    k = gaussian_kernel(3, 0.6)
    assert k.shape == (3, 3) and k.sum().item() == pytest.approx(1.0)
    assert k[1, 1] > k[0, 1] > k[0, 0]
    flat = torch.full((1, 3, 8, 8), 0.3)
    assert torch.allclose(gaussian_blur(flat), flat, atol=1e-6)
    edge = torch.zeros(1, 3, 8, 8)
    edge[..., 4:] = 1
    assert 0 < gaussian_blur(edge)[0, 0, 0, 3] < 1  # edges soften


def test_bsr_is_reproducible_and_corrupts():
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    a, b = bsr(x, np.random.default_rng(1)), bsr(x, np.random.default_rng(1))
    assert a.shape == x.shape and torch.equal(a, b) and a.abs().max() <= 1
    assert not torch.equal(a, bsr(x, np.random.default_rng(2)))
    assert (a - x).abs().mean() > 0.01


def test_crops_take_the_same_window_of_target_and_condition():
    high = torch.arange(2 * 3 * 16 * 16, dtype=torch.float32).view(2, 3, 16, 16)
    a, b = random_crops([high, high.clone()], 4, torch.Generator().manual_seed(0))
    assert a.shape == (2, 3, 4, 4) and torch.equal(a, b)


def test_fully_convolutional_sampling_at_any_size_and_seeded():
    up = tiny_upsampler().eval()
    low = torch.rand(2, 3, 12, 12) * 2 - 1
    out = up.sample(low, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 3, 24, 24) and out.dtype == torch.float32 and out.abs().max() <= 1
    assert torch.equal(out, up.sample(low, generator=torch.Generator().manual_seed(0)))
    assert up.sample(torch.zeros(1, 3, 20, 20)).shape == (1, 3, 40, 40)
    for module in up.unet.modules():  # no attention anywhere
        assert "Attention" not in type(module).__name__


def test_the_low_resolution_input_changes_the_output():
    up = tiny_upsampler().eval()
    for p in up.parameters():
        torch.nn.init.normal_(p, std=0.05) if p.dim() > 1 else None
    a = up.sample(torch.zeros(1, 3, 8, 8), generator=torch.Generator().manual_seed(0))
    b = up.sample(torch.ones(1, 3, 8, 8) * 0.5, generator=torch.Generator().manual_seed(0))
    assert (a - b).abs().max() > 1e-3


def test_clean_prob_leaves_that_share_of_training_inputs_uncorrupted():
    low = torch.rand(64, 3, 8, 8) * 2 - 1
    for prob, clean in ((0.0, 0), (1.0, 64)):
        out = tiny_upsampler(degradation="bsr", clean_prob=prob).degrade(low, np.random.default_rng(0))
        assert sum(torch.equal(a, b) for a, b in zip(out, low)) == clean
    out = tiny_upsampler(degradation="bsr", clean_prob=0.5).degrade(low, np.random.default_rng(0))
    assert 16 < sum(torch.equal(a, b) for a, b in zip(out, low)) < 48


def test_the_residual_is_scaled_and_old_folders_keep_their_scale(tiny_model, tmp_path):
    """The diffusion runs on (target - bicubic) / residual_scale; a folder written before the
    setting existed was trained unscaled and must load with scale 1."""
    import json
    import shutil

    from unclip.pipelines.dalle2.pipeline import DalleTwoPipeline

    up = tiny_upsampler(residual_scale=0.5).eval()
    low = torch.rand(1, 3, 8, 8) * 0.4 - 0.2
    cond = upsample(low, 2)
    a = up.sample(low, generator=torch.Generator().manual_seed(0))
    up.cfg.residual_scale = 0.25  # the same sampled residual, half as large in pixels
    b = up.sample(low, generator=torch.Generator().manual_seed(0))
    inside = (a.abs() < 1) & (b.abs() < 1)  # not clamped
    assert inside.float().mean() > 0.5
    assert torch.allclose((b - cond)[inside], (a - cond)[inside] / 2, atol=1e-4)

    old = tmp_path / "old"
    shutil.copytree(tiny_model, old)
    settings = json.loads((old / "unclip.json").read_text())
    for raw in settings["upsamplers"]:
        assert raw.pop("residual_scale") == UpsamplerConfig().residual_scale
    (old / "unclip.json").write_text(json.dumps(settings))
    assert [u.cfg.residual_scale for u in DalleTwoPipeline.from_pretrained(old).upsamplers] == [1.0, 1.0]


def test_training_on_crops_lowers_the_loss():
    up = tiny_upsampler(crop_fraction=0.5)
    high = torch.tanh(torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(0)))
    low = F.interpolate(high, scale_factor=0.5, mode="area")
    opt = torch.optim.Adam(up.parameters(), lr=3e-3)

    def mean_loss():
        g = torch.Generator().manual_seed(7)
        with torch.no_grad():
            return sum(up.loss(high, low, g).item() for _ in range(4)) / 4

    before = mean_loss()
    for _ in range(60):
        loss = up.loss(high, low)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert mean_loss() < 0.8 * before


@pytest.mark.slow
def test_upsampling_a_real_photograph_reports_psnr_against_bicubic(capsys):
    """A real photograph, downsized 2x and upsampled by an upsampler trained briefly on crops of
    another photograph. The figures are printed (pytest -s): a diffusion upsampler this small and
    this briefly trained does not beat bicubic (benchmarks/upsamplers.py measures trained ones),
    but training must bring it close: an untrained residual upsampler is bicubic plus noise
    (measured 21.2 dB untrained, 22.1 trained, bicubic 22.4)."""
    skimage_data = pytest.importorskip("skimage.data")
    photo = torch.from_numpy(skimage_data.astronaut()).permute(2, 0, 1)[None].float() / 127.5 - 1
    truth = F.interpolate(photo, size=64, mode="area")
    low = F.interpolate(truth, size=32, mode="area")
    up = tiny_upsampler(crop_fraction=0.5, timesteps=1000, sample_steps=4)
    untrained = psnr(up.eval().sample(low, generator=torch.Generator().manual_seed(0)), truth)
    up.train()
    train = F.interpolate(torch.from_numpy(skimage_data.chelsea()).permute(2, 0, 1)[None].float() / 127.5 - 1,
                          size=(64, 86), mode="area")[..., :64]
    opt = torch.optim.Adam(up.parameters(), lr=2e-3)
    for _ in range(150):
        batch = train.expand(16, -1, -1, -1)
        loss = up.loss(batch, gaussian_blur(F.interpolate(batch, scale_factor=0.5, mode="area")))
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = up.eval().sample(low, generator=torch.Generator().manual_seed(0))
    ours, bicubic = psnr(out, truth), psnr(upsample(low, 2), truth)
    flat = psnr(truth.mean((2, 3), keepdim=True).expand_as(truth), truth)
    print(f"real photo 32 -> 64 px: upsampler {ours:.2f} dB (untrained {untrained:.2f}), bicubic {bicubic:.2f} dB, "
          f"flat {flat:.2f} dB")
    assert ours > untrained + 0.4 and ours > bicubic - 1  # measured: +0.8 over untrained, -0.3 from bicubic


MARGINS_DB = (3.0, 3.0)  # the issue-17 target; measured on 64 scenes at the default 2 steps: +7.0 and +4.5 dB (benchmarks/upsamplers.py)


@pytest.mark.shipped
def test_the_shipped_upsamplers_beat_bicubic_on_clean_renders():
    """Issue 17: given the true low-resolution render of held-out eval scenes, each shipped
    upsampler reconstructs the true render better than bicubic does."""
    from unclip.data import shapes
    from unclip.data.transforms import to_tensor
    from unclip.pipelines.dalle2.pipeline import DalleTwoPipeline

    pipe = DalleTwoPipeline.from_pretrained(None)
    items = shapes.eval_split(6)
    size = pipe.decoder.cfg.image_size
    for up, margin in zip(pipe.upsamplers, MARGINS_DB):
        size *= up.cfg.factor
        truth = to_tensor(np.stack([shapes.render(it.scene, size) for it in items]))
        low = F.interpolate(truth, scale_factor=1 / up.cfg.factor, mode="area")
        out = up.sample(low, generator=torch.Generator().manual_seed(0))
        assert psnr(out, truth) > psnr(upsample(low, up.cfg.factor), truth) + margin
