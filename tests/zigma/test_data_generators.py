"""zigma.data: procedural shapes and moving digits are deterministic and show what their labels say."""

import math

import pytest
import torch

from zigma.data import (
    COLOURS,
    NUM_CLASSES,
    POSITIONS,
    SHAPES,
    attributes_to_label,
    bouncing_trajectories,
    caption,
    caption_to_attributes,
    label_to_attributes,
    moving_digits,
    shapes_batch,
)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def test_shapes_are_deterministic_from_the_generator_seed():
    a, b = shapes_batch(16, resolution=16, generator=_gen(3)), shapes_batch(16, resolution=16, generator=_gen(3))
    c = shapes_batch(16, resolution=16, generator=_gen(4))
    assert torch.equal(a.images, b.images) and a.captions == b.captions
    assert not torch.equal(a.images, c.images)


def test_shapes_captions_labels_and_attributes_round_trip():
    batch = shapes_batch(200, resolution=16, generator=_gen(0))
    assert batch.captions[0] == caption(*batch.attributes[0].tolist())
    parsed = torch.tensor([caption_to_attributes(c) for c in batch.captions])
    assert torch.equal(parsed, batch.attributes)
    assert torch.equal(label_to_attributes(batch.labels), batch.attributes)
    every = torch.cartesian_prod(torch.arange(len(COLOURS)), torch.arange(len(SHAPES)), torch.arange(len(POSITIONS)))
    assert sorted(attributes_to_label(every).tolist()) == list(range(NUM_CLASSES))


def test_a_caption_outside_the_grammar_is_refused():
    with pytest.raises(ValueError, match="not a shapes caption"):
        caption_to_attributes("a purple circle top left")


def test_each_shape_is_drawn_in_its_colour_inside_its_captioned_quadrant():
    batch = shapes_batch(64, resolution=32, generator=_gen(1))
    rgb = torch.tensor(list(COLOURS.values()))
    for img, (c, _, p) in zip(batch.images, batch.attributes.tolist()):
        quads = [img[:, :16, :16], img[:, :16, 16:], img[:, 16:, :16], img[:, 16:, 16:]]   # POSITIONS order
        assert all(q.abs().sum() == 0 for i, q in enumerate(quads) if i != p)
        mass = quads[p].sum(dim=(1, 2))
        assert torch.nn.functional.cosine_similarity(mass, rgb[c], dim=0) > 0.999


def test_shape_areas_match_their_formulas():
    batch = shapes_batch(600, resolution=64, generator=_gen(2))
    coverage = batch.images.amax(1).sum(dim=(1, 2)) / batch.images.amax(dim=(1, 2, 3)) / 64**2   # (N,)
    mean_r2 = (0.20**3 - 0.12**3) / (3 * 0.08)                 # E[r^2] for r ~ U(0.12, 0.20)
    expected = {0: math.pi * mean_r2, 1: (2 * 0.85) ** 2 * mean_r2, 2: 2 * mean_r2}   # circle, square, triangle
    for shape, area in expected.items():
        assert coverage[batch.attributes[:, 1] == shape].mean().item() == pytest.approx(area, rel=0.08)


def test_bouncing_trajectories_are_a_step_by_step_bounce_off_the_walls():
    """Oracle: a ball moved frame by frame in float64 (x += v; past a wall, mirror x and flip v), from the same
    start, angle and speed (drawn in the generator's order: start (n, 2), angle (n,), speed (n,))."""
    n, frames, extent = 200, 40, 10
    pos = bouncing_trajectories(n, frames=frames, extent=extent, generator=_gen(0))
    g = _gen(0)
    start = torch.rand(n, 2, generator=g).double() * extent
    angle = torch.rand(n, generator=g).double() * 2 * math.pi
    speed = 1.0 + 2.0 * torch.rand(n, generator=g).double()
    x, v = start.clone(), torch.stack([angle.cos(), angle.sin()], -1) * speed[:, None]
    sim = []
    for _ in range(frames):
        sim.append(x.clone())
        x = x + v
        high, low = x > extent, x < 0
        x = torch.where(high, 2 * extent - x, torch.where(low, -x, x))
        v = torch.where(high | low, -v, v)
    sim = torch.stack(sim, 1)                                        # (n, T, 2)
    clear = ((sim - sim.floor()) - 0.5).abs() > 1e-4                 # not on a rounding tie
    assert torch.equal(pos[clear], sim.round().long()[clear]) and clear.float().mean() > 0.99
    assert ((pos == 0) | (pos == extent)).any(dim=1).float().mean() > 0.5   # most balls do reach a wall


def test_moving_digits_paste_every_sprite_whole_in_every_frame():
    sprites = torch.rand(5, 6, 6, generator=_gen(0))
    video, ids = moving_digits(sprites, 8, frames=6, canvas=20, generator=_gen(1))
    assert video.shape == (8, 6, 1, 20, 20) and ids.shape == (8, 1)
    sums = video.sum(dim=(2, 3, 4))                                   # (N, T)
    expected = sprites[ids[:, 0]].sum(dim=(1, 2))[:, None].expand_as(sums)
    torch.testing.assert_close(sums, expected)


def test_moving_digits_are_deterministic_from_the_generator_seed():
    sprites = torch.rand(5, 6, 6, generator=_gen(0))
    a, _ = moving_digits(sprites, 4, frames=5, canvas=16, digits_per_video=2, generator=_gen(7))
    b, _ = moving_digits(sprites, 4, frames=5, canvas=16, digits_per_video=2, generator=_gen(7))
    assert torch.equal(a, b)


def test_zigma_data_and_metrics_import_only_torch_and_numpy():
    import subprocess
    import sys

    code = "import sys, zigma.data, zigma.metrics; print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                timeout=120).stdout.split())
    forbidden = {"plugins", "harness", "pydantic", "sklearn", "scipy", "PIL", "torchvision", "cleanfid", "pluggy"}
    assert not loaded & forbidden, loaded & forbidden
