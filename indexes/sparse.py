"""BM25 stored in an index folder (``bm25/``, bm25s's plain files, memory-mapped), rows in index order.

Tokenisation follows the BM25 baseline: English stop words and Snowball stemming, with
Pyserini's k1=0.9, b=0.4, so a plan's ``bm25`` stage ranks as ``starbucks bm25`` does.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

FOLDER = "bm25"
K1, B = 0.9, 0.4
WORDS = re.compile(r"(?u)\b\w\w+\b").findall  # bm25s.tokenize's default token pattern


def _stemmer():
    try:
        import Stemmer

        return Stemmer.Stemmer("english")
    except ImportError:  # pragma: no cover - PyStemmer is a core dependency
        return None


def build_sparse(texts: Iterable[str], folder: Path, k1: float = K1, b: float = B, progress: bool = False) -> None:
    """Index ``texts`` (one per row, in index order) with BM25 into ``folder``."""
    import bm25s

    tokens = bm25s.tokenize(list(texts), stopwords="en", stemmer=_stemmer(), show_progress=progress)
    retriever = bm25s.BM25(k1=k1, b=b)
    retriever.index(tokens, show_progress=progress)
    retriever.save(str(folder))


PAGE = 4096


def resident(array: np.ndarray) -> None:
    """Read one byte of every page of a memory-mapped array, so that its pages are mapped into this
    process before the first search rather than during it. A search touches only its terms' postings,
    so without this each new term pays for faulting its pages in (on the DL19 pool, 67-83 minor faults
    in a first pass over its topics, none after: ``python -m experiments.cold_paths``), and calibration,
    whose topics had long been searched, under-stated what a search of new words costs."""
    flat = array.reshape(-1).view(np.uint8) if array.flags.c_contiguous else None
    if flat is not None and flat.size:
        int(flat[::PAGE].max())


class SparseIndex:
    """BM25 over an index's rows: top rows for a query, or every row's score for fusion."""

    def __init__(self, folder: Path):
        import bm25s

        self.folder = Path(folder)
        from bm25s.stopwords import STOPWORDS_EN

        self._stemmer = _stemmer()
        if self._stemmer is not None:
            # No cache of stems for queries: a service meets new words all the time, and a cache that
            # repeated topics fill makes a search's cost depend on what ran before it (a first pass over
            # new topics 16 us a query, a second 5 us; uncached, 8 us every time).
            self._stemmer.maxCacheSize = 0
        self._stopwords = frozenset(STOPWORDS_EN)
        self.retriever = bm25s.BM25.load(str(folder), mmap=True)
        arrays = self.retriever.scores  # the precomputed per-term scores, CSC: a term's rows and their scores
        # Plain ndarray views of the memory maps: each slice of a numpy.memmap builds a subclass object.
        self._data, self._indices, self._indptr = (np.asarray(arrays[key]).view(np.ndarray)
                                                   for key in ("data", "indices", "indptr"))
        self._rows = int(arrays["num_docs"])
        for array in (self._data, self._indices, self._indptr):
            resident(array)

    def tokens(self, queries: Sequence[str]) -> list[list[str]]:
        """Each query's terms as ``bm25s.tokenize`` gives them for the index (lower case, its token pattern,
        English stop words out, Snowball stems, in order), without its per-call set-up: at one short query
        a search, building its stop-word set and progress bars cost more than the tokens."""
        out = []
        for query in queries:
            words = [w for w in WORDS(query.lower()) if w not in self._stopwords]
            out.append(self._stemmer.stemWords(words) if self._stemmer is not None else words)
        return out

    def scores(self, tokens: list[str]) -> np.ndarray:
        """Every row's BM25 score for one tokenised query (float32), as bm25s's ``get_scores`` sums them
        (terms outside the vocabulary count nothing, a repeated term twice), one vectorised add per
        term: a term's postings hold each row once. No terms: every score 0."""
        vocab = self.retriever.vocab_dict
        ids = [vocab[t] for t in tokens if t in vocab]
        out = np.zeros(self._rows, dtype=np.float32)
        for term in ids:
            start, end = self._indptr[term], self._indptr[term + 1]
            out[self._indices[start:end]] += self._data[start:end]
        if self.retriever.nonoccurrence_array is not None and ids:
            out += self.retriever.nonoccurrence_array[ids].sum()
        return out

    def search(self, queries: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """Top-k (scores, rows) per query, best first (ties by row), and each query's full score vector."""
        all_scores = [self.scores(t) for t in self.tokens(queries)]
        n = len(all_scores[0]) if all_scores else 0
        k = min(k, n)
        top_s = np.empty((len(all_scores), k), dtype=np.float32)
        top_i = np.empty((len(all_scores), k), dtype=np.int64)
        for i, s in enumerate(all_scores):
            if k < n:  # the k best; at the cut, the tied rows in row order, as any deeper ranking has them
                part = np.argpartition(-s, k - 1)[:k]
                cut = s[part].min()
                above = part[s[part] > cut]
                part = np.concatenate([above, np.flatnonzero(s == cut)[: k - len(above)]])
            else:
                part = np.arange(n)
            order = part[np.lexsort((part, -s[part]))]
            top_s[i], top_i[i] = s[order], order
        return top_s, top_i, all_scores
