"""A ``Size`` is one usable embedding of a 2D Matryoshka model: (layer, dim).

Layer n is ``hidden_states[n]`` (0 is the embedding layer), pooled and cut to its
first ``dim`` coordinates. Sizes of different layers are different vectors.
"""
from __future__ import annotations

from typing import Iterable, NamedTuple


class Size(NamedTuple):
    layer: int
    dim: int

    def __str__(self) -> str:
        return f"{self.layer}x{self.dim}"

    @classmethod
    def parse(cls, text: str | "Size" | tuple) -> "Size":
        """Parse ``"6x384"`` (or accept an existing pair)."""
        if isinstance(text, tuple):
            layer, dim = text
            return cls(int(layer), int(dim))
        try:
            layer, dim = str(text).lower().strip().split("x")
            size = cls(int(layer), int(dim))
        except ValueError:
            raise ValueError(f"bad size {text!r}: expected LAYERxDIM, e.g. 6x384") from None
        if size.layer < 1 or size.dim < 1:
            raise ValueError(f"bad size {text!r}: layer and dim must be positive")
        return size


def parse_sizes(text: str | Iterable) -> list[Size]:
    """Parse ``"2x32,4x64"`` or a list of sizes; sorted, duplicates removed."""
    items = text.split(",") if isinstance(text, str) else list(text)
    sizes = sorted({Size.parse(item) for item in items if str(item).strip()})
    if not sizes:
        raise ValueError(f"no sizes in {text!r}")
    return sizes


def diagonal(num_layers: int, hidden: int) -> list[Size]:
    """The paper's diagonal scaled to a backbone: layer and dim grow together.

    BERT-base (12, 768) gives (2,32) (4,64) (6,128) (8,256) (10,512) (12,768);
    a 6-layer 384-wide model gives (1,16) (2,32) (3,64) (4,128) (5,256) (6,384).
    """
    fractions = (1 / 24, 1 / 12, 1 / 6, 1 / 3, 2 / 3, 1)
    sizes = {
        Size(max(1, num_layers * (i + 1) // 6), max(1, round(hidden * f)))
        for i, f in enumerate(fractions)
    }
    return sorted(sizes)
