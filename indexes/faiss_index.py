"""FAISS indexes for shortlist sizes: exact (flat), graph (hnsw) or compressed (ivfpq)."""
from __future__ import annotations

import math

import faiss
import numpy as np

from indexes.manifest import BINARY_INDEX_TYPES
from starbucks.errors import StarbucksError

HNSW_M = 32
HNSW_EF_CONSTRUCTION = 200
HNSW_EF_SEARCH = 128
IVFPQ_MIN_DOCS = 1000


def gpu_count() -> int:
    """GPUs FAISS can use: 0 with the CPU build (faiss-cpu), or when none is visible."""
    get = getattr(faiss, "get_num_gpus", None)
    try:
        return int(get()) if get is not None else 0
    except RuntimeError:  # a GPU build on a machine without a usable driver
        return 0


_GPU_RESOURCES = None


def to_gpu(index: "faiss.Index", device: int = 0) -> "faiss.Index":
    """A flat or IVF index copied to GPU ``device`` when a GPU build of FAISS sees one; else ``index``.

    HNSW has no GPU version and stays on the CPU. The copy answers ``search`` like the
    original (GPU FAISS caps k at 2048 for flat and IVF indexes; deeper shortlists stay on the CPU).
    """
    global _GPU_RESOURCES
    if gpu_count() == 0 or not hasattr(faiss, "StandardGpuResources"):
        return index
    if not isinstance(index, (faiss.IndexFlat, faiss.IndexIVF)):
        return index
    if _GPU_RESOURCES is None:
        _GPU_RESOURCES = faiss.StandardGpuResources()
    try:
        return GpuShortlist(index, faiss.index_cpu_to_gpu(_GPU_RESOURCES, device, index))
    except RuntimeError:  # out of GPU memory, or a type this build cannot move: stay on the CPU
        return index


GPU_MAX_K = 2048


def gpu_exact(vectors: np.ndarray) -> "faiss.Index | None":
    """An exact inner-product index over a stored size's vectors on GPU 0 (for scans of sizes without a
    shortlist index), or None with the CPU build of FAISS or when the copy fails."""
    if gpu_count() == 0 or not hasattr(faiss, "StandardGpuResources"):
        return None
    index = faiss.IndexFlatIP(vectors.shape[1])
    fill_index(index, vectors)
    moved = to_gpu(index)
    return moved.gpu if isinstance(moved, GpuShortlist) else None


class GpuShortlist:
    """A shortlist index on the GPU with its CPU original, for searches deeper than the GPU allows."""

    def __init__(self, cpu: "faiss.Index", gpu: "faiss.Index"):
        self.cpu, self.gpu = cpu, gpu
        self.ntotal, self.d = cpu.ntotal, cpu.d

    def search(self, queries: np.ndarray, k: int, params=None):
        """Search parameters (nprobe) are passed to the CPU original, which is sure to take them."""
        if params is not None:
            return self.cpu.search(queries, k, params=params)
        return (self.gpu if k <= GPU_MAX_K else self.cpu).search(queries, k)

    def __getattr__(self, name):  # anything else (nprobe, reconstruct, ...) from the CPU original
        return getattr(self.cpu, name)


def ivfpq_params(num_docs: int, dim: int) -> dict:
    """nlist about 4*sqrt(n), 8-bit codes of 4 dims each (dim/4 bytes per vector)."""
    nlist = max(1, min(int(4 * math.sqrt(num_docs)), num_docs // 39))
    m = max(1, dim // 4)
    while dim % m:
        m -= 1
    return {"nlist": nlist, "m": m, "nbits": 8, "nprobe": min(nlist, 16)}


def new_index(index_type: str, dim: int, num_docs: int) -> faiss.Index:
    """An empty inner-product index of the given type."""
    if index_type == "flat":
        return faiss.IndexFlatIP(dim)
    if index_type == "hnsw":
        index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = HNSW_EF_SEARCH
        return index
    if index_type == "ivfpq":
        if num_docs < IVFPQ_MIN_DOCS:
            raise StarbucksError(
                f"ivfpq needs at least {IVFPQ_MIN_DOCS} documents to train (corpus has {num_docs}); use flat or hnsw"
            )
        p = ivfpq_params(num_docs, dim)
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFPQ(quantizer, dim, p["nlist"], p["m"], p["nbits"], faiss.METRIC_INNER_PRODUCT)
        index.nprobe = p["nprobe"]
        return index
    raise StarbucksError(f"unknown index type {index_type!r}: choose flat, hnsw or ivfpq")


TRAIN_ROWS = 100_000  # rows an index is trained on, at least
TRAIN_PER_LIST = 40  # and at least this many a list of an IVF index (k-means wants 39 a centroid)


def training_sample(index, n: int, seed: int = 0) -> np.ndarray:
    """The rows (sorted) an index is trained on: ``TRAIN_ROWS``, or ``TRAIN_PER_LIST`` per inverted list
    where that is more (4,000 lists at 1M documents: 160,000 rows), or every row of a smaller corpus."""
    size = min(n, max(TRAIN_ROWS, TRAIN_PER_LIST * getattr(index, "nlist", 0)))
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def fill_index(index: faiss.Index, vectors: np.ndarray, block: int = 65536, seed: int = 0) -> None:
    """Train (if needed) and add every row of a (memory-mapped) matrix, block by block."""
    n = vectors.shape[0]
    if not index.is_trained:
        index.train(np.ascontiguousarray(vectors[training_sample(index, n, seed)], dtype=np.float32))
    for start in range(0, n, block):
        index.add(np.ascontiguousarray(vectors[start : start + block], dtype=np.float32))


def param_name(index) -> str | None:
    """The search parameter a shortlist index (float or binary) takes per search: ``ef`` (HNSW),
    ``nprobe`` (IVF) or None."""
    index = getattr(index, "cpu", index)
    if isinstance(index, (faiss.IndexHNSW, faiss.IndexBinaryHNSW)):
        return "ef"
    if isinstance(index, (faiss.IndexIVF, faiss.IndexBinaryIVF)):
        return "nprobe"
    return None


def stored_param(index) -> int | None:
    """The value of that parameter stored in the index (what a search without one uses)."""
    name = param_name(index)
    index = getattr(index, "cpu", index)
    return index.hnsw.efSearch if name == "ef" else index.nprobe if name == "nprobe" else None


def param_values(index, tried: dict[str, tuple[int, ...]]) -> list[tuple[str, int]]:
    """The per-search parameters worth trying on ``index`` besides its stored one: ``tried[name]``,
    with nprobe capped at the index's nlist; none for a flat index."""
    name = param_name(index)
    if name is None:
        return []
    limit = getattr(index, "cpu", index).nlist if name == "nprobe" else None
    values = sorted({min(v, limit or v) for v in tried[name]} - {stored_param(index)})
    return [(name, v) for v in values]


def search_parameters(index, param: tuple[str, int], where: str) -> "faiss.SearchParameters":
    """FAISS search parameters for one search of ``index``; a ValueError when they do not fit its type."""
    name, value = param
    kind = param_name(index)
    if name != kind:
        what = {"ef": "an HNSW", "nprobe": "an IVF", None: "a flat"}[kind]
        raise ValueError(f"{where} has {what} shortlist index: {name}= does not apply"
                         + (f" (it takes {kind}=)" if kind else ""))
    if name == "ef":
        return faiss.SearchParametersHNSW(efSearch=value)
    return faiss.SearchParametersIVF(nprobe=value)


BINARY_PREFIX = "b"  # shortlist/b6x384.faiss: the sign bits of size 6x384


def sign_codes(vectors: np.ndarray) -> np.ndarray:
    """One bit per dimension, set where the value is positive, packed 8 to a byte (zero-padded to whole bytes)."""
    return np.packbits(np.asarray(vectors) > 0, axis=1)


def binary_index(vectors: np.ndarray, index_type: str = "flat", block: int = 65536,
                 seed: int = 0) -> "faiss.IndexBinary":
    """A Hamming index over the sign bits of a (memory-mapped) matrix, filled block by block: exact
    (``flat``), a graph (``hnsw``, efSearch stored as for float HNSW) or inverted lists (``ivf``, nlist
    about 4*sqrt(n), trained on a sample as ``training_sample`` draws it, nprobe 16 stored)."""
    n, bits = vectors.shape[0], 8 * math.ceil(vectors.shape[1] / 8)
    if index_type == "flat":
        index = faiss.IndexBinaryFlat(bits)
    elif index_type == "hnsw":
        index = faiss.IndexBinaryHNSW(bits, HNSW_M)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = HNSW_EF_SEARCH
    elif index_type == "ivf":
        nlist = max(1, min(int(4 * math.sqrt(n)), n // 39))
        index = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(bits), bits, nlist)
        index.train(sign_codes(vectors[training_sample(index, n, seed)]))
        index.nprobe = min(nlist, 16)
    else:
        raise StarbucksError(f"unknown binary index type {index_type!r}: choose {', '.join(BINARY_INDEX_TYPES)}")
    for start in range(0, n, block):
        index.add(sign_codes(vectors[start : start + block]))
    return index
