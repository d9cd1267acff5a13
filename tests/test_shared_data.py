"""Integration on excerpts of the local collections with the default model (skipped without them)."""
import json

import pytest

from indexes import build_index
from retrieval import Plan, Searcher
from retrieval.evaluate import evaluate_searcher, parse_measures
from starbucks.topics import read_qrels, read_topics

pytestmark = pytest.mark.slow


def excerpt(shared_data, tmp_path, name, split, n_queries):
    """The judged documents of the first queries plus the corpus's first 200 others."""
    folder = shared_data / name
    qrels = read_qrels(folder / "qrels" / f"{split}.tsv")
    topics = {q: t for q, t in read_topics(folder).items() if q in qrels}
    chosen = dict(list(topics.items())[:n_queries])
    wanted = {d for q in chosen for d in qrels[q]}
    lines, others = [], 0
    with open(folder / "corpus.jsonl") as f:
        for line in f:
            docid = json.loads(line)["_id"]
            if docid in wanted or others < 200:
                others += docid not in wanted
                lines.append(line)
    (tmp_path / "corpus.jsonl").write_text("".join(lines))
    (tmp_path / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in chosen.items()))
    return tmp_path / "corpus.jsonl", read_topics(tmp_path / "queries.jsonl"), {q: qrels[q] for q in chosen}


def test_scifact_excerpt_default_model_and_cascade(shared_data, tmp_path):
    corpus, topics, qrels = excerpt(shared_data, tmp_path, "scifact", "test", 30)
    index = build_index(corpus, tmp_path / "idx", progress=False)
    searcher = Searcher(index)
    measures = parse_measures(["nDCG@10"])
    full = searcher.index.sizes[-1]
    small = searcher.index.manifest.shortlist[0]
    exact = evaluate_searcher(searcher, topics, qrels, Plan.exhaustive(full, 100), measures, progress=False)
    cascade = evaluate_searcher(searcher, topics, qrels, Plan.parse(f"{small}:100,{full}:100"), measures, progress=False)
    assert exact.metrics["nDCG@10"] > 0.6
    assert cascade.metrics["nDCG@10"] >= 0.95 * exact.metrics["nDCG@10"]


def test_dl19_pool_official_bm25_run_reproduces(shared_data):
    """The pool's BM25 run scored with the official qrels gives Pyserini's 0.5058."""
    from retrieval.evaluate import score

    folder = shared_data / "msmarco-passage" / "dl19"
    rankings = {}
    for line in open(next((folder / "runs").glob("*__BM25_dl19.txt"))):
        qid, _, docid, rank, *_ = line.split()
        rankings.setdefault(qid, []).append((int(rank), docid))
    rankings = {q: [d for _, d in sorted(v)] for q, v in rankings.items()}
    got = score(rankings, read_qrels(folder / "qrels" / "test.tsv"), parse_measures(["nDCG@10"]))
    assert got["nDCG@10"] == pytest.approx(0.5058, abs=5e-4)
