"""Per-size and per-plan effectiveness and speed of one model, plus indexing cost and BM25.

For each collection: build an index with ``starbucks index`` in a child process (its docs/s and
peak RSS are measured), then evaluate every stored size exhaustively, several cascades and
budgets (one query at a time and in batches of 32), and BM25; write JSON and markdown.

    python -m experiments.sizes_and_plans --datasets scifact nfcorpus-dev dl19-pool
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from experiments import runtime
from experiments.datasets import COLLECTIONS, ROOT
from retrieval import Plan, Searcher
from retrieval.bm25 import BM25
from retrieval.evaluate import (
    DEFAULT_MEASURES, evaluate_searcher, format_table, judged_topics, make_row, parse_measures,
    size_plans, timed_rankings,
)
from retrieval.plan import Stage
from starbucks.corpus import count_docs
from starbucks.topics import read_qrels, read_topics

HERE = Path(__file__).resolve().parent


def build(name: str, corpus: str, out: Path, model: str | None, extra: list[str]) -> dict:
    """Index in a child process; wall time, docs/s and the child's peak RSS."""
    cmd = [sys.executable, "-m", "starbucks_cli", "-q", "index", corpus, "--out", str(out), *extra]
    if model:
        cmd += ["--model", model]
    if out.exists():
        return {"reused": True}
    start = time.perf_counter()
    child = subprocess.Popen(cmd)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"indexing {name} failed: {' '.join(cmd)}")
    docs = count_docs(corpus)
    return {"docs": docs, "seconds": round(wall, 1), "docs_per_s": round(docs / wall, 1),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def cascades(searcher: Searcher) -> list[Plan]:
    """Three or four cascades from the index's own sizes: shallow, deep, and via a middle size."""
    m = searcher.index.manifest
    small, full = m.shortlist[0], m.sizes[-1]
    plans = [Plan([Stage(small, 1000), Stage(full, 100)]), Plan([Stage(small, 200), Stage(full, 10)])]
    middle = [s for s in m.sizes if s not in (small, full) and s.layer >= small.layer and s.dim >= small.dim]
    if middle:
        plans.append(Plan([Stage(small, 1000), Stage(middle[0], 200), Stage(full, 10)]))
    if len(m.shortlist) > 1:
        plans.append(Plan([Stage(m.shortlist[1], 500), Stage(full, 50)]))
    return plans


def run(name: str, args) -> dict:
    c = COLLECTIONS[name]
    index_dir = args.indexes / f"{name}-{args.tag}"
    indexing = build(name, c.corpus, index_dir, args.model, args.index_args)
    searcher = Searcher(index_dir)
    qrels = read_qrels(c.qrels)
    topics = judged_topics(read_topics(c.topics), qrels)
    measures = parse_measures(args.measures)
    plans = size_plans(searcher, 1000) + cascades(searcher)
    rows = []
    for batch in (1, 32):
        for plan in plans:
            rows.append(evaluate_searcher(searcher, topics, qrels, plan, measures, batch=batch, progress=False))
        for budget in args.budgets:
            try:
                rows.append(evaluate_searcher(searcher, topics, qrels, budget, measures, batch=batch, progress=False))
            except ValueError as e:
                print(f"{name}: budget {budget} ms skipped: {e}")
    bm25 = BM25(c.corpus, progress=False)
    depth = 1000
    for batch in (1, 32):
        rankings, latencies, wall = timed_rankings(topics, lambda qs: bm25.search_batch(qs, depth), batch, "bm25", False)
        rows.append(make_row("BM25 (bm25s)", rankings, latencies, wall, qrels, measures, batch))
    return {
        "collection": name, "note": c.note, "queries": len(topics), "documents": len(searcher.index),
        "model": searcher.index.manifest.model_name, "model_fingerprint": searcher.index.manifest.model_fingerprint,
        "indexing": indexing, "cost_model": searcher.planner.costs.to_dict(),
        "rows": [r.to_dict() for r in rows], "table": format_table(rows, f"{name}: {c.note}"),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=runtime.description(__doc__))
    p.add_argument("--datasets", nargs="+", default=["scifact", "nfcorpus-dev", "dl19-pool"], choices=sorted(COLLECTIONS))
    p.add_argument("--model", help="model folder or hub id (default: the shipped default)")
    p.add_argument("--tag", default="default", help="names the index folders and the results file")
    p.add_argument("--index-args", nargs=argparse.REMAINDER, default=[], help="extra arguments for starbucks index (last)")
    p.add_argument("--budgets", nargs="+", type=float, default=[10.0, 20.0, 50.0])
    p.add_argument("--measures", nargs="+", default=list(DEFAULT_MEASURES))
    p.add_argument("--threads", type=int, help="torch and FAISS threads (default: all cores)")
    p.add_argument("--indexes", type=Path, default=ROOT / "experiments" / "indexes", help="where indexes are kept")
    p.add_argument("--out", type=Path, default=HERE / "results" / "sizes_and_plans")
    args = p.parse_args(argv)
    runtime.setup(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    results = {
        **runtime.record("experiments.sizes_and_plans", args.threads, argv),
        "collections": [],
    }
    for name in args.datasets:
        print(f"== {name}", flush=True)
        results["collections"].append(run(name, args))
        print(results["collections"][-1]["table"], flush=True)
        (args.out / f"{args.tag}.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [f"# Sizes and plans: {args.tag}", "", f"`{results['command']}`", "",
             f"Machine: {results['machine']}", ""]
    for c in results["collections"]:
        i = c["indexing"]
        lines += [c["table"], "", f"Indexing: {json.dumps(i)}", ""]
    (args.out / f"{args.tag}.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
