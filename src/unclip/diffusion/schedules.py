"""Noise schedules and samplers, from diffusers' schedulers."""

from __future__ import annotations

from typing import Literal

from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    UniPCMultistepScheduler,
)

from unclip.validate import SAMPLERS

Sampler = Literal[SAMPLERS]
BETA_SCHEDULES = {"cosine": "squaredcos_cap_v2", "linear": "linear"}


def make_scheduler(sampler: str = "ddpm", *, num_train_timesteps: int = 1000, schedule: str = "cosine",
                   prediction_type: str = "epsilon", clip_sample_range: float | None = None,
                   variance_type: str = "fixed_small_log"):
    """A diffusers scheduler over the same training betas for any sampler.

    sampler: DDPM (ancestral), DDIM (eta from the caller), DPM-Solver++ 2M or UniPC (both
    multistep solvers, good in few steps).
    prediction_type: "epsilon" (noise), "sample" (x0, the unCLIP prior) or "v_prediction".
    clip_sample_range: clamp predicted x0 to +-range at each step (None: no clamping; DDPM and
    DDIM only, the solvers have no such option).
    Respaced sampling ("trailing" timesteps, so the last step starts from pure noise) comes
    from `set_timesteps(steps)`."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; samplers are {SAMPLERS}")
    if schedule not in BETA_SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; schedules are {list(BETA_SCHEDULES)}")
    common = dict(num_train_timesteps=num_train_timesteps, beta_schedule=BETA_SCHEDULES[schedule],
                  prediction_type=prediction_type, timestep_spacing="trailing")
    clip = dict(clip_sample=clip_sample_range is not None, clip_sample_range=clip_sample_range or 1.0)
    if sampler == "ddpm":
        return DDPMScheduler(**common, **clip, variance_type=variance_type)
    if sampler == "ddim":
        return DDIMScheduler(**common, **clip, set_alpha_to_one=False)
    if sampler == "unipc":
        return UniPCMultistepScheduler(**common, solver_order=2, lower_order_final=True)
    return DPMSolverMultistepScheduler(
        **common, algorithm_type="dpmsolver++", solver_order=2, thresholding=False,
        lower_order_final=True,
    )


class Sampled:
    """A stage whose scheduler follows `cfg.sampler`; it gives the rest by `scheduler_args()`."""

    def make_scheduler(self, sampler: str | None = None):
        """A scheduler for `sampler` (None: the stage's own) over the stage's noise schedule."""
        return make_scheduler(sampler or self.cfg.sampler, **self.scheduler_args())

    def scheduler_for(self, sampler: str | None):
        return self.scheduler if sampler in (None, self.cfg.sampler) else self.make_scheduler(sampler)
