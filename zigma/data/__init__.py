"""Procedural data generators: pure functions of a torch.Generator that return tensors (and captions)."""

from .moving_digits import bouncing_trajectories, moving_digits
from .shapes import (
    ATTRIBUTES,
    COLOURS,
    NUM_CLASSES,
    POSITIONS,
    SHAPES,
    VOCAB,
    ShapesBatch,
    attributes_to_label,
    caption,
    caption_to_attributes,
    label_to_attributes,
    render_shapes,
    shapes_batch,
)

__all__ = [
    "ATTRIBUTES",
    "COLOURS",
    "NUM_CLASSES",
    "POSITIONS",
    "SHAPES",
    "VOCAB",
    "ShapesBatch",
    "attributes_to_label",
    "bouncing_trajectories",
    "caption",
    "caption_to_attributes",
    "label_to_attributes",
    "moving_digits",
    "render_shapes",
    "shapes_batch",
]
