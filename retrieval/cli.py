"""The ``starbucks`` command: a thin layer over the library; every subcommand has --help."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from starbucks.errors import StarbucksError


def _quiet_transformers() -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def cmd_index(args) -> None:
    from indexes import build_index

    out = build_index(
        args.corpus, args.out, model=args.model, shortlist=args.shortlist, rerank=args.rerank,
        index_type=args.index_type, chunk_size=args.chunk_size, batch_size=args.batch_size,
        overwrite=args.overwrite, progress=not args.quiet,
    )
    print(f"index written to {out}")


def _budget(args):
    from retrieval.plan import Plan

    return Plan.parse(args.plan) if args.plan else args.budget


def cmd_search(args) -> None:
    from retrieval import Searcher

    searcher = Searcher(args.index, model=args.model)
    for query in args.query:
        r = searcher.search(query, k=args.k, budget=_budget(args), early_stop=args.early_stop)
        if args.json:
            print(json.dumps({"query": query, "plan": str(r.plan), "timings_ms": r.timings,
                              "hits": [{"docid": d, "score": s} for d, s in zip(r.docids, r.scores)]}))
            continue
        print(f"# {query}  (plan {r.plan}; " + ", ".join(f"{k} {v:.2f} ms" for k, v in r.timings.items()) + ")")
        for rank, (docid, s) in enumerate(zip(r.docids, r.scores), 1):
            print(f"{rank}\t{docid}\t{s:.4f}")


def _report(rows, title: str, output: Path | None) -> None:
    from retrieval.evaluate import format_table

    table = format_table(rows, title)
    print(table)
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps({"title": title, "rows": [r.to_dict() for r in rows]}, indent=2) + "\n")
        output.with_suffix(".md").write_text(table + "\n")


def cmd_evaluate(args) -> None:
    from retrieval import Searcher
    from retrieval.evaluate import depth_for, evaluate_searcher, parse_measures, size_plans
    from retrieval.plan import Plan
    from starbucks.topics import read_qrels, read_topics

    measures = parse_measures(args.measures)
    topics, qrels = read_topics(args.topics), read_qrels(args.qrels)
    searcher = Searcher(args.index, model=args.model)
    budgets: list = [Plan.parse(p) for p in args.plan] + list(args.budget)
    if args.all_sizes:
        budgets = size_plans(searcher, depth_for(measures)) + budgets
    if not budgets:
        budgets = [None]
    rows = [evaluate_searcher(searcher, topics, qrels, b, measures, batch=args.batch,
                              runs_dir=args.runs, progress=not args.quiet) for b in budgets]
    _report(rows, f"{args.index} on {args.topics}", args.output)


def cmd_bm25(args) -> None:
    from retrieval.bm25 import BM25, PyseriniBM25
    from retrieval.evaluate import depth_for, judged_topics, make_row, parse_measures, timed_rankings, write_trec
    from starbucks.topics import read_qrels, read_topics

    measures = parse_measures(args.measures)
    topics, qrels = read_topics(args.topics), read_qrels(args.qrels)
    engine = PyseriniBM25(args.pyserini_index) if args.pyserini_index else BM25(args.corpus, progress=not args.quiet)
    name = "BM25 (pyserini)" if args.pyserini_index else "BM25 (bm25s)"
    depth = depth_for(measures)
    rankings, latencies, wall = timed_rankings(
        judged_topics(topics, qrels), lambda qs: engine.search_batch(qs, depth), args.batch, name, not args.quiet
    )
    if args.runs:
        write_trec(Path(args.runs) / "bm25.trec", rankings, "bm25")
    _report([make_row(name, rankings, latencies, wall, qrels, measures, args.batch)], f"BM25 on {args.topics}", args.output)


def cmd_calibrate(args) -> None:
    from retrieval import Searcher
    from retrieval.calibrate import calibrate
    from retrieval.frontier import format_frontier
    from starbucks.topics import read_qrels, read_topics

    searcher = Searcher(args.index, model=args.model)
    frontier, _ = calibrate(searcher, read_topics(args.topics), read_qrels(args.qrels), args.measure,
                            args.tolerance, str(args.topics), progress=not args.quiet)
    path = frontier.save(searcher.index.path)
    print(format_frontier(frontier))
    print(f"frontier written to {path}")


def cmd_demo(args) -> None:
    from retrieval.demo import run_demo

    print(run_demo(args.out, progress=not args.quiet))


def _measure_args(p) -> None:
    from retrieval.evaluate import DEFAULT_MEASURES

    p.add_argument("--topics", required=True, help="queries: BEIR queries.jsonl or folder, qid<TAB>text, TREC topics, or irds:ID")
    p.add_argument("--qrels", required=True, help="judgements: BEIR qrels TSV, TREC qrels, or irds:ID")
    p.add_argument("--measures", nargs="+", default=list(DEFAULT_MEASURES), help="ir-measures names (default: %(default)s)")
    p.add_argument("--batch", type=int, default=1, help="queries per call: 1 times each query alone (latency), more measures throughput")
    p.add_argument("--runs", type=Path, help="write TREC run files into this folder")
    p.add_argument("--output", type=Path, help="write the results as JSON here (and a markdown table beside it)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="starbucks", description="Adaptive two-stage retrieval with Starbucks (2D Matryoshka) embeddings.")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("index", help="index a corpus: FAISS shortlist indexes plus stored vectors for reranking",
                       description="Index a corpus in one streaming pass. Interrupted, the same command resumes.")
    p.add_argument("corpus", help="a BEIR folder, a .jsonl (_id/id, title, text) or .tsv (id<TAB>text) file, or irds:ID")
    p.add_argument("--out", required=True, type=Path, help="the index folder to create")
    p.add_argument("--model", help="model folder or hub id (default: the shipped model)")
    p.add_argument("--shortlist", help="sizes with a FAISS index, e.g. 2x32,4x64 (default: the model's two smallest)")
    p.add_argument("--rerank", help="sizes stored for reranking, e.g. 6x384 (default: the model's other sizes)")
    p.add_argument("--index-type", default="flat", choices=["flat", "hnsw", "ivfpq"], help="FAISS index for shortlist sizes (default: %(default)s)")
    p.add_argument("--chunk-size", type=int, default=1024, help="documents per resumable chunk (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=32, help="documents per forward pass (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing index at --out")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("search", help="search an index", description="Search an index with a plan, a budget, or the best plan.")
    p.add_argument("index", type=Path)
    p.add_argument("query", nargs="+")
    p.add_argument("--k", type=int, default=10, help="results per query (default: %(default)s)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--budget", type=float, help="latency budget in milliseconds per query")
    group.add_argument("--plan", help="an explicit cascade, e.g. 2x32:1000,4x64:200,6x384:10")
    p.add_argument("--model", help="model folder or hub id (default: the one that built the index)")
    p.add_argument("--early-stop", action="store_true",
                   help="skip the middle stages when the shortlist is decisive (needs starbucks calibrate)")
    p.add_argument("--json", action="store_true", help="one JSON object per query")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("evaluate", help="evaluate plans, budgets or every stored size with ir-measures",
                       description="Evaluate over a topic set. With no --plan, --budget or --all-sizes: the best plan.")
    p.add_argument("index", type=Path)
    _measure_args(p)
    p.add_argument("--plan", action="append", default=[], help="a cascade to evaluate (repeatable)")
    p.add_argument("--budget", action="append", type=float, default=[], help="a latency budget in ms (repeatable)")
    p.add_argument("--all-sizes", action="store_true", help="exhaustive search at every stored size (the per-size table)")
    p.add_argument("--model", help="model folder or hub id (default: the one that built the index)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("bm25", help="evaluate the BM25 baseline the same way",
                       description="BM25 (k1=0.9, b=0.4 as Pyserini) with bm25s, or Pyserini over a Lucene index.")
    p.add_argument("corpus", nargs="?", help="the corpus (as for index); not needed with --pyserini-index")
    _measure_args(p)
    p.add_argument("--pyserini-index", help="a Lucene index: use Pyserini (needs the 'pyserini' extra and Java 21)")
    p.set_defaults(func=cmd_bm25)

    p = sub.add_parser("calibrate", help="measure a grid of plans on topics; budgets then pick from its frontier",
                       description="Run every plan the planner considers over judged topics, measure each one's "
                                   "effectiveness and latency on this machine, and keep the Pareto frontier in "
                                   "INDEX/calibration.json (with early-stopping margins for search --early-stop).")
    p.add_argument("index", type=Path)
    p.add_argument("--topics", required=True, help="queries: BEIR queries.jsonl or folder, qid<TAB>text, TREC topics, or irds:ID")
    p.add_argument("--qrels", required=True, help="judgements: BEIR qrels TSV, TREC qrels, or irds:ID")
    p.add_argument("--measure", default="nDCG@10", help="the ir-measures name to optimise (default: %(default)s)")
    p.add_argument("--tolerance", type=float, default=0.01,
                   help="early stopping may lose at most this fraction of a plan's effectiveness (default: %(default)s)")
    p.add_argument("--model", help="model folder or hub id (default: the one that built the index)")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("demo", help="index the bundled CACM corpus, evaluate it and show a search")
    p.add_argument("--out", type=Path, default=Path("demo-index"), help="where to put the demo index (default: %(default)s)")
    p.set_defaults(func=cmd_demo)

    try:
        from training.cli import add_parsers
    except ImportError:
        pass  # training not available in this install
    else:
        add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "bm25" and not (args.corpus or args.pyserini_index):
        parser.error("bm25 needs a corpus or --pyserini-index")
    _quiet_transformers()
    try:
        args.func(args)
    except (StarbucksError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
