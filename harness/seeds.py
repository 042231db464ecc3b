"""Seeds derived from a trial seed: one independent, version-stable stream per purpose (data, init, noise, ...)."""

from __future__ import annotations

__all__ = ["seed_for"]


def seed_for(seed: int, *purpose: int) -> int:
    """A 63-bit seed derived from (trial seed, purpose, index): independent streams, stable over versions."""
    out = seed & 0x7FFFFFFF
    for p in purpose:
        out = (out * 0x9E3779B1 + (p & 0xFFFFFFFF) + 0x7F4A7C15) % (2**63 - 25)
    return out
