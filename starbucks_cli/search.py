"""``starbucks search``: one or more queries against an index."""
from __future__ import annotations

import json
from pathlib import Path

from starbucks_cli.common import (
    add_model_args, add_rerank_tier_arg, add_verify_arg, check_index_args, check_text_arg, open_searcher, positive_float,
    positive_int,
)


def add_parser(sub) -> None:
    p = sub.add_parser("search", help="search an index", description="Search an index with a plan, a budget, or the best plan.")
    p.add_argument("index", type=Path)
    p.add_argument("query", nargs="+")
    p.add_argument("--k", type=positive_int, default=10, help="results per query (default: %(default)s)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--budget", type=positive_float, help="latency budget in milliseconds per query")
    group.add_argument("--plan", help="an explicit cascade, e.g. 2x32:1000,4x64:200,6x384:10")
    add_model_args(p)
    add_verify_arg(p)
    add_rerank_tier_arg(p)
    p.add_argument("--early-stop", action="store_true",
                   help="skip the middle stages when the shortlist is decisive (needs starbucks calibrate)")
    p.add_argument("--warm-up", action="store_true",
                   help="search once, untimed, with each plan the search can take before the queries, so the "
                        "timings shown leave out each plan's one-time set-up (as a service that warmed up)")
    p.add_argument("--json", action="store_true", help="one JSON object per query")
    p.set_defaults(func=run, check=check)


def check(args) -> None:
    check_index_args(args)
    for q in args.query:
        check_text_arg(q, "query")
    if args.plan:
        check_text_arg(args.plan, "plan")


def budget(args):
    from retrieval.plan import Plan

    return Plan.parse(args.plan) if args.plan else args.budget


def run(args) -> None:
    searcher = open_searcher(args, args.index)
    if args.warm_up:
        if args.plan:  # the plan itself; a budget or the best plan: each plan a budget can choose
            searcher.search(args.query[0], k=args.k, budget=budget(args))
        else:
            searcher.warm_up(k=args.k, query=args.query[0])
    for query in args.query:
        r = searcher.search(query, k=args.k, budget=budget(args), early_stop=args.early_stop)
        if args.json:
            print(json.dumps({"query": query, "plan": str(r.plan), "timings_ms": r.timings,
                              "stopped_early": r.stopped_early,
                              "hits": [{"docid": d, "score": s} for d, s in zip(r.docids, r.scores)]}))
            continue
        early = "; stopped early" if r.stopped_early else ""
        print(f"# {query}  (plan {r.plan}{early}; " + ", ".join(f"{k} {v:.2f} ms" for k, v in r.timings.items()) + ")")
        for rank, (docid, s) in enumerate(zip(r.docids, r.scores), 1):
            print(f"{rank}\t{docid}\t{s:.4f}")
