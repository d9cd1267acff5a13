"""``starbucks calibrate``: measure the planner's plans on judged topics and keep their frontier."""
from __future__ import annotations

from pathlib import Path

from starbucks_cli.common import add_model_args, add_rerank_tier_arg, check_index_args, check_input, open_searcher


def add_parser(sub) -> None:
    p = sub.add_parser("calibrate", help="measure a grid of plans on topics; budgets then pick from its frontier",
                       description="Run every plan the planner considers over judged topics, measure each one's "
                                   "effectiveness and latency on this machine, and keep the Pareto frontier in "
                                   "INDEX/calibration.json (with early-stopping margins for search --early-stop). "
                                   "With BM25 in the index it takes at least two minutes: BM25 alone, the cheapest "
                                   "plan, is timed every few seconds through them, so that its price holds through "
                                   "the machine's slow spells.")
    p.add_argument("index", type=Path)
    p.add_argument("--topics", required=True, help="queries: BEIR queries.jsonl or folder, qid<TAB>text, TREC topics, or irds:ID")
    p.add_argument("--qrels", required=True, help="judgements: BEIR qrels TSV, TREC qrels, or irds:ID")
    p.add_argument("--measure", default="nDCG@10", help="the ir-measures name to optimise (default: %(default)s)")
    p.add_argument("--tolerance", type=float, default=0.01,
                   help="early stopping may lose at most this fraction of a plan's effectiveness (default: %(default)s)")
    p.add_argument("--remeasure", action="store_true",
                   help="also measure the cost model (costs.json) again, even where one measured here is cached")
    p.add_argument("--no-int8-queries", action="store_true",
                   help="measure plans with the searcher's encoder only; by default, with the ONNX fp32 encoder, "
                        "every plan is also measured with its query encoded by the int8 graphs (encoder=onnx-int8)")
    add_model_args(p)
    add_rerank_tier_arg(p)
    p.set_defaults(func=run, check=check)


def check(args) -> None:
    check_index_args(args)
    check_input(args.topics, "topics")
    check_input(args.qrels, "qrels")


def run(args) -> None:
    from retrieval.calibrate import calibrate
    from retrieval.frontier import format_frontier
    from starbucks.topics import read_qrels, read_topics

    topics, qrels = read_topics(args.topics), read_qrels(args.qrels)
    searcher = open_searcher(args, args.index)
    frontier, _ = calibrate(searcher, topics, qrels, args.measure, args.tolerance, str(args.topics),
                            progress=not args.quiet, remeasure=args.remeasure,
                            query_encoders=() if args.no_int8_queries else None)
    path = frontier.save(searcher.index.path)
    print(format_frontier(frontier))
    print(f"frontier written to {path}")
