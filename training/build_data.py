"""``starbucks build-train-data``: a Tevatron JSONL file from a corpus, with mined negatives."""
from __future__ import annotations

from pathlib import Path

from starbucks.topics import read_qrels, read_topics
from training.mining import check_qrels, labelled_groups, rank, read_corpus, write_jsonl
from training.pseudo import pseudo_groups, pseudo_queries


def build_train_data(corpus: str | Path, queries: str | Path, qrels: str | Path, out: str | Path,
                     negatives: str = "bm25", model: str | None = None, depth: int = 100,
                     num_negatives: int = 30, skip_top: int = 0, min_relevance: int = 1,
                     seed: int = 42, threads: int = 1) -> int:
    """Judged queries with their relevant passages and mined hard negatives; returns the record count."""
    docs = read_corpus(corpus)
    topics = read_topics(queries)
    judgements = read_qrels(qrels)
    check_qrels(judgements, topics, docs, qrels)
    judged = {q: topics[q] for q in judgements}
    rankings = rank(docs, judged, negatives, depth, model, threads)
    return write_jsonl(
        labelled_groups(docs, topics, judgements, rankings, num_negatives, skip_top, min_relevance, seed), out)


def build_pseudo_data(corpus: str | Path, out: str | Path, count: int, negatives: str = "bm25",
                      model: str | None = None, depth: int = 100, num_negatives: int = 30,
                      skip_top: int = 0, seed: int = 42, threads: int = 1) -> int:
    """Label-free records: pseudo-queries cut from ``count`` passages, negatives mined for each."""
    docs = read_corpus(corpus)
    queries = pseudo_queries(docs, count, seed)
    rankings = rank(docs, {q: v[0] for q, v in queries.items()}, negatives, depth, model, threads)
    return write_jsonl(pseudo_groups(docs, queries, rankings, num_negatives, skip_top, seed), out)
