"""Procedural 'moving digits' videos: digit sprites bouncing off the walls of a square canvas."""

from __future__ import annotations

import math

import torch

__all__ = ["bouncing_trajectories", "moving_digits"]


def bouncing_trajectories(n: int, *, frames: int, extent: int, speed: tuple[float, float] = (1.0, 3.0),
                          generator: torch.Generator) -> torch.Tensor:
    """(n, frames, 2) integer top-left corners (x, y) in [0, extent] moving in straight lines, reflected at walls."""
    g = generator
    start = torch.rand(n, 2, generator=g, device=g.device) * extent                        # (n, 2)
    angle = torch.rand(n, generator=g, device=g.device) * 2 * math.pi
    v = speed[0] + (speed[1] - speed[0]) * torch.rand(n, generator=g, device=g.device)
    velocity = torch.stack([angle.cos(), angle.sin()], dim=-1) * v[:, None]                # (n, 2)
    t = torch.arange(frames, device=g.device, dtype=start.dtype)
    free = start[:, None, :] + t[None, :, None] * velocity[:, None, :]                      # (n, T, 2)
    if extent == 0:
        return torch.zeros(n, frames, 2, dtype=torch.long)
    period = free.remainder(2 * extent)                                                    # unfold reflections
    return torch.where(period > extent, 2 * extent - period, period).round().long()


def moving_digits(sprites: torch.Tensor, n: int, *, frames: int = 8, canvas: int = 32, digits_per_video: int = 1,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Videos of `digits_per_video` sprites bouncing in a canvas, composited with max.

    sprites: (K, s, s) float in [0, 1], s <= canvas. Returns videos (n, frames, 1, canvas, canvas) float in [0, 1]
    and the sprite index of every digit, (n, digits_per_video) int64.
    """
    k, s, s2 = sprites.shape
    assert s == s2 and s <= canvas, f"sprites must be square and fit the canvas, got {tuple(sprites.shape)}"
    g = generator
    ids = torch.randint(k, (n, digits_per_video), generator=g, device=g.device).to(sprites.device)
    video = sprites.new_zeros(n, frames, canvas, canvas)                                   # (n, T, H, W)
    rows = torch.arange(n, device=sprites.device).view(n, 1, 1)
    offs = torch.arange(s, device=sprites.device)
    for d in range(digits_per_video):
        pos = bouncing_trajectories(n, frames=frames, extent=canvas - s, generator=g).to(sprites.device)
        sprite = sprites[ids[:, d]]                                                        # (n, s, s)
        for t in range(frames):
            ys = (pos[:, t, 1:2] + offs).view(n, s, 1)                                     # (n, s, 1)
            xs = (pos[:, t, 0:1] + offs).view(n, 1, s)                                     # (n, 1, s)
            frame = video[:, t]                                                            # (n, H, W)
            frame[rows, ys, xs] = torch.maximum(frame[rows, ys, xs], sprite)
    return video.unsqueeze(2), ids                                                         # (n, T, 1, H, W)
