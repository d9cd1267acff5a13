"""``starbucks evaluate`` and ``starbucks bm25``: score plans, budgets, sizes or BM25 on judged topics."""
from __future__ import annotations

import json
from pathlib import Path

from starbucks_cli.common import (
    add_model_args, add_rerank_tier_arg, add_verify_arg, check_index_args, check_input, check_text_arg,
    check_writable_dir, check_writable_file, open_searcher, positive_float, positive_int,
)


def add_measure_args(p) -> None:
    p.add_argument("--topics", required=True, help="queries: BEIR queries.jsonl or folder, qid<TAB>text, TREC topics, or irds:ID")
    p.add_argument("--qrels", required=True, help="judgements: BEIR qrels TSV, TREC qrels, or irds:ID")
    p.add_argument("--measures", nargs="+", default=["nDCG@10", "RR@10", "R@1000"], help="ir-measures names (default: %(default)s)")
    p.add_argument("--batch", type=positive_int, default=1, help="queries per call: 1 times each query alone (latency), more measures throughput")
    p.add_argument("--runs", type=Path, help="write TREC run files into this folder")
    p.add_argument("--output", type=Path, help="write the results as JSON here (and a markdown table beside it)")


def check_measure_args(args) -> None:
    check_input(args.topics, "topics")
    check_input(args.qrels, "qrels")
    if args.runs:
        check_writable_dir(args.runs, "run files")
    if args.output:
        check_writable_file(args.output, "the results")


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="evaluate plans, budgets or every stored size with ir-measures",
                       description="Evaluate over a topic set. With no --plan, --budget or --all-sizes: the best plan.")
    p.add_argument("index", type=Path)
    add_measure_args(p)
    p.add_argument("--plan", action="append", default=[], help="a cascade to evaluate (repeatable)")
    p.add_argument("--budget", action="append", type=positive_float, default=[], help="a latency budget in ms (repeatable)")
    p.add_argument("--all-sizes", action="store_true", help="exhaustive search at every stored size (the per-size table)")
    add_model_args(p)
    add_verify_arg(p)
    add_rerank_tier_arg(p)
    p.set_defaults(func=run, check=check)

    p = sub.add_parser("bm25", help="evaluate the BM25 baseline the same way",
                       description="BM25 (k1=0.9, b=0.4 as Pyserini) with bm25s, or Pyserini over a Lucene index.")
    p.add_argument("corpus", nargs="?", help="the corpus (as for index); not needed with --pyserini-index")
    add_measure_args(p)
    p.add_argument("--pyserini-index", help="a Lucene index: use Pyserini (needs the 'pyserini' extra and Java 21)")
    p.set_defaults(func=run_bm25, check=check_bm25)


def check(args) -> None:
    check_index_args(args)
    for plan in args.plan:
        check_text_arg(plan, "plan")
    check_measure_args(args)


def check_bm25(args) -> None:
    from starbucks.errors import StarbucksError

    if not (args.corpus or args.pyserini_index):
        raise StarbucksError("bm25 needs a corpus or --pyserini-index")
    if args.corpus:
        check_input(args.corpus, "corpus")
    if args.pyserini_index:
        check_input(args.pyserini_index, "Lucene index")
    check_measure_args(args)


def report(rows, title: str, output: Path | None, command: list[str] | None = None) -> None:
    """Print the table; with ``output``, write it as JSON (with provenance) and markdown."""
    from starbucks.provenance import provenance
    from retrieval.evaluate import format_table

    table = format_table(rows, title)
    print(table)
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        data = {"title": title, "rows": [r.to_dict() for r in rows], **provenance(command)}
        output.write_text(json.dumps(data, indent=2) + "\n")
        output.with_suffix(".md").write_text(table + "\n")


def run(args) -> None:
    from retrieval.evaluate import check_coverage, depth_for, evaluate_searcher, parse_measures, size_plans
    from retrieval.plan import Plan
    from starbucks.topics import read_qrels, read_topics

    measures = parse_measures(args.measures)
    plans = [Plan.parse(p) for p in args.plan]
    topics, qrels = read_topics(args.topics), read_qrels(args.qrels)
    searcher = open_searcher(args, args.index)
    check_coverage(qrels, topics, searcher.index.docids, args.qrels)
    budgets: list = plans + list(args.budget)
    if args.all_sizes:
        budgets = size_plans(searcher, depth_for(measures)) + budgets
    if not budgets:
        budgets = [None]
    written: set[str] = set()
    rows = [evaluate_searcher(searcher, topics, qrels, b, measures, batch=args.batch, runs_dir=args.runs,
                              progress=not args.quiet, written=written) for b in budgets]
    report(rows, f"{args.index} on {args.topics}", args.output, args.argv)


def run_bm25(args) -> None:
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
        write_trec(Path(args.runs) / "bm25.trec", rankings, "pyserini-bm25" if args.pyserini_index else "bm25s-bm25")
    report([make_row(name, rankings, latencies, wall, qrels, measures, args.batch)], f"BM25 on {args.topics}", args.output, args.argv)
