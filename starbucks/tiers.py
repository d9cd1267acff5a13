"""Rerank tier names, torch-free so the command line can check them before a model is loaded.

A tier is written ``KIND`` or ``KIND:SIZES``: ``mmap``, ``float16``, ``int8``, ``residual``, or ``int8:6x384``
to hold only the 6x384 vectors in RAM (the other rerank sizes are then read from their memory-mapped
files).
See :mod:`indexes.tiers` for what each kind holds.
"""
from __future__ import annotations

from starbucks.errors import StarbucksError
from starbucks.sizes import Size, parse_sizes

RERANK_TIERS = ("mmap", "float16", "int8", "residual")


def parse_tier(text: str) -> tuple[str, list[Size] | None]:
    """``(kind, sizes)`` of a tier's text (``sizes`` None: every rerank size), else a one-line error naming it."""
    kind, colon, sizes = str(text).partition(":")
    if kind not in RERANK_TIERS:
        raise StarbucksError(f"unknown rerank tier {text!r}: choose one of {', '.join(RERANK_TIERS)}, "
                             "optionally with the sizes to hold, e.g. int8:6x384")
    if not colon:
        return kind, None
    if kind == "mmap":
        raise StarbucksError(f"bad rerank tier {text!r}: the mmap tier holds nothing in RAM, so it takes no sizes")
    try:
        return kind, parse_sizes(sizes)
    except ValueError as e:
        raise StarbucksError(f"bad rerank tier {text!r}: {e}") from None
