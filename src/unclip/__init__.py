"""unclip: DALL-E 2 (Ramesh et al. 2022, "Hierarchical Text-Conditional Image Generation with
CLIP Latents") as a system you can train on your own data.

    from unclip import load_pipeline
    pipe = load_pipeline()  # the shipped shapes-world model; or a folder, a Hub id, "dalle1"
    image = pipe("a red circle on a white background").images[0]
"""

__version__ = "0.1.0"

_LAZY = {  # name -> module: torch, diffusers and transformers load on first use, not on import
    "load_pipeline": "pipelines.registry", "resolve_model": "pipelines.locate", "Pipeline": "pipelines.base",
    "Capabilities": "pipelines.base", "DalleTwoPipeline": "pipelines.dalle2", "KarloPipeline": "pipelines.karlo",
    "DalleOnePipeline": "pipelines.dalle1", "KandinskyPipeline": "pipelines.kandinsky",
    "StableUnclipPipeline": "pipelines.stable_unclip", "UnCLIPOutput": "pipelines.output",
    "resolve_device": "runtime.devices", "resolve_dtype": "runtime.precision",
}
__all__ = [
    "Capabilities",
    "DalleOnePipeline",
    "DalleTwoPipeline",
    "KandinskyPipeline",
    "KarloPipeline",
    "Pipeline",
    "StableUnclipPipeline",
    "UnCLIPOutput",
    "__version__",
    "load_pipeline",
    "resolve_device",
    "resolve_dtype",
    "resolve_model",
]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'unclip' has no attribute {name!r}")
