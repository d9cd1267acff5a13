"""Indexes: FAISS shortlist indexes at small sizes plus memory-mapped vectors for reranking."""
from indexes.build import build_index
from indexes.index import Index
from indexes.manifest import FORMAT_VERSION, Manifest

__all__ = ["build_index", "Index", "Manifest", "FORMAT_VERSION"]
