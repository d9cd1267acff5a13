"""The demo: index the bundled CACM collection, evaluate a few plans against BM25, show one search."""
from __future__ import annotations

from pathlib import Path

from indexes import Index, build_index
from indexes.manifest import MANIFEST
from retrieval.bm25 import BM25
from retrieval.evaluate import (
    DEFAULT_MEASURES, evaluate_searcher, format_table, judged_topics, make_row, parse_measures,
    size_plans, timed_rankings,
)
from retrieval.plan import Plan, Stage
from retrieval.searcher import Searcher
from starbucks.model import StarbucksModel
from starbucks.topics import read_qrels, read_topics

DEMO_DATA = Path(__file__).resolve().parent.parent / "starbucks" / "data" / "cacm"
DEMO_QUERY = "parallel algorithms for sorting"


def run_demo(out: Path, progress: bool = True) -> str:
    """Build (or reuse) the demo index and return the report as markdown."""
    model = StarbucksModel.load()
    if (out / MANIFEST).is_file() and Index(out).manifest.model_fingerprint == model.fingerprint():
        print(f"reusing the index in {out}")
    else:
        build_index(DEMO_DATA, out, model=model, overwrite=out.exists(), progress=progress)
    searcher = Searcher(out, model=model)
    topics, qrels = read_topics(DEMO_DATA), read_qrels(DEMO_DATA / "qrels" / "test.tsv")
    measures = parse_measures(DEFAULT_MEASURES)
    manifest = searcher.index.manifest
    full = manifest.sizes[-1]
    widest = max(manifest.shortlist, key=lambda s: (s.dim, s.layer))  # the shortlist that ranks best
    plans = size_plans(searcher, 1000) + [Plan([Stage(s, 1000), Stage(full, 1000)]) for s in manifest.shortlist]
    plans.append(Plan([Stage(widest, 200), Stage(full, 200)]))
    rows = [evaluate_searcher(searcher, topics, qrels, p, measures, progress=progress) for p in plans]
    bm25 = BM25(DEMO_DATA, progress=False)
    rankings, latencies, wall = timed_rankings(
        judged_topics(topics, qrels), lambda qs: bm25.search_batch(qs, 1000), 1, "BM25", progress
    )
    rows.append(make_row("BM25 (bm25s)", rankings, latencies, wall, qrels, measures, 1))
    result = searcher.search(DEMO_QUERY, k=5, budget=Plan([Stage(widest, 200), Stage(full, 5)]))
    hits = "\n".join(f"{i}. {d}  {s:.4f}" for i, (d, s) in enumerate(zip(result.docids, result.scores), 1))
    stages = ", ".join(f"{k} {v:.2f} ms" for k, v in result.timings.items())
    return (
        format_table(rows, f"CACM ({len(judged_topics(topics, qrels))} judged queries), model {manifest.model_name}")
        + f"\n\nsearch {DEMO_QUERY!r} with plan {result.plan}:\n{hits}\n({stages})"
    )
