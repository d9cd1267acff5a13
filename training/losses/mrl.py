"""Matryoshka Representation Learning (MRL): nested dims of the last layer only.

The baseline the paper extends: a CE per last-layer dim, summed, no KL.
"""
from __future__ import annotations

from starbucks.sizes import Size


def mrl_sizes(sizes: list[Size], num_layers: int) -> list[Size]:
    """The dims of the given sizes, all taken from the last layer."""
    return sorted({Size(num_layers, s.dim) for s in sizes})
