"""The rerank tier: where the vectors of an index's rerank sizes live while a searcher rescores.

* ``mmap``: the stored float16 files, memory-mapped; a rescoring reads the rows it needs in row order
  (the operating system's page cache decides what stays in memory).
* ``float16``: the same vectors copied into RAM (2 bytes a dimension).
* ``int8``: 8-bit codes per dimension in RAM (1 byte a dimension): each dimension's range over the
  corpus is cut into 255 steps, ``value ~ low + code * step``. A score is then
  ``q . low + (q * step) . code``, computed from the codes directly (a gather and a matrix product).

A tier holds every rerank size of its index (``manifest.rerank``) unless its text names the sizes to
hold (``int8:6x384``); a named size may be any stored size, a shortlist size too (a plan that shortlists
6x384 through a compressed index and reranks it exactly: ``6x384~nprobe=64:100,6x384:10``). Rescoring
at a size the tier does not hold reads its memory-mapped rows.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from starbucks.errors import StarbucksError
from starbucks.tiers import RERANK_TIERS, parse_tier

__all__ = ["RERANK_TIERS", "RerankTier", "Quantized", "check_tier", "quantize"]
BLOCK = 65536


def check_tier(tier) -> str:
    """``tier`` if it is a rerank tier's text (``int8``, ``int8:6x384``), else a one-line error naming it."""
    parse_tier(tier)
    return tier


class Quantized(NamedTuple):
    """A matrix as per-dimension 8-bit codes: ``matrix ~ low + codes * step``."""

    codes: np.ndarray  # uint8 [n, dim]
    low: np.ndarray  # float32 [dim]
    step: np.ndarray  # float32 [dim]

    @property
    def nbytes(self) -> int:
        return self.codes.nbytes + self.low.nbytes + self.step.nbytes


def quantize(matrix: np.ndarray, block: int = BLOCK) -> Quantized:
    """8-bit codes of a (memory-mapped) matrix, read block by block (never widened whole)."""
    n, dim = matrix.shape
    low = np.full(dim, np.inf, dtype=np.float32)
    high = np.full(dim, -np.inf, dtype=np.float32)
    for start in range(0, n, block):
        part = np.asarray(matrix[start : start + block], dtype=np.float32)
        low, high = np.minimum(low, part.min(axis=0)), np.maximum(high, part.max(axis=0))
    if n == 0:
        low, high = np.zeros(dim, np.float32), np.zeros(dim, np.float32)
    step = np.where(high > low, (high - low) / 255, 1).astype(np.float32)
    codes = np.empty((n, dim), dtype=np.uint8)
    for start in range(0, n, block):
        part = np.asarray(matrix[start : start + block], dtype=np.float32)
        codes[start : start + block] = np.clip(np.rint((part - low) / step), 0, 255)
    return Quantized(codes, low, step)


class RerankTier:
    """The rerank sizes of one index held as a tier names them (``mmap`` holds nothing)."""

    def __init__(self, index, tier: str = "mmap"):
        kind, sizes = parse_tier(tier)
        rerank, stored = index.manifest.rerank, index.manifest.sizes
        missing = [str(s) for s in sizes or [] if s not in stored]
        if missing:
            raise StarbucksError(f"rerank tier {tier!r}: {', '.join(missing)} is not stored in {index.path} "
                                 f"(stored sizes: {', '.join(map(str, stored))})")
        self.kind, self.name = kind, tier
        self.sizes = [] if kind == "mmap" else list(sizes or rerank)
        self.every = sizes is None  # holds every rerank size of its index
        self.held: dict = {}
        for size in self.sizes:
            if kind == "float16":
                self.held[size] = np.array(index.vectors[size])  # a copy in RAM
            elif kind == "int8":
                self.held[size] = quantize(index.vectors[size])

    def check(self, index) -> None:
        """A one-line error unless the tier holds the sizes of ``index`` it names (every rerank size unless
        it names some), one row per document."""
        for size, held in self.held.items():
            rows = len(held.codes if isinstance(held, Quantized) else held)
            if size not in index.manifest.sizes or rows != len(index):
                raise StarbucksError(f"this {self.kind} rerank tier holds {rows} rows of {size}, which does not "
                                     f"match {index.path} ({len(index)} documents, stored sizes "
                                     f"{', '.join(map(str, index.manifest.sizes))})")
        if set(self.held) != set(self.sizes) or (self.every and self.kind != "mmap"
                                                 and set(self.sizes) != set(index.manifest.rerank)):
            raise StarbucksError(f"this {self.kind} rerank tier was loaded for another index than {index.path}")

    @property
    def nbytes(self) -> int:
        """Bytes the tier holds in RAM (0 for mmap: its pages belong to the page cache)."""
        return sum(int(m.nbytes) for m in self.held.values())

    def __repr__(self) -> str:
        return f"RerankTier({self.name!r}, {len(self.held)} sizes, {self.nbytes:,} bytes)"
