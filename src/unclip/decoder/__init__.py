"""Decoders: CLIP image embedding -> image."""

from .decoder import Decoder, DecoderConfig

__all__ = ["Decoder", "DecoderConfig"]
