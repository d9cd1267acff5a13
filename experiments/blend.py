"""A paced budget with and without the blend, in one run: how each budget spends its searches.

For each collection, over the frontier ``experiments.query_path`` calibrated last (its
``calibration.json`` in the index folder), one thread: two searchers plan from that frontier, one as
the planner does (while the machine runs slow, a budget shares its searches between the plan that
fits at the pace and the next more effective frontier plan, ``Frontier.blend``), and one that drops
to the plan that fits alone (the planner before the blend). Each has its own pace, learnt from its own
searches. Every budget ``experiments.query_path`` sets from the frontier runs over the calibration
topics, each arm's budget in a block of its own, the two arms' blocks side by side (which goes first
alternates from budget to budget) and all blocks alternating over as many passes as give each at
least ``--budget-searches`` searches; so both arms meet the same spells of a shared machine.

Per budget and arm: the share of searches on the plan the budget takes at pace 1 (its own plan), the
share of searches made while the pace was above 1, the mean latency against the budget (the
contract: at most 1.1x), and nDCG@10 over every search of every pass (each pass's rankings scored,
then averaged).

    python -m experiments.blend --datasets scifact nfcorpus-dev dl19-pool

Writes experiments/results/blend/blend.{json,md}.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from experiments import runtime
from experiments.datasets import COLLECTIONS
from experiments.encoders import index_for
from experiments.frontier import calibration_topics
from experiments.query_path import budget_passes, budgets, held_out_topics, timed
from retrieval import Searcher
from retrieval.evaluate import judged_topics, parse_measures, score
from starbucks.encoder import CPU_DEFAULT
from starbucks.model import StarbucksModel
from starbucks.topics import read_qrels, read_topics

OUT = Path(__file__).resolve().parent / "results" / "blend"
K = 10
ARMS = ("blend", "drop")
NDCG = parse_measures(["nDCG@10"])


def without_blend(searcher: Searcher) -> Searcher:
    """The searcher's planner as it was before the blend: a paced budget runs the plan that fits alone."""
    frontier = searcher.planner.frontier
    frontier.blend = lambda budget, k, pace=1.0, tokens=None, floor=False: (
        None if (plan := frontier.choose(budget, k, pace, tokens, floor)) is None else (plan, None, 0.0))
    return searcher


def arm_systems(searchers: dict, budget_list: list[float], paced: dict) -> list:
    """Both arms' budgets as ``timed`` systems, each arm's budget a block; which arm goes first alternates."""
    def search(arm, b):
        s = searchers[arm]

        def one(q):
            result = s.search(q, k=K, budget=b)
            paced[arm, b].append(s.planner.pace > 1.0)
            return result
        return one

    out = []
    for i, b in enumerate(budget_list):
        for arm in (ARMS if i % 2 == 0 else ARMS[::-1]):
            paced[arm, b] = []
            out.append(("budget", f"{arm} {b:g} ms", search(arm, b)))
    return out


def arm_row(budget: float, own: str, row: dict, paced: list, ndcg: float) -> dict:
    share = row["plan_share"]
    mean = row["every_search_mean_ms"]
    return {"budget_ms": budget, "own_plan": own, "own_plan_share": share.get(own, 0.0),
            "paced_share": sum(paced) / len(paced), "mean_ms": mean, "mean_over_budget": mean / budget,
            "holds": mean <= 1.1 * budget, "nDCG@10": ndcg, "plan_share": share, "searches": row["searches"]}


def pass_ndcg(row: dict, qrels: dict, passes: int) -> float:
    """nDCG@10 over every search of a block: each pass's rankings scored, then averaged."""
    return sum(score(r, qrels, NDCG)["nDCG@10"] for r in row["rankings_per_pass"]) / passes


def frontier_points(frontier) -> list[dict]:
    """The frontier an arms benchmark planned from, for its results."""
    return [{"plan": str(p.plan), "ms": p.ms, "nDCG@10": p.effectiveness} for p in frontier.points]


def summarise(rows: list[dict]) -> dict:
    """Per arm, over the budgets of 1 ms or more (below, only BM25 alone fits): the mean of their own-plan
    shares and nDCG@10, and the budgets broken over every budget."""
    out = {}
    for arm in ARMS:
        mine = [r[arm] for r in rows]
        upper = [r for r in mine if r["budget_ms"] >= 1.0]
        out[arm] = {"own_plan_share": sum(r["own_plan_share"] for r in upper) / len(upper),
                    "paced_share": sum(r["paced_share"] for r in upper) / len(upper),
                    "nDCG@10": sum(r["nDCG@10"] for r in upper) / len(upper),
                    "budgets_broken": [r["budget_ms"] for r in mine if not r["holds"]]}
    return out


def run(name: str, model: StarbucksModel, budget_searches: int) -> dict:
    c = COLLECTIONS[name]
    folder, _ = index_for(name, "onnx", model, 2)
    searchers = {arm: Searcher(folder, model=model, encoder=CPU_DEFAULT, threads=1) for arm in ARMS}
    frontier = searchers["blend"].planner.frontier
    if frontier is None:
        raise SystemExit(f"{folder}: no calibration for this machine's settings; run experiments.query_path first")
    without_blend(searchers["drop"])
    qrels = read_qrels(c.qrels)
    topics, cal_qrels, note = held_out_topics(name) or calibration_topics(
        name, judged_topics(read_topics(c.topics), qrels), qrels, 200)
    budget_list = budgets(frontier)
    paced: dict = {}
    systems = arm_systems(searchers, budget_list, paced)
    passes = budget_passes(topics, 3, budget_searches)
    measured = timed(systems, topics, passes, interleave=False, keep_rankings=True)
    rows = []
    for b in budget_list:
        own = str(frontier.choose(b, K, 1.0))
        row = {"budget_ms": b}
        for arm in ARMS:
            m = measured[f"{arm} {b:g} ms"]  # paced: the first search is timed()'s untimed warm-up
            row[arm] = arm_row(b, own, m, paced[arm, b][1:], pass_ndcg(m, cal_qrels, passes))
        rows.append(row)
    return {"collection": name, "topics": note, "queries": len(topics), "passes": passes,
            "frontier": frontier_points(frontier), "budgets": rows, "summary": summarise(rows)}


def markdown(results: dict) -> str:
    lines = runtime.heading(results, "A paced budget with and without the blend", (
        "Each budget's own plan is the one it takes at pace 1; blend: the planner (a paced budget shares its "
        "searches with the next more effective plan); drop: a paced budget runs the cheaper plan alone."))
    for c in results["collections"]:
        s = c["summary"]
        lines += [f"## {c['collection']} ({c['topics']}; {c['passes']} passes)", "",
                  "| budget ms | own plan | own plan's share: blend / drop | searches paced: blend / drop | "
                  "mean ms: blend / drop | nDCG@10: blend / drop | held: blend / drop |",
                  "|---|---|---|---|---|---|---|"]
        for r in c["budgets"]:
            a, d = r["blend"], r["drop"]
            lines.append(f"| {r['budget_ms']:g} | {a['own_plan']} | {a['own_plan_share']:.0%} / {d['own_plan_share']:.0%} | "
                         f"{a['paced_share']:.0%} / {d['paced_share']:.0%} | {a['mean_ms']:.2f} / {d['mean_ms']:.2f} | "
                         f"{a['nDCG@10']:.4f} / {d['nDCG@10']:.4f} | {'yes' if a['holds'] else '**no**'} / "
                         f"{'yes' if d['holds'] else '**no**'} |")
        lines += ["", "Budgets of 1 ms or more, averaged: own plan's share "
                  f"{s['blend']['own_plan_share']:.0%} / {s['drop']['own_plan_share']:.0%}; searches paced "
                  f"{s['blend']['paced_share']:.0%} / {s['drop']['paced_share']:.0%}; nDCG@10 "
                  f"{s['blend']['nDCG@10']:.4f} / {s['drop']['nDCG@10']:.4f}. Budgets broken: blend "
                  f"{s['blend']['budgets_broken'] or 'none'}, drop {s['drop']['budgets_broken'] or 'none'}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=runtime.description(__doc__))
    parser.add_argument("--datasets", nargs="+", default=["scifact", "nfcorpus-dev", "dl19-pool"])
    parser.add_argument("--budget-searches", type=int, default=1000,
                        help="searches per budget and arm, in whole passes over the topics (default: %(default)s)")
    args = parser.parse_args(argv)
    runtime.over_collections("experiments.blend", argv, args.datasets,
                             lambda name, model: run(name, model, args.budget_searches), OUT, "blend", markdown)


if __name__ == "__main__":
    main()
