"""Procedural 'shapes': one coloured shape in one quadrant of a black canvas, with an exact caption.

Caption grammar: "a <colour> <shape> <position>", e.g. "a red circle top left". The class label of an image is
colour * (|SHAPES| * |POSITIONS|) + shape * |POSITIONS| + position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = [
    "ATTRIBUTES",
    "COLOURS",
    "NUM_CLASSES",
    "POSITIONS",
    "SHAPES",
    "VOCAB",
    "ShapesBatch",
    "attributes_to_label",
    "caption",
    "caption_to_attributes",
    "label_to_attributes",
    "render_shapes",
    "shapes_batch",
]

#: colour name -> RGB in [0, 1]
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.10, 0.10),
    "green": (0.10, 0.80, 0.10),
    "blue": (0.15, 0.30, 1.00),
    "yellow": (0.95, 0.90, 0.10),
    "magenta": (0.90, 0.10, 0.90),
    "cyan": (0.10, 0.90, 0.90),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
POSITIONS: tuple[str, ...] = ("top left", "top right", "bottom left", "bottom right")
ATTRIBUTES: tuple[str, ...] = ("colour", "shape", "position")
VOCAB: tuple[str, ...] = ("a", *COLOURS, *SHAPES, "top", "bottom", "left", "right")
NUM_CLASSES = len(COLOURS) * len(SHAPES) * len(POSITIONS)

_CENTRES = ((0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75))  # (x, y) per position
_RADIUS = (0.12, 0.20)     # half-size range, as a fraction of the side
_JITTER = 0.04             # centre jitter, as a fraction of the side (keeps the shape in its quadrant)
_BRIGHTNESS = (0.8, 1.0)   # colour intensity jitter


@dataclass(frozen=True)
class ShapesBatch:
    """images (N, 3, H, W) float in [0, 1]; attributes (N, 3) int64 (colour, shape, position); captions."""

    images: torch.Tensor
    attributes: torch.Tensor
    captions: list[str]

    @property
    def labels(self) -> torch.Tensor:
        """(N,) int64 class index in [0, NUM_CLASSES)."""
        return attributes_to_label(self.attributes)


def attributes_to_label(attributes: torch.Tensor) -> torch.Tensor:
    """(N, 3) attribute indices -> (N,) class index."""
    c, s, p = attributes.unbind(-1)
    return (c * len(SHAPES) + s) * len(POSITIONS) + p


def label_to_attributes(labels: torch.Tensor) -> torch.Tensor:
    """(N,) class index -> (N, 3) attribute indices (colour, shape, position)."""
    p = labels % len(POSITIONS)
    s = (labels // len(POSITIONS)) % len(SHAPES)
    c = labels // (len(POSITIONS) * len(SHAPES))
    return torch.stack([c, s, p], dim=-1)


def caption(colour: int, shape: int, position: int) -> str:
    """Attribute indices -> 'a red circle top left'."""
    return f"a {list(COLOURS)[colour]} {SHAPES[shape]} {POSITIONS[position]}"


def caption_to_attributes(text: str) -> tuple[int, int, int]:
    """'a red circle top left' -> (colour, shape, position); ValueError if it does not follow the grammar."""
    words = text.strip().lower().split()
    if len(words) != 5 or words[0] != "a":
        raise ValueError(f"not a shapes caption: {text!r} (expected 'a <colour> <shape> <position>')")
    colours = list(COLOURS)
    position = " ".join(words[3:])
    if words[1] not in colours or words[2] not in SHAPES or position not in POSITIONS:
        raise ValueError(f"not a shapes caption: {text!r} (colours {colours}, shapes {list(SHAPES)}, "
                         f"positions {list(POSITIONS)})")
    return colours.index(words[1]), SHAPES.index(words[2]), POSITIONS.index(position)


def render_shapes(attributes: torch.Tensor, *, resolution: int, generator: torch.Generator,
                  device: torch.device | None = None) -> torch.Tensor:
    """(N, 3) attributes -> (N, 3, H, W) float images in [0, 1] with anti-aliased edges (signed distances)."""
    n = attributes.shape[0]
    attributes = attributes.to(device)

    def uniform(lo: float, hi: float) -> torch.Tensor:
        u = torch.rand(n, generator=generator, device=generator.device)
        return (lo + (hi - lo) * u).to(device)

    radius = uniform(*_RADIUS)
    centres = torch.tensor(_CENTRES, device=device)[attributes[:, 2]]                      # (N, 2)
    cx = centres[:, 0] + uniform(-_JITTER, _JITTER)
    cy = centres[:, 1] + uniform(-_JITTER, _JITTER)
    brightness = uniform(*_BRIGHTNESS)
    grid = (torch.arange(resolution, device=device) + 0.5) / resolution
    dx = grid.view(1, 1, -1) - cx.view(-1, 1, 1)                                           # (N, 1, W)
    dy = grid.view(1, -1, 1) - cy.view(-1, 1, 1)                                           # (N, H, 1)
    r = radius.view(-1, 1, 1)
    circle = torch.sqrt(dx**2 + dy**2) - r                                                 # (N, H, W)
    square = torch.maximum(dx.abs(), dy.abs()) - 0.85 * r
    # isosceles triangle, apex (0, -r), base corners (+-r, r): inside where both sides and the base agree
    triangle = torch.maximum(dy - r, (2 * dx.abs() - dy - r) / math.sqrt(5.0))
    sd = torch.stack([circle, square, triangle], dim=1)                                    # (N, 3, H, W)
    sd = sd.gather(1, attributes[:, 1].view(-1, 1, 1, 1).expand(-1, 1, resolution, resolution))
    coverage = (0.5 - sd * resolution).clamp(0.0, 1.0)                                     # (N, 1, H, W)
    rgb = torch.tensor(list(COLOURS.values()), device=device)[attributes[:, 0]]            # (N, 3)
    return coverage * (rgb * brightness.view(-1, 1)).view(n, 3, 1, 1)                      # (N, 3, H, W)


def shapes_batch(n: int, *, resolution: int = 32, generator: torch.Generator,
                 device: torch.device | None = None) -> ShapesBatch:
    """n random shape images with uniformly drawn attributes, their attributes and exact captions."""
    sizes = (len(COLOURS), len(SHAPES), len(POSITIONS))
    attributes = torch.stack([torch.randint(k, (n,), generator=generator, device=generator.device)
                              for k in sizes], dim=-1).to(device)                          # (N, 3)
    images = render_shapes(attributes, resolution=resolution, generator=generator, device=device)
    captions = [caption(*row) for row in attributes.tolist()]
    return ShapesBatch(images=images, attributes=attributes, captions=captions)
