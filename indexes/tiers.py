"""The rerank tier: where the vectors of an index's rerank sizes live while a searcher rescores.

* ``mmap``: the stored float16 files, memory-mapped; a rescoring reads the rows it needs in row order
  (the operating system's page cache decides what stays in memory).
* ``float16``: the same vectors copied into RAM (2 bytes a dimension).
* ``int8``: 8-bit codes per dimension in RAM (1 byte a dimension): each dimension's range over the
  corpus is cut into 255 steps, ``value ~ low + code * step``. A score is then
  ``q . low + (q * step) . code``, computed from the codes directly (a gather and a matrix product).
* ``residual``: for a size whose shortlist index is IVF-PQ, what its codes leave out: the vector minus
  its PQ reconstruction, turned by a fixed random rotation, in ``RESIDUAL_BITS``-bit codes with one
  scale a vector (bit-packed: 10 bits are 484 bytes a 384-dim vector, with its scale). A rerank of
  that size right after its IVF-PQ shortlist scores a candidate as its shortlist score (the query
  against the reconstruction) plus the rotated query against the decoded residual; at 1M documents
  this keeps the exact rerank's recall (``experiments/results/int8_tiers/``). Other reranks of that
  size read the memory-mapped rows.

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

__all__ = ["RERANK_TIERS", "RerankTier", "Quantized", "Residual", "check_tier", "ivfpq_shortlist", "quantize",
           "residual_codes"]
BLOCK = 65536
RESIDUAL_BITS = 10
ROTATION_SEED = 0


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


def pack10(values: np.ndarray) -> np.ndarray:
    """Signed codes in [-511, 511], ``[n, dim]`` with dim a multiple of 4, as 10 bits each: 5 bytes per 4."""
    v = (values.astype(np.int32) + 512).astype(np.uint64).reshape(len(values), -1, 4)
    word = v[..., 0] | (v[..., 1] << 10) | (v[..., 2] << 20) | (v[..., 3] << 30)  # 40 bits
    return (word[..., None] >> (8 * np.arange(5, dtype=np.uint64))).astype(np.uint8).reshape(len(values), -1)


def unpack10(packed: np.ndarray) -> np.ndarray:
    """The signed codes ``pack10`` packed, as float32 ``[n, dim]``: 16-bit arithmetic on each 5-byte group."""
    b = packed.reshape(len(packed), -1, 5).astype(np.uint16)
    v = np.empty((*b.shape[:2], 4), dtype=np.int16)
    v[..., 0] = b[..., 0] | ((b[..., 1] & 0x3) << 8)
    v[..., 1] = (b[..., 1] >> 2) | ((b[..., 2] & 0xF) << 6)
    v[..., 2] = (b[..., 2] >> 4) | ((b[..., 3] & 0x3F) << 4)
    v[..., 3] = (b[..., 3] >> 6) | (b[..., 4] << 2)
    return v.reshape(len(packed), -1).astype(np.float32) - 512


def rotation(dim: int, seed: int = ROTATION_SEED) -> np.ndarray:
    """A random orthogonal matrix (QR of a Gaussian one, signs fixed), the same for the same seed."""
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, dim)))
    return np.ascontiguousarray(q * np.sign(np.diag(r)), dtype=np.float32)


class Residual(NamedTuple):
    """A size's vectors minus their IVF-PQ reconstruction, rotated, as packed codes with one scale a vector:
    ``(vector - reconstruction) @ turn ~ unpack10(codes) * scale``."""

    codes: np.ndarray  # uint8 [n, padded_dim * 10 / 8]
    scale: np.ndarray  # float32 [n]
    turn: np.ndarray  # float32 [padded_dim, padded_dim], orthogonal

    @property
    def nbytes(self) -> int:
        return self.codes.nbytes + self.scale.nbytes + self.turn.nbytes

    def scores(self, query: np.ndarray, rows: np.ndarray, base: np.ndarray) -> np.ndarray:
        """``base`` (the shortlist's scores of ``rows``) plus one query against the rows' decoded residuals."""
        query = np.asarray(query, dtype=np.float32).reshape(-1)
        turned = np.zeros(len(self.turn), dtype=np.float32)
        turned[: len(query)] = query
        return base + (unpack10(self.codes[rows]) @ (turned @ self.turn)) * self.scale[rows]


def residual_codes(matrix, shortlist, block: int = BLOCK) -> Residual:
    """The residual tier of a stored (memory-mapped) matrix whose rows ``shortlist``, an IVF-PQ index,
    holds with ids equal to row numbers; read block by block."""
    import faiss

    ivf = faiss.extract_index_ivf(shortlist)
    n, dim = matrix.shape
    padded = -(-dim // 4) * 4
    turn = rotation(padded)
    top = 2 ** (RESIDUAL_BITS - 1) - 1
    codes = np.empty((n, padded * RESIDUAL_BITS // 8), dtype=np.uint8)
    scale = np.empty(n, dtype=np.float32)
    ivf.make_direct_map()
    try:
        for start in range(0, n, block):
            rows = np.arange(start, min(n, start + block))
            part = np.zeros((len(rows), padded), dtype=np.float32)
            part[:, :dim] = _rows32(matrix, rows) - ivf.reconstruct_n(start, len(rows))
            part = part @ turn
            s = np.abs(part).max(axis=1) / top
            scale[rows] = s
            codes[rows] = pack10(np.rint(part / np.maximum(s, 1e-30)[:, None]))
    finally:
        ivf.set_direct_map_type(faiss.DirectMap.NoMap)
    return Residual(codes, scale, turn)


def _rows32(matrix, rows: np.ndarray) -> np.ndarray:
    from indexes.index import _float_rows  # the rows exactly as rescoring reads them

    return _float_rows(matrix, rows).numpy()


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
            elif kind == "residual":
                self.held[size] = residual_codes(index.vectors[size], _ivfpq(index, size, tier))

    def check(self, index) -> None:
        """A one-line error unless the tier holds the sizes of ``index`` it names (every rerank size unless
        it names some), one row per document."""
        for size, held in self.held.items():
            rows = len(held.codes if isinstance(held, (Quantized, Residual)) else held)
            if size not in index.manifest.sizes or rows != len(index):
                raise StarbucksError(f"this {self.kind} rerank tier holds {rows} rows of {size}, which does not "
                                     f"match {index.path} ({len(index)} documents, stored sizes "
                                     f"{', '.join(map(str, index.manifest.sizes))})")
        if set(self.held) != set(self.sizes) or (self.every and self.kind != "mmap"
                                                 and set(self.sizes) != set(index.manifest.rerank)):
            raise StarbucksError(f"this {self.kind} rerank tier was loaded for another index than {index.path}")

    def residual(self, size) -> "Residual | None":
        """The residual codes this tier holds for ``size``, if any."""
        held = self.held.get(size)
        return held if isinstance(held, Residual) else None

    @property
    def nbytes(self) -> int:
        """Bytes the tier holds in RAM (0 for mmap: its pages belong to the page cache)."""
        return sum(int(m.nbytes) for m in self.held.values())

    def __repr__(self) -> str:
        return f"RerankTier({self.name!r}, {len(self.held)} sizes, {self.nbytes:,} bytes)"


def ivfpq_shortlist(index, size):
    """``size``'s shortlist index (its CPU original) if it is IVF-PQ, else None."""
    import faiss

    shortlist = index.shortlist.get(size)
    shortlist = getattr(shortlist, "cpu", shortlist)
    return shortlist if isinstance(shortlist, faiss.IndexIVFPQ) else None


def _ivfpq(index, size, tier: str):
    """``size``'s IVF-PQ shortlist index (on the CPU), else a one-line error naming the tier."""
    found = ivfpq_shortlist(index, size)
    if found is None:
        other = index.shortlist.get(size)
        has = type(getattr(other, "cpu", other)).__name__ if other is not None else "none"
        raise StarbucksError(f"rerank tier {tier!r}: a residual tier needs an IVF-PQ shortlist index at {size}, and "
                             f"{index.path} has {has} (starbucks index --index-type ivfpq)")
    return found
