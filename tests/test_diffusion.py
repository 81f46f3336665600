"""The shared diffusion pieces: guidance, condition dropout, objective, samplers."""

import pytest
import torch

from unclip.diffusion.guidance import cfg, composed, drop_cond
from unclip.diffusion.objectives import q_sample, training_loss
from unclip.diffusion.sampling import sample
from unclip.diffusion.schedules import make_scheduler


def test_drop_cond_rate_and_contents():
    g = torch.Generator().manual_seed(0)
    cond = {"a": torch.randn(20000, 3), "b": torch.randn(20000, 2, 2), "keep": torch.randn(20000, 1)}
    null = {"a": torch.full((1, 3), 7.0), "b": torch.full((1, 2, 2), -7.0)}
    out, dropped = drop_cond(cond, null, 0.1, g)
    assert dropped.float().mean().item() == pytest.approx(0.1, abs=0.01)
    assert torch.equal(out["a"][dropped], null["a"].expand(int(dropped.sum()), 3))
    assert torch.equal(out["b"][dropped], null["b"].expand(int(dropped.sum()), 2, 2))
    assert torch.equal(out["a"][~dropped], cond["a"][~dropped])
    assert torch.equal(out["keep"], cond["keep"])  # keys outside `null` are never dropped


def test_cfg_is_one_batched_pass_with_the_guidance_formula():
    calls = []

    def denoise(x, t, c):
        calls.append(len(x))
        return x * 2 + c["e"] + t[:, None].float()

    x, t = torch.randn(3, 4), torch.tensor([5, 5, 5])
    cond, null = {"e": torch.randn(3, 4), "shared": torch.randn(3, 1)}, {"e": torch.randn(1, 4)}
    guided = cfg(denoise, cond, null, scale=4.0)(x, t)
    assert calls == [6]
    c, u = denoise(x, t, cond), denoise(x, t, {**cond, "e": null["e"].expand(3, 4)})
    assert torch.allclose(guided, u + 4.0 * (c - u))
    calls.clear()
    assert torch.allclose(cfg(denoise, cond, null, scale=1.0)(x, t), c) and calls == [3]


def test_composed_guidance_sums_each_conditions_term_in_one_pass():
    calls = []

    def denoise(x, t, c):
        calls.append(len(x))
        return x * 2 + c["e"] * c["f"]

    x, t = torch.randn(2, 4), torch.tensor([3, 3])
    a, b = ({"e": torch.randn(2, 4), "f": torch.randn(2, 1)} for _ in range(2))
    null = {"e": torch.randn(1, 4)}
    out = composed(denoise, [a, b], null, [3.0, 0.5])(x, t)
    assert calls == [6]
    u = denoise(x, t, {"e": null["e"].expand(2, 4), "f": a["f"]})  # keys outside null: the first condition's
    assert torch.allclose(out, u + 3.0 * (denoise(x, t, a) - u) + 0.5 * (denoise(x, t, b) - u))
    assert torch.allclose(composed(denoise, [a], null, [4.0])(x, t), cfg(denoise, a, null, 4.0)(x, t))


def test_q_sample_and_objective_targets():
    sched = make_scheduler("ddpm", num_train_timesteps=100)
    abar = sched.alphas_cumprod
    x0, noise = torch.randn(4, 3), torch.randn(4, 3)
    t = torch.tensor([0, 10, 50, 99])
    x_t = q_sample(x0, t, noise, abar)
    expect = abar[t].sqrt()[:, None] * x0 + (1 - abar[t]).sqrt()[:, None] * noise
    assert torch.allclose(x_t, expect.float(), atol=1e-6)
    x0 = torch.ones(8, 3)  # "sample" regresses x0: predicting the constant x0 costs nothing
    assert training_loss(lambda x, t: torch.ones_like(x), x0, abar, prediction_type="sample") == 0
    with pytest.raises(ValueError, match="prediction_type"):
        training_loss(lambda x, t: x, x0, abar, prediction_type="nope")


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_min_snr_weighting_is_min_snr_gamma_in_x0_terms(prediction_type):
    abar = make_scheduler("ddim", num_train_timesteps=1000).alphas_cumprod
    x0, seen = torch.randn(64, 3, 4, 4), {}

    def denoise(x_t, t):  # predicts 0; remember the inputs to rebuild the x0 error
        seen.update(x_t=x_t, t=t)
        return torch.zeros_like(x_t)

    loss = training_loss(denoise, x0, abar, prediction_type=prediction_type, snr_gamma=5.0,
                         generator=torch.Generator().manual_seed(0))
    a = abar[seen["t"]].float().view(-1, 1, 1, 1)
    if prediction_type == "epsilon":  # x0_hat = (x_t - sqrt(1 - a) * 0) / sqrt(a)
        x0_hat = seen["x_t"] / a.sqrt()
    else:  # x0_hat = sqrt(a) x_t - sqrt(1 - a) * 0
        x0_hat = a.sqrt() * seen["x_t"]
    snr = (a / (1 - a)).flatten()
    expect = (snr.clamp(max=5.0) * ((x0_hat - x0) ** 2).flatten(1).mean(1)).mean()
    assert loss.item() == pytest.approx(expect.item(), rel=1e-4)
    plain = training_loss(denoise, x0, abar, prediction_type=prediction_type,
                          generator=torch.Generator().manual_seed(0))
    assert plain.item() != pytest.approx(loss.item(), rel=1e-2)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm++", "unipc"])
def test_samplers_are_deterministic_and_finite(sampler):
    sched = make_scheduler(sampler, num_train_timesteps=1000, prediction_type="epsilon")

    def denoise(x, t):
        assert t.shape == (len(x),)
        return 0.1 * x

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        return sample(denoise, torch.randn(2, 5, generator=g), sched, steps=10, eta=1.0, generator=g)

    seen = []
    out = sample(denoise, torch.randn(2, 5), sched, steps=10, callback=lambda d: seen.append(d["i"]))
    assert seen == list(range(10)) and torch.isfinite(out).all()
    assert torch.equal(run(0), run(0)) and not torch.equal(run(0), run(1))


def test_bad_scheduler_names_are_clear_errors():
    with pytest.raises(ValueError, match="samplers are"):
        make_scheduler("euler")
    with pytest.raises(ValueError, match="schedules are"):
        make_scheduler("ddpm", schedule="sigmoid")
