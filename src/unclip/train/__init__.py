"""Training: one loop (loop.py) and one module per stage."""

from __future__ import annotations

STAGES = ("clip", "prior", "prior_ar", "prior_eclipse", "decoder", "upsampler", "dvae", "dalle")


def stage_classes(name: str, kind: str | None = None):
    """(config class, stage class) for a stage name; imported lazily to keep --help fast.
    `kind`: what the config file says it trains ("karlo": fine-tune a Karlo folder's prior or
    decoder); None: unclip's own stage."""
    if kind == "karlo":
        from unclip.train.karlo import KarloDecoderStage, KarloFinetuneConfig, KarloPriorStage

        if name not in ("decoder", "prior"):
            raise ValueError(f"a Karlo config fine-tunes the decoder or the prior, not {name!r}")
        return KarloFinetuneConfig, KarloDecoderStage if name == "decoder" else KarloPriorStage
    if kind == "kandinsky":
        from unclip.train.kandinsky import (
            KandinskyDecoderStage,
            KandinskyFinetuneConfig,
            KandinskyPriorStage,
        )

        if name not in ("decoder", "prior"):
            raise ValueError(f"a Kandinsky config fine-tunes the decoder or the prior, not {name!r}")
        return KandinskyFinetuneConfig, KandinskyDecoderStage if name == "decoder" else KandinskyPriorStage
    if kind is not None:
        raise ValueError(f"unknown config kind {kind!r}; 'karlo' fine-tunes a Karlo folder, 'kandinsky' "
                         "Kandinsky 2.2 folders")
    if name == "clip":
        from unclip.train.clip import ClipStage, ClipStageConfig

        return ClipStageConfig, ClipStage
    if name == "prior":
        from unclip.train.prior import PriorStage, PriorStageConfig

        return PriorStageConfig, PriorStage
    if name == "prior_ar":
        from unclip.train.prior import ARPriorStage, ARPriorStageConfig

        return ARPriorStageConfig, ARPriorStage
    if name == "prior_eclipse":
        from unclip.train.prior import EclipsePriorStage, EclipsePriorStageConfig

        return EclipsePriorStageConfig, EclipsePriorStage
    if name == "decoder":
        from unclip.train.decoder import DecoderStage, DecoderStageConfig

        return DecoderStageConfig, DecoderStage
    if name == "upsampler":
        from unclip.train.upsampler import UpsamplerStage, UpsamplerStageConfig

        return UpsamplerStageConfig, UpsamplerStage
    if name == "dvae":
        from unclip.train.dalle1 import DVAEStage, DVAEStageConfig

        return DVAEStageConfig, DVAEStage
    if name == "dalle":
        from unclip.train.dalle1 import DalleStage, DalleStageConfig

        return DalleStageConfig, DalleStage
    raise ValueError(f"unknown stage {name!r}; stages are {STAGES}")
