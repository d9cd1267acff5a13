"""``starbucks build-train-data``: a Tevatron JSONL file from a corpus, with mined negatives."""
from __future__ import annotations

import random
from pathlib import Path

from starbucks.errors import InputError
from starbucks.topics import Qrels, read_qrels, read_topics
from training.mining import check_qrels, labelled_groups, rank, read_corpus, write_jsonl
from training.pseudo import pseudo_groups, pseudo_queries

SEED = 42  # default seed: the held-out queries and the sampled negatives


def build_train_data(corpus: str | Path, queries: str | Path, qrels: str | Path, out: str | Path,
                     negatives: str = "bm25", model: str | None = None, depth: int = 100,
                     num_negatives: int = 30, skip_top: int = 0, min_relevance: int = 1,
                     seed: int = SEED, threads: int = 1, holdout: int = 0) -> int:
    """Judged queries with their relevant passages and mined hard negatives; returns the record count.

    ``holdout`` queries (drawn with ``seed``) stay out of the file; their judgements go to
    :func:`holdout_path` so a run can be validated on queries it never saw.
    """
    docs = read_corpus(corpus)
    topics = read_topics(queries)
    judgements = read_qrels(qrels)
    check_qrels(judgements, topics, docs, qrels)
    if holdout:
        judgements, held = split_holdout(judgements, holdout, seed, qrels)
        write_qrels(held, holdout_path(out))
    judged = {q: topics[q] for q in judgements}
    rankings = rank(docs, judged, negatives, depth, model, threads)
    return write_jsonl(
        labelled_groups(docs, topics, judgements, rankings, num_negatives, skip_top, min_relevance, seed), out)


def holdout_path(out: str | Path) -> Path:
    """Where the held-out judgements of training file ``out`` go: ``NAME.holdout.tsv`` beside it."""
    out = Path(out)
    stem = out.name.removesuffix(".gz").removesuffix(".jsonl")
    return out.with_name(stem + ".holdout.tsv")


def split_holdout(qrels: Qrels, count: int, seed: int, source: object) -> tuple[Qrels, Qrels]:
    """(kept, held out): ``count`` judged queries drawn at random, the same ones for the same seed."""
    if not 0 < count < len(qrels):
        raise InputError(f"--holdout must be between 1 and {len(qrels) - 1} (the judged queries less one)", source)
    held = set(random.Random(seed).sample(sorted(qrels), count))
    return ({q: d for q, d in qrels.items() if q not in held}, {q: d for q, d in qrels.items() if q in held})


def write_qrels(qrels: Qrels, path: Path) -> None:
    """BEIR-style qrels TSV, written whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    lines = [f"{q}\t{d}\t{rel}\n" for q in sorted(qrels) for d, rel in sorted(qrels[q].items())]
    tmp.write_text("query-id\tcorpus-id\tscore\n" + "".join(lines), encoding="utf-8")
    tmp.replace(path)


def build_pseudo_data(corpus: str | Path, out: str | Path, count: int, negatives: str = "bm25",
                      model: str | None = None, depth: int = 100, num_negatives: int = 30,
                      skip_top: int = 0, seed: int = SEED, threads: int = 1) -> int:
    """Label-free records: pseudo-queries cut from ``count`` passages, negatives mined for each."""
    docs = read_corpus(corpus)
    queries = pseudo_queries(docs, count, seed)
    rankings = rank(docs, {q: v[0] for q, v in queries.items()}, negatives, depth, model, threads)
    return write_jsonl(pseudo_groups(docs, queries, rankings, num_negatives, skip_top, seed), out)
