"""The scorer's shape classifier: a small CNN that names the shape of one detected object
from its mask, cropped around it and scaled to a fixed size (so it sees shape, not size).

Trained on rendered objects of every colour, of radii around and between the spec's two
sizes and at random places, through augmentations that imitate imperfect generated images
(blur, noise, tinted backgrounds, JPEG, small rotations and stretches); the crops go through
the detector's own mask and crop code, so training and scoring see the same inputs.
Retrain with `python -m unclip.tasks.evaluate.shape_classifier OUT.safetensors`.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter
from safetensors.torch import load_file, save_file
from torch import nn

from unclip.data import shapes
from unclip.tasks.evaluate.masks import components, crop_mask, foreground

WEIGHTS = Path(__file__).resolve().parents[2] / "assets" / "shape_classifier.safetensors"


class ShapeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(64, len(shapes.SHAPES))

    def forward(self, crops: torch.Tensor) -> torch.Tensor:  # (B, 1, CROP, CROP) -> logits (B, 4)
        return self.head(self.features(crops).flatten(1))


def load_classifier(path: str | Path = WEIGHTS) -> ShapeNet:
    if not Path(path).is_file():
        raise FileNotFoundError(f"shape classifier weights not found: {path}; train them with "
                                "`python -m unclip.tasks.evaluate.shape_classifier OUT.safetensors`")
    net = ShapeNet()
    net.load_state_dict(load_file(str(path)))
    return net.eval()


def augment(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An imperfect version of a rendered image (uint8 HxWx3)."""
    img = Image.fromarray(image)
    if rng.random() < 0.5:  # small rotation and stretch about the centre
        angle, sx, sy = rng.uniform(-8, 8), rng.uniform(0.9, 1.1), rng.uniform(0.9, 1.1)
        img = img.rotate(angle, resample=Image.BILINEAR, fillcolor=tuple(image[0, 0].tolist()))
        w, h = img.size
        img = img.resize((max(8, round(w * sx)), max(8, round(h * sy))), Image.BILINEAR).resize((w, h), Image.BILINEAR)
    x = np.asarray(img).astype(np.float32)
    if rng.random() < 0.5:
        blur = ImageFilter.GaussianBlur(rng.uniform(0.3, 1.5))
        x = np.asarray(Image.fromarray(x.clip(0, 255).astype(np.uint8)).filter(blur)).astype(np.float32)
    x += rng.uniform(-25, 25, size=3)  # a tint
    x += rng.normal(0, rng.uniform(0, 20), size=x.shape)  # speckle
    x = x.clip(0, 255).astype(np.uint8)
    if rng.random() < 0.3:
        buf = io.BytesIO()
        Image.fromarray(x).save(buf, format="JPEG", quality=int(rng.integers(30, 90)))
        x = np.asarray(Image.open(buf).convert("RGB"))
    return x


def training_example(rng: np.random.Generator, size: int = 64) -> tuple[torch.Tensor, int] | None:

    label = int(rng.integers(len(shapes.SHAPES)))
    r = rng.uniform(0.07, 0.22)
    cx, cy = rng.uniform(0.25, 0.75, size=2)
    bg = shapes.BACKGROUNDS[rng.choice(list(shapes.BACKGROUNDS))]
    colour = shapes.COLOURS[rng.choice(list(shapes.COLOURS))]
    image = augment(shapes.draw_objects(bg, [(shapes.SHAPES[label], colour, r, cx, cy)], size), rng)
    found = components(foreground(image)[0])
    if not found:
        return None
    return crop_mask(max(found, key=lambda m: m.sum())), label


def make_dataset(num: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    while len(xs) < num:
        ex = training_example(rng)
        if ex is not None:
            xs.append(ex[0])
            ys.append(ex[1])
    return torch.stack(xs)[:, None], torch.tensor(ys)


def train_classifier(out: str | Path, num: int = 20000, epochs: int = 8, seed: int = 0) -> float:
    """Train on `num` augmented examples; returns the accuracy on 2000 held-out ones."""
    torch.manual_seed(seed)
    x, y = make_dataset(num, seed)
    x_val, y_val = make_dataset(2000, seed + 1)
    net = ShapeNet()
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    steps = epochs * (num // 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=steps)
    for step in range(steps):
        idx = torch.randint(0, num, (128,))
        loss = F.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        acc = (net.eval()(x_val).argmax(1) == y_val).float().mean().item()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(out))
    return acc


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else str(WEIGHTS)
    print(f"held-out accuracy {train_classifier(target):.4f}; weights written to {target}")
