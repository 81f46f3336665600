"""Two-object shapes captions drawn one object at a time (issue 47).

The shapes decoder draws a single object of a held-out colour-shape pair far more often right
than a scene that pairs it with another object: it does not bind two colours to two shapes, but
it draws one well. So a canonical two-object caption ("a yellow star above a blue triangle on a
black background") is split into its objects, each alone in the center ("a large yellow star in
the center ...", "a large blue triangle in the center ..."); each object is drawn, and reranked,
as any single-object caption is, moved to the place the relation gives it (on a plain background
an object's look does not depend on where it stands, and the decoder draws held-out pairs worst
at the bottom: benchmarks/held_out_objects.py --places), and the two images are combined where
each object is, before the last upsampler finishes the scene (`DalleTwoPipeline.__call__`).
Other captions are drawn as they are.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from unclip.data import shapes
from unclip.diffusion.sampling import Generators
from unclip.pipelines.rerank import shifted

# A two-object shapes caption, and where each of its objects goes.
TWO_OBJECTS = re.compile(r"^an? (\w+) (\w+) (to the left of|to the right of|above|below) an? (\w+) (\w+) "
                         r"on an? (\w+) background\.?$")
PLACES = {"to the left of": ("left", "right"), "to the right of": ("right", "left"), "above": ("top", "bottom"),
          "below": ("bottom", "top")}
SEAM = (0.35, 0.65)  # along the objects' axis, where the second image's share ramps from none to all


def split_caption(caption: str) -> tuple[tuple[str, str], tuple[str, str]] | None:
    """The two objects of a canonical two-object shapes caption (also with "an", capitals, extra
    spaces or a full stop), each as (its caption alone in the center, the place it goes): size
    "large", since single-object captions name one; None for any other caption."""
    m = TWO_OBJECTS.match(" ".join(caption.lower().split()))
    if m is None:
        return None
    c1, s1, relation, c2, s2, bg = m.groups()
    p1, p2 = PLACES[relation]
    return tuple((f"a large {c} {s} {shapes.PLACE_PHRASES['center']} on a {bg} background", p)
                 for c, s, p in ((c1, s1, p1), (c2, s2, p2)))


def moved(images: torch.Tensor, place: str) -> torch.Tensor:
    """Images (B, 3, S, S) of an object in the center moved to `place` (shapes.PLACES), the
    background's edge pixels repeated into the gap."""
    side = images.shape[-1]
    x, y = shapes.PLACES[place]
    return shifted(images, round((x - 0.5) * side), round((y - 0.5) * side))


def fork(generator: torch.Generator) -> torch.Generator:
    """A new generator seeded from a copy of `generator`'s state (left as it was): the second
    object's, so that an image still depends on its own seed alone and its first object is
    drawn as that object's caption alone would be."""
    copy = torch.Generator(device=generator.device)
    copy.set_state(generator.get_state())
    seed = int(torch.randint(0, 2**62, (1,), generator=copy, device=generator.device))
    return torch.Generator(device=generator.device).manual_seed(seed)


@dataclass
class Objects:
    """The captions drawn for a batch: one per image, two for a two-object one (consecutive)."""

    captions: list[str]
    owner: list[int]  # the image each caption is drawn for
    places: list[tuple[str, str] | None]  # per image: where its two objects go (None: drawn whole)
    generator: Generators  # one per caption when the call gave one per image

    @classmethod
    def split(cls, captions: list[str], generator: Generators) -> Objects:
        caps, owner, places, gens = [], [], [], []
        per_image = isinstance(generator, Sequence)
        for i, caption in enumerate(captions):
            parts = split_caption(caption)
            places.append(None if parts is None else (parts[0][1], parts[1][1]))
            caps += [caption] if parts is None else [parts[0][0], parts[1][0]]
            owner += [i] if parts is None else [i, i]
            if per_image:
                gens += [generator[i]] if parts is None else [generator[i], fork(generator[i])]
        return cls(caps, owner, places, gens if per_image else generator)

    def combine(self, images: torch.Tensor, embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One image (B, 3, S, S) per caption of the batch: each two-object image the union of
        its objects', each moved from the center to its place (`combine`); its embedding the mean
        of theirs, normalised."""
        out_images, out_z, row = [], [], 0
        for place in self.places:
            if place is None:
                out_images.append(images[row])
                out_z.append(embeds[row])
                row += 1
                continue
            first, second = (moved(images[row + j:row + j + 1], place[j]) for j in (0, 1))
            out_images.append(combine(first, second, place[1])[0])
            out_z.append(F.normalize(embeds[row] + embeds[row + 1], dim=-1))
            row += 2
        return torch.stack(out_images), torch.stack(out_z)


def share(side: int, place: str, device=None) -> torch.Tensor:
    """(side, side): how much of each pixel may come from the image of the object at `place`:
    none on the other object's side, all on its own, a ramp across the middle (SEAM)."""
    pos = (torch.arange(side, device=device) + 0.5) / side
    ramp = ((pos - SEAM[0]) / (SEAM[1] - SEAM[0])).clamp(0, 1)
    if place in ("left", "top"):
        ramp = ramp.flip(0)
    return ramp[None, :].expand(side, side) if place in ("left", "right") else ramp[:, None].expand(side, side)


def away_from_background(images: torch.Tensor) -> torch.Tensor:
    """(B, 1, S, S): how far each pixel is from its image's background, the median of its border."""
    border = torch.cat([images[..., 0, :], images[..., -1, :], images[..., :, 0], images[..., :, -1]], -1)
    background = border.median(-1).values[..., None, None]
    return (images - background).abs().amax(1, keepdim=True)


def combine(first: torch.Tensor, second: torch.Tensor, second_place: str, eps: float = 1e-3) -> torch.Tensor:
    """Two single-object images (B, 3, S, S) in [-1, 1] on the same background as one: each pixel
    mostly from the image whose object is there (the one farther from its background, weighed
    by `share`), so neither object is cut at the middle and strays on the other's side drop."""
    s = share(first.shape[-1], second_place, first.device).to(first.dtype)
    w_first = (away_from_background(first) * (1 - s)) ** 2
    w_second = (away_from_background(second) * s) ** 2
    w = (w_second + eps * s) / (w_first + w_second + eps)  # where both are background, by share alone
    return torch.lerp(first, second, w)
