"""FAISS baselines over full-size vectors, with the project's own FAISS parameters.

HNSW (``indexes.faiss_index``: M=32, efConstruction=200) swept over efSearch, and IVF-PQ
(nlist about 4*sqrt(n), dim/4 bytes a vector; nprobe 16 and 64) wrapped in ``IndexRefineFlat``,
which re-ranks ``k * k_factor`` PQ candidates with the exact float32 vectors it holds in RAM.
"""
from __future__ import annotations

import faiss
import numpy as np

from indexes.faiss_index import fill_index, new_index

EF_SEARCH = (16, 32, 64, 128, 256, 512, 1024)
K_FACTORS = (1, 2, 4, 8, 16)
NPROBE = (16, 64)


def hnsw(vectors: np.ndarray) -> faiss.Index:
    index = new_index("hnsw", vectors.shape[1], len(vectors))
    fill_index(index, vectors)
    return index


def ivfpq_refine(vectors: np.ndarray) -> faiss.IndexRefineFlat:
    base = new_index("ivfpq", vectors.shape[1], len(vectors))
    base.pq.cp.min_points_per_centroid = 1  # small corpora: train the 256 codes per sub-vector without a warning each
    index = faiss.IndexRefineFlat(base)
    fill_index(index, vectors)
    return index


def sweep(index: faiss.Index) -> list[tuple[str, faiss.SearchParameters]]:
    """(name, search parameters) for each operating point of a baseline index."""
    if isinstance(index, faiss.IndexRefineFlat):
        return [(f"IVF-PQ+refine nprobe={n} k_factor={f}", faiss.IndexRefineSearchParameters(
                    k_factor=f, base_index_params=faiss.SearchParametersIVF(nprobe=n)))
                for n in NPROBE for f in K_FACTORS]
    return [(f"HNSW32 efSearch={ef}", faiss.SearchParametersHNSW(efSearch=ef)) for ef in EF_SEARCH]


def ram_bytes(index: faiss.Index) -> int:
    """What the index holds in memory: a flat index's stored vectors (serialising one would copy them
    all: 15 GB at 10M full-size documents), else its serialised size."""
    if isinstance(index, faiss.IndexFlatCodes):
        return int(index.codes.size())
    return int(faiss.serialize_index(index).nbytes)
