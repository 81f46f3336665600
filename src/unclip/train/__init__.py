"""Training: one loop (loop.py) and one module per stage."""

from __future__ import annotations

STAGES = ("clip", "prior", "prior_ar", "decoder", "upsampler", "dvae", "dalle")


def stage_classes(name: str):
    """(config class, stage class) for a stage name; imported lazily to keep --help fast."""
    if name == "clip":
        from .clip import ClipStage, ClipStageConfig

        return ClipStageConfig, ClipStage
    if name == "prior":
        from .prior import PriorStage, PriorStageConfig

        return PriorStageConfig, PriorStage
    if name == "prior_ar":
        from .prior import ARPriorStage, ARPriorStageConfig

        return ARPriorStageConfig, ARPriorStage
    if name == "decoder":
        from .decoder import DecoderStage, DecoderStageConfig

        return DecoderStageConfig, DecoderStage
    if name == "upsampler":
        from .upsampler import UpsamplerStage, UpsamplerStageConfig

        return UpsamplerStageConfig, UpsamplerStage
    if name == "dvae":
        from .dalle1 import DVAEStage, DVAEStageConfig

        return DVAEStageConfig, DVAEStage
    if name == "dalle":
        from .dalle1 import DalleStage, DalleStageConfig

        return DalleStageConfig, DalleStage
    raise ValueError(f"unknown stage {name!r}; stages are {STAGES}")
