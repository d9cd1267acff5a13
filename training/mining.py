"""Hard-negative mining and Tevatron JSONL writing, from a BEIR-style corpus and train qrels.

Negatives are passages a first-stage ranker (BM25 via ``bm25s``, or a dense model at
its full size) puts high for a query but that are not judged relevant to it.
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from starbucks.corpus import iter_corpus
from starbucks.errors import InputError
from starbucks.topics import Qrels

Rankings = dict[str, list[str]]


def read_corpus(spec: str | Path) -> dict[str, str]:
    """``{docid: text}`` with title and text joined, as the indexer joins them."""
    return {doc.docid: doc.text for doc in iter_corpus(spec)}


def bm25_rankings(corpus: dict[str, str], queries: dict[str, str], depth: int, threads: int = 1) -> Rankings:
    """Top ``depth`` docids per query under BM25 (English stopwords, no stemming)."""
    import bm25s

    ids = list(corpus)
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize([corpus[d] for d in ids], stopwords="en", show_progress=False),
                    show_progress=False)
    qids = list(queries)
    tokens = bm25s.tokenize([queries[q] for q in qids], stopwords="en", show_progress=False)
    hits, _ = retriever.retrieve(tokens, k=min(depth, len(ids)), show_progress=False, n_threads=threads)
    return {qid: [ids[i] for i in row] for qid, row in zip(qids, hits)}


def model_rankings(corpus: dict[str, str], queries: dict[str, str], depth: int, model_path: str | None,
                   batch_size: int = 32) -> Rankings:
    """Top ``depth`` docids per query by exact search with a model at its largest size."""
    from starbucks.encoder import Encoder
    from starbucks.model import StarbucksModel
    from starbucks.sizes import Size

    model = StarbucksModel.load(model_path)
    size = Size(model.num_layers, model.hidden_size)
    encoder = Encoder(model, batch_size=batch_size)
    ids, qids = list(corpus), list(queries)
    docs = encoder.encode_passages([corpus[d] for d in ids], [size])[size]
    qs = encoder.encode_queries([queries[q] for q in qids], [size])[size]
    k = min(depth, len(ids))
    rankings = {}
    for start in range(0, len(qids), 256):
        s = qs[start:start + 256] @ docs.T
        top = np.argpartition(-s, k - 1, axis=1)[:, :k]
        for row, qid in enumerate(qids[start:start + 256]):
            order = top[row][np.argsort(-s[row, top[row]], kind="stable")]
            rankings[qid] = [ids[i] for i in order]
    return rankings


def pick_negatives(ranking: list[str], exclude: set[str], count: int, skip_top: int,
                   rng: random.Random) -> list[str]:
    """A random ``count`` of the ranked docids past ``skip_top``, leaving out the relevant ones."""
    candidates = [d for d in ranking[skip_top:] if d not in exclude]
    return rng.sample(candidates, count) if len(candidates) > count else candidates


def check_qrels(qrels: Qrels, queries: dict[str, str], corpus: dict[str, str], source: object) -> None:
    """Every judged query and document must exist, or the training data would be silently wrong."""
    for qid, docs in qrels.items():
        if qid not in queries:
            raise InputError(f"query {qid!r} is judged but not in the queries file", source)
        for docid in docs:
            if docid not in corpus:
                raise InputError(f"document {docid!r} (query {qid!r}) is not in the corpus", source)


def labelled_groups(corpus: dict[str, str], queries: dict[str, str], qrels: Qrels, rankings: Rankings,
                    num_negatives: int, skip_top: int, min_relevance: int, seed: int) -> Iterator[dict]:
    """One Tevatron record per judged query with at least one relevant document."""
    rng = random.Random(seed)
    for qid in sorted(qrels):
        relevant = [d for d, rel in sorted(qrels[qid].items()) if rel >= min_relevance]
        if not relevant:
            continue
        negatives = pick_negatives(rankings[qid], set(relevant), num_negatives, skip_top, rng)
        yield record(qid, queries[qid], [(d, corpus[d]) for d in relevant],
                     [(d, corpus[d]) for d in negatives])


def record(qid: str, query: str, positives: Iterable[tuple[str, str]], negatives: Iterable[tuple[str, str]]) -> dict:
    passage = lambda d, t: {"docid": d, "title": "", "text": t}  # noqa: E731
    return {"query_id": qid, "query": query,
            "positive_passages": [passage(d, t) for d, t in positives],
            "negative_passages": [passage(d, t) for d, t in negatives]}


def write_jsonl(records: Iterable[dict], out: str | Path) -> int:
    """Write records atomically; returns how many."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    n = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
    tmp.replace(out)
    return n


def rank(corpus: dict[str, str], queries: dict[str, str], negatives: str, depth: int,
         model: str | None, threads: int = 1) -> Rankings:
    """Rankings from the chosen negative miner."""
    if negatives == "bm25":
        return bm25_rankings(corpus, queries, depth, threads)
    if negatives == "model":
        return model_rankings(corpus, queries, depth, model)
    raise ValueError(f"negatives must be 'bm25' or 'model', not {negatives!r}")
