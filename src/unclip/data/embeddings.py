"""A cache of CLIP embeddings (from any `unclip.models.clip.ClipEncoder`, passed in), computed once per data set so that prior training never reruns
CLIP: sharded safetensors files plus a manifest that records which CLIP made them.

Per sample: image_embed (D,) and text_embed (D,), both L2-normalised; text_encodings (L, W)
per-token states (fp16) and mask (L,). `null.safetensors` holds the same for the empty
caption, the null condition of classifier-free guidance.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from unclip.data.order import EpochOrder
from unclip.data.stream import Source, collate

FORMAT = 1


def clip_fingerprint(clip) -> str:
    """A hash of the CLIP weights: caches refuse to serve a different CLIP."""
    h = hashlib.sha256()
    for name, tensor in sorted(clip.model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:20]


@torch.no_grad()
def encode_text(clip, captions: list[str]) -> dict[str, torch.Tensor]:
    """The text condition of the prior and decoder: normalised text_embed, states, mask."""
    out = clip.embed_text(captions)
    return {"text_embed": F.normalize(out.text_embed.float(), dim=-1),
            "text_encodings": out.text_encodings.float(), "mask": out.mask}


@torch.no_grad()
def encode_image(clip, pixels: torch.Tensor) -> torch.Tensor:
    return F.normalize(clip.embed_image(pixels).float(), dim=-1)


@torch.no_grad()
def build_cache(clip, source: Source, num: int, out: str | Path, batch: int = 256,
                shard_size: int = 16384) -> Path:
    """Embed samples 0..num-1 of `source` and write them to `out` (replaced if present)."""
    out = Path(out)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    clip.eval()
    shards, captions, rows = [], [], {}
    for start in tqdm(range(0, num, batch), desc="embed with CLIP", leave=False):
        b = collate([source.get(i) for i in range(start, min(start + batch, num))])
        enc = encode_text(clip, b["captions"])
        part = {"image_embed": encode_image(clip, b["pixels"]), **enc}
        for k, v in part.items():
            rows.setdefault(k, []).append(v)
        captions += b["captions"]
        if sum(len(v) for v in rows["image_embed"]) >= shard_size or start + batch >= num:
            name = f"shard_{len(shards):05d}.safetensors"
            save_file(_pack({k: torch.cat(v) for k, v in rows.items()}), tmp / name)
            shards.append(name)
            rows = {}
    save_file(_pack(encode_text(clip, [""])), tmp / "null.safetensors")
    manifest = {"format": FORMAT, "clip_fingerprint": clip_fingerprint(clip), "num": len(captions),
                "shards": shards, "embed_dim": clip.embed_dim, "text_len": clip.max_length}
    (tmp / "captions.json").write_text(json.dumps(captions))
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)  # a cache folder is either complete or absent
    return out


def _pack(d: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Storage dtypes: fp16 per-token states (the bulk), fp32 embeddings, uint8 masks."""
    out = {k: v.contiguous() for k, v in d.items()}
    out["text_encodings"] = out["text_encodings"].half()
    out["mask"] = out["mask"].to(torch.uint8)
    return out


def _unpack(d: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    d["text_encodings"] = d["text_encodings"].float()
    d["mask"] = d["mask"].bool()
    return d


class EmbeddingCache:
    """A built cache in memory; `get(i)` is sample i of a seeded, per-epoch shuffled stream."""

    def __init__(self, path: str | Path, clip=None, seed: int = 0):
        path = Path(path)
        if not (path / "manifest.json").is_file():
            raise FileNotFoundError(f"no embedding cache at {path} (manifest.json missing)")
        self.manifest = json.loads((path / "manifest.json").read_text())
        if clip is not None and clip_fingerprint(clip) != self.manifest["clip_fingerprint"]:
            raise ValueError(f"the embedding cache {path} was built with another CLIP model "
                             f"(fingerprint {self.manifest['clip_fingerprint']}); rebuild it for this one")
        shards = [load_file(path / name) for name in self.manifest["shards"]]
        self.data = _unpack({k: torch.cat([s[k] for s in shards]) for k in shards[0]})
        self.null = _unpack(load_file(path / "null.safetensors"))
        self.captions = json.loads((path / "captions.json").read_text())
        self.order = EpochOrder(len(self.captions), seed)

    def __len__(self) -> int:
        return len(self.captions)

    def get(self, index: int) -> dict:
        i = self.order(index)
        return {"caption": self.captions[i], **{k: v[i] for k, v in self.data.items()}}
