"""Score fusion of a dense stage with BM25 over the same candidates.

* ``rrf``: reciprocal-rank fusion, 1/(60 + dense rank) + 1/(60 + BM25 rank), ranks from 1
  among the candidates (ties keep candidate order);
* ``linear:W``: both scores min-max normalised over the candidates, then W x dense +
  (1 - W) x BM25.
"""
from __future__ import annotations

import numpy as np

from retrieval.plan import RRF_K


def ranks(scores: np.ndarray) -> np.ndarray:
    """1-based rank of each score among ``scores``, best first; ties keep their order."""
    out = np.empty(len(scores), dtype=np.float64)
    out[np.argsort(-scores, kind="stable")] = np.arange(1, len(scores) + 1)
    return out


def minmax(scores: np.ndarray) -> np.ndarray:
    scores = scores.astype(np.float64)
    spread = scores.max() - scores.min() if len(scores) else 0.0
    return (scores - scores.min()) / spread if spread > 0 else np.zeros_like(scores)


def fuse(dense: np.ndarray, sparse: np.ndarray, how: str) -> np.ndarray:
    """Fused scores (float32) for candidates scored both ways; ``how`` as a plan's ``fuse=``."""
    if how == "rrf":
        fused = 1.0 / (RRF_K + ranks(dense)) + 1.0 / (RRF_K + ranks(sparse))
    else:
        w = float(how.partition(":")[2])
        fused = w * minmax(dense) + (1 - w) * minmax(sparse)
    return fused.astype(np.float32)
