"""Pictures people would rather look at than read: loss curves and captioned image grids,
drawn with Pillow alone (no plotting dependency)."""

from __future__ import annotations

import math
import textwrap

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def _font(size: int = 12):
    try:
        return ImageFont.load_default(size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


def loss_curve(steps: list[int], losses: list[float], title: str, width=640, height=360) -> Image.Image:
    """A line plot of loss against step, with a log-scaled y axis when it spans a decade."""
    img = Image.new("RGB", (width, height), "white")
    draw, font = ImageDraw.Draw(img), _font()
    left, right, top, bottom = 60, width - 15, 30, height - 35
    draw.text((left, 8), title, fill="black", font=font)
    draw.rectangle([left, top, right, bottom], outline="black")
    pts = [(s, v) for s, v in zip(steps, losses) if math.isfinite(v)]
    if len(pts) < 2:
        return img
    xs, ys = np.array([p[0] for p in pts], float), np.array([p[1] for p in pts], float)
    log_y = ys.min() > 0 and ys.max() / ys.min() > 10
    yv = np.log10(ys) if log_y else ys
    x0, x1, y0, y1 = xs.min(), max(xs.max(), xs.min() + 1), yv.min(), yv.max()
    y1 = y1 if y1 > y0 else y0 + 1e-6

    def px(x, y):
        return (left + (x - x0) / (x1 - x0) * (right - left), bottom - (y - y0) / (y1 - y0) * (bottom - top))

    for frac in (0, 0.5, 1):  # axis labels at the ends and the middle
        yy = y0 + frac * (y1 - y0)
        label = f"{10 ** yy:.3g}" if log_y else f"{yy:.3g}"
        draw.text((4, px(x0, yy)[1] - 6), label, fill="black", font=font)
        xx = x0 + frac * (x1 - x0)
        draw.text((px(xx, y0)[0] - 10, bottom + 6), f"{xx:.0f}", fill="black", font=font)
    draw.line([px(x, y) for x, y in zip(xs, yv)], fill=(40, 90, 230), width=1)
    if len(xs) > 20:  # a smoothed line on top of the noisy one
        k = max(len(xs) // 20, 2)
        smooth = np.convolve(yv, np.ones(k) / k, mode="valid")
        draw.line([px(x, y) for x, y in zip(xs[k - 1 :], smooth)], fill=(230, 40, 40), width=2)
    return img


def image_grid(images: np.ndarray, captions: list[str] | None = None, cols: int = 4,
               marks: list[bool] | None = None, label_lines: int = 3) -> Image.Image:
    """uint8 (N, H, W, 3) images in a grid, each with its caption below it and, if `marks`
    is given, a green tick or red cross in its corner. Images under 96 px are enlarged
    (nearest neighbour, so pixels stay visible as pixels)."""
    scale = max(1, 96 // images.shape[1])
    if scale > 1:
        images = np.stack([np.asarray(Image.fromarray(im).resize((im.shape[1] * scale, im.shape[0] * scale),
                                                                Image.NEAREST)) for im in images])
    n, h, w = len(images), images.shape[1], images.shape[2]
    cols = min(cols, n)
    rows = math.ceil(n / cols)
    cell_w = max(w, 160)
    font = _font(11)
    text_h = 13 * label_lines if captions else 0
    grid = Image.new("RGB", (cols * (cell_w + 8) + 8, rows * (h + text_h + 8) + 8), "white")
    draw = ImageDraw.Draw(grid)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        x, y = 8 + c * (cell_w + 8) + (cell_w - w) // 2, 8 + r * (h + text_h + 8)
        grid.paste(Image.fromarray(im), (x, y))
        if captions:
            lines = textwrap.wrap(captions[i], width=cell_w // 6)[:label_lines]
            for j, line in enumerate(lines):
                draw.text((8 + c * (cell_w + 8), y + h + 1 + 13 * j), line, fill="black", font=font)
        if marks is not None:
            colour = (40, 170, 60) if marks[i] else (230, 40, 40)
            draw.rectangle([x + w - 14, y, x + w, y + 14], fill=colour)
            draw.text((x + w - 11, y + 1), "v" if marks[i] else "x", fill="white", font=font)
    return grid
