"""Budgets through stops of the machine, with and without making up the overrun, in one run.

A stop of the virtual machine holds one search for tens of milliseconds; the query-path runs saw two
of 86 and 103 ms in one budget's 1,032 searches, and no pace sees one search. This benchmark puts such
stops into budgets' blocks on purpose and asks what making up the overrun (``Planner.choose``,
``OVERRUN_FROM``) buys and costs.

For each collection, over the frontier ``experiments.query_path`` calibrated last (its
``calibration.json`` in the index folder), one thread, four searchers plan from that frontier, each
with its own pace and overruns: the planner (``made up``) and the planner with making up turned off
(``not made up``: ``planner.overrun_from = math.inf``), each without stops put in (``calm``: what making
up costs and buys on the machine as it runs) and with them (``stops``).

A stop is a sleep of ``--stop-ms`` inside the search, timed as part of it (the planner observes it), at
``--stops`` places in each budget's block drawn at random (seeded by the budget; the same places in
both arms with stops). Every budget ``experiments.query_path`` sets from the frontier runs over the
calibration topics, each arm's budget in a block of its own, the arms' blocks side by side (their order
rotating from budget to budget) and all blocks alternating over as many passes as give each at least
``--budget-searches`` searches.

Per budget and arm: the mean latency against the budget (the contract: at most 1.1x), nDCG@10 over
every search of every pass (each pass's rankings scored, then averaged), and the searches cut to make up
an overrun.

    python -m experiments.overrun --datasets scifact nfcorpus-dev dl19-pool

Writes experiments/results/overrun/overrun.{json,md}.
"""
from __future__ import annotations

import math
import random
import time
from pathlib import Path

from experiments import runtime
from experiments.blend import frontier_points, pass_ndcg
from experiments.datasets import COLLECTIONS
from experiments.encoders import index_for
from experiments.frontier import calibration_topics
from experiments.query_path import budget_passes, budgets, held_out_topics, timed
from retrieval import Searcher
from retrieval.evaluate import judged_topics
from starbucks.encoder import CPU_DEFAULT
from starbucks.model import StarbucksModel
from starbucks.topics import read_qrels, read_topics

OUT = Path(__file__).resolve().parent / "results" / "overrun"
K = 10
ARMS = ("calm, made up", "calm, not made up", "stops, made up", "stops, not made up")
STOPPED = ARMS[2:]


class Stops:
    """Sleeps put into a searcher's searches, inside the time the planner observes: ``ahead`` holds the
    stop (ms) for the next search, which the searcher's ``run`` sleeps before ranking."""

    def __init__(self, searcher: Searcher):
        self.ahead = 0.0
        real = searcher.run

        def run(*args, **kwargs):
            if self.ahead:
                time.sleep(self.ahead / 1000)
                self.ahead = 0.0
            return real(*args, **kwargs)
        searcher.run = run


def places(budget: float, searches: int, stops: int) -> set[int]:
    """Where in a budget's block of ``searches`` its stops fall: drawn at random, seeded by the budget."""
    return set(random.Random(f"stops {budget:g}").sample(range(searches), min(stops, searches)))


def arm_systems(searchers: dict, stops: dict, budget_list: list[float], searches: int, count: int,
                stop_ms: float) -> list:
    """Every arm's budgets as ``timed`` systems, each arm's budget a block (the arms' order rotating from
    budget to budget); an arm with stops puts ``count`` of ``stop_ms`` into its block at ``places``. A
    block's first call is ``timed``'s untimed warm-up, which no stop falls on."""
    def search(arm, b):
        s, at, calls = searchers[arm], places(b, searches, count), [-1]

        def one(q):
            if calls[0] in at and arm in stops:
                stops[arm].ahead = stop_ms
            calls[0] += 1
            return s.search(q, k=K, budget=b)
        return one

    out = []
    for i, b in enumerate(budget_list):
        for arm in ARMS[i % len(ARMS):] + ARMS[:i % len(ARMS)]:
            out.append(("budget", f"{arm} {b:g} ms", search(arm, b)))
    return out


def arm_row(budget: float, row: dict, ndcg: float, made_up: int) -> dict:
    mean = row["every_search_mean_ms"]
    return {"budget_ms": budget, "mean_ms": mean, "mean_over_budget": mean / budget, "holds": mean <= 1.1 * budget,
            "nDCG@10": ndcg, "made_up": made_up, "searches": row["searches"], "plan_share": row["plan_share"]}


def summarise(rows: list[dict]) -> dict:
    """Per arm: the budgets broken, and over the budgets above the cheapest plan's (which have something
    cheaper to make up on) the mean nDCG@10 and the share of searches cut."""
    out = {}
    for arm in ARMS:
        mine = [r[arm] for r in rows]
        upper = mine[1:] or mine
        out[arm] = {"budgets_broken": [r["budget_ms"] for r in mine if not r["holds"]],
                    "nDCG@10": sum(r["nDCG@10"] for r in upper) / len(upper),
                    "made_up_share": sum(r["made_up"] for r in upper) / sum(r["searches"] for r in upper)}
    return out


def run(name: str, model: StarbucksModel, budget_searches: int, count: int, stop_ms: float) -> dict:
    c = COLLECTIONS[name]
    folder, _ = index_for(name, "onnx", model, 2)
    searchers = {arm: Searcher(folder, model=model, encoder=CPU_DEFAULT, threads=1) for arm in ARMS}
    frontier = searchers[ARMS[0]].planner.frontier
    if frontier is None:
        raise SystemExit(f"{folder}: no calibration for this machine's settings; run experiments.query_path first")
    for arm in ARMS:
        if arm.endswith("not made up"):
            searchers[arm].planner.overrun_from = math.inf
    stops = {arm: Stops(searchers[arm]) for arm in STOPPED}
    qrels = read_qrels(c.qrels)
    topics, cal_qrels, note = held_out_topics(name) or calibration_topics(
        name, judged_topics(read_topics(c.topics), qrels), qrels, 200)
    budget_list = budgets(frontier)
    passes = budget_passes(topics, 3, budget_searches)
    searches = passes * len(topics)
    systems = arm_systems(searchers, stops, budget_list, searches, count, stop_ms)
    measured = timed(systems, topics, passes, interleave=False, keep_rankings=True)
    rows = []
    for b in budget_list:
        row = {"budget_ms": b, "own_plan": str(frontier.choose(b, K, 1.0))}
        for arm in ARMS:
            m = measured[f"{arm} {b:g} ms"]
            row[arm] = arm_row(b, m, pass_ndcg(m, cal_qrels, passes), searchers[arm].planner.made_up[(b, K)])
        rows.append(row)
    return {"collection": name, "topics": note, "queries": len(topics), "passes": passes, "stops": count,
            "stop_ms": stop_ms, "frontier": frontier_points(frontier), "budgets": rows, "summary": summarise(rows)}


def markdown(results: dict) -> str:
    lines = runtime.heading(results, "Budgets through stops of the machine, with and without making up the overrun", (
        "Arms: calm, made up / calm, not made up / stops, made up / stops, not made up (made up: the planner; "
        "not made up: making up turned off; stops: the same stops put into both). Searches cut: those a budget "
        "ran on a cheaper plan to make up its overrun (including the block's untimed warm-up search)."))
    for c in results["collections"]:
        s = c["summary"]
        lines += [f"## {c['collection']} ({c['topics']}; {c['passes']} passes; {c['stops']} stops of "
                  f"{c['stop_ms']:g} ms in each budget's block)", "",
                  "| budget ms | own plan | mean ms, by arm | nDCG@10, by arm | held, by arm | searches cut: calm / "
                  "stops |",
                  "|---|---|---|---|---|---|"]
        for r in c["budgets"]:
            arms = [r[a] for a in ARMS]
            means = " / ".join(f"{a['mean_ms']:.2f}" for a in arms)
            ndcg = " / ".join(f"{a['nDCG@10']:.4f}" for a in arms)
            held = " / ".join("yes" if a["holds"] else "**no**" for a in arms)
            lines.append(f"| {r['budget_ms']:g} | {r['own_plan']} | {means} | {ndcg} | {held} | "
                         f"{r[ARMS[0]]['made_up']} / {r[ARMS[2]]['made_up']} |")
        lines += ["", "Budgets broken: " + "; ".join(f"{a}: {s[a]['budgets_broken'] or 'none'}" for a in ARMS) +
                  ". Budgets above the cheapest plan's, averaged: nDCG@10 " +
                  " / ".join(f"{s[a]['nDCG@10']:.4f}" for a in ARMS) + "; searches cut " +
                  " / ".join(f"{s[a]['made_up_share']:.1%}" for a in ARMS) + ".", ""]
    return "\n".join(lines)


def summary_table(results: dict) -> str:
    """The README's table: per collection and arm, the budgets broken (the cheapest plan's, which has nothing
    cheaper to make up on, apart), nDCG@10 over the budgets above it, and the share of their searches cut."""
    lines = ["| collection | stops in each block | budgets above the cheapest plan's: broken, by arm | nDCG@10 over "
             "them, by arm | searches cut: calm / stops | the cheapest plan's budget held, by arm |",
             "|---|---|---|---|---|---|"]
    for c in results["collections"]:
        first, upper, s = c["budgets"][0], c["budgets"][1:], c["summary"]
        broken = " / ".join(f"{sum(not r[a]['holds'] for r in upper)}" for a in ARMS)
        lines.append(f"| {c['collection']} | {c['stops']} x {c['stop_ms']:g} ms | {broken} of {len(upper)} | "
                     + " / ".join(f"{s[a]['nDCG@10']:.4f}" for a in ARMS) + " | "
                     f"{s[ARMS[0]]['made_up_share']:.1%} / {s[ARMS[2]]['made_up_share']:.1%} | "
                     + " / ".join("yes" if first[a]["holds"] else "no" for a in ARMS) + " |")
    return "\n".join(lines) + f"\n\nArms: {' / '.join(ARMS)}. " + runtime.table_source(
        results, "experiments/results/overrun/overrun.json")


def main(argv: list[str] | None = None) -> None:
    parser = runtime.collections_parser(__doc__)
    parser.add_argument("--budget-searches", type=int, default=1000,
                        help="searches per budget and arm, in whole passes over the topics (default: %(default)s)")
    parser.add_argument("--stops", type=int, default=2,
                        help="stops put into each budget's block (default: %(default)s)")
    parser.add_argument("--stop-ms", type=float, default=100.0, help="how long each stop holds its search "
                        "(default: %(default)s)")
    args = parser.parse_args(argv)
    runtime.over_collections("experiments.overrun", argv, args.datasets,
                             lambda name, model: run(name, model, args.budget_searches, args.stops, args.stop_ms),
                             OUT, "overrun", markdown, budget_searches=args.budget_searches)


if __name__ == "__main__":
    main()
