"""unclip: DALL-E 2 (Ramesh et al. 2022, "Hierarchical Text-Conditional Image Generation with
CLIP Latents") as a system you can train on your own data."""

__version__ = "0.1.0"
