"""What the random folders of every family share (tests and benchmarks; nothing here downloads):
a CLIP BPE tokenizer made in memory and written as published repositories hold it, and random
weights everywhere."""

from __future__ import annotations

import json
from pathlib import Path

import torch

WORDS = ("a", "horse", "red", "blue", "circle", "square", "on", "the", "of", "photo")


def make_tokenizer():
    """A CLIP BPE tokenizer built in memory: every byte, a few whole words, Karlo's pad token "!"."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    chars = sorted(ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    merges = []
    for word in WORDS:
        if len(word) < 2:
            continue
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            merges.append((parts[0], parts[1]))
            parts = [parts[0] + parts[1]] + parts[2:]
            vocab.setdefault(parts[0], len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, pad_token="!", model_max_length=77)


def randomize(module: torch.nn.Module, generator: torch.Generator, scale: float = 0.05) -> None:
    """Random weights everywhere (diffusers zero-initialises output layers), so every input matters."""
    with torch.no_grad():
        for p in module.parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=generator) * scale)


def write_tokenizer(tokenizer, folder: Path) -> None:
    """vocab.json + merges.txt + configs, as Karlo's tokenizer/ folder holds them."""
    folder.mkdir(parents=True, exist_ok=True)
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    (folder / "vocab.json").write_text(json.dumps(model["vocab"]))
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(m + "\n" for m in merges))
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
               "pad_token": "!"}
    (folder / "special_tokens_map.json").write_text(json.dumps(special))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {**special, "model_max_length": tokenizer.model_max_length, "tokenizer_class": "CLIPTokenizer",
         "do_lower_case": True}))


def text_tower(tokenizer, width: int, layers: int, heads: int, projection: int | None = None):
    """A random CLIP text tower at `width` for `tokenizer` (77 positions): with a projection
    (CLIPTextModelWithProjection, a prior's text tower) or without (a caption encoder)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=width, intermediate_size=4 * width,
                         num_hidden_layers=layers, num_attention_heads=heads, max_position_embeddings=77,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, **({"projection_dim": projection} if projection else {}))
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg)


def image_tower(width: int, layers: int, heads: int, image_size: int, patch_size: int, projection: int):
    """A random CLIP image tower (CLIPVisionModelWithProjection) and its PIL image processor."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    tower = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=width, intermediate_size=4 * width, num_hidden_layers=layers, num_attention_heads=heads,
        image_size=image_size, patch_size=patch_size, projection_dim=projection))
    processor = CLIPImageProcessorPil(crop_size={"height": image_size, "width": image_size},
                                      size={"shortest_edge": image_size})
    return tower, processor


def write_component(part, folder: Path, dtype: torch.dtype | None = None, variant: str | None = None) -> None:
    """One component as published repositories hold it: a tokenizer's files, a network's config
    and safetensors (stored in `dtype` as `variant`, the module left in float32), or a scheduler's
    or image processor's config."""
    if hasattr(part, "backend_tokenizer"):
        write_tokenizer(part, folder)
    elif hasattr(part, "parameters"):
        saved = part if dtype is None else part.to(dtype)
        saved.save_pretrained(folder, safe_serialization=True, variant=variant)
        if dtype is not None:
            part.to(torch.float32)
    else:
        part.save_pretrained(folder)
