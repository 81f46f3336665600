"""Decoders: CLIP image embedding -> image."""

from unclip.models.decoder.decoder import Decoder, DecoderConfig

__all__ = ["Decoder", "DecoderConfig"]
