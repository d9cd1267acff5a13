"""The budget contract's noise floor: how far the same plan's mean over 1,000 searches moves on this
machine from one block of searches to another, with nothing changed but the time.

The budget contract (``experiments.query_path``) compares a plan's mean latency over a block of at
least 1,000 searches with the latency calibration measured minutes earlier, within 1.1x. This
benchmark takes the planner out: for each collection, each frontier plan ``experiments.query_path``
calibrated (its ``calibration.json`` in the index folder) is searched by name, one thread, over the
evaluation topics in blocks of at least ``--searches`` searches, the plans in turn, ``--rounds``
times. The reference workload of ``experiments.query_path`` runs before and after each block,
and each block records its CPU time and the hypervisor's steal time.

For each plan: the blocks' means (lowest, median, highest) and the share of ordered pairs of
blocks (an earlier one and a later one) in which the later block's mean is over 1.1x the earlier's,
what a budget set on the earlier block would read as broken. Then the same share with each block's
mean divided by the reference workload's reading around it (the mean of before and after, over its
median in the run): whether the reference tells the machine's pace. A share above 0 on the
plain means says how often, at this machine's pace, the contract breaks with no plan running over.

    python -m experiments.noise_floor --datasets scifact nfcorpus-dev dl19-pool

Writes experiments/results/noise_floor/noise_floor.{json,md}.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from experiments import runtime
from experiments.encoders import calibrated
from experiments.query_path import budget_passes, reference_ms, steal_ticks, stolen_ms
from retrieval import Plan, Searcher
from starbucks.model import StarbucksModel

OUT = Path(__file__).resolve().parent / "results" / "noise_floor"
K = 10
TOLERANCE = 1.1  # the budget contract's


def later_over(means, tolerance: float = TOLERANCE) -> float:
    """The share of ordered pairs of blocks (i before j) with block j's mean over ``tolerance`` times
    block i's: a budget set on block i, judged on block j, reads as broken."""
    m = np.asarray(means, dtype=np.float64)
    i, j = np.triu_indices(len(m), k=1)
    return float(np.mean(m[j] > tolerance * m[i])) if len(i) else 0.0


def block(searcher: Searcher, plan, texts: list[str], passes: int) -> dict:
    """One block: ``passes`` passes over ``texts`` with ``plan``; its mean and CPU mean (ms a search)
    and the steal time on any CPU (ms) while it ran."""
    steal = steal_ticks()
    c, t = time.thread_time(), time.perf_counter()
    for _ in range(passes):
        for text in texts:
            searcher.search(text, k=K, budget=plan)
    wall, cpu = time.perf_counter() - t, time.thread_time() - c
    end = steal_ticks()
    n = passes * len(texts)
    return {"mean_ms": wall * 1000 / n, "cpu_mean_ms": cpu * 1000 / n,
            "stolen_ms": stolen_ms(steal, end)}


def summary(blocks: list[dict], reference: float) -> dict:
    means = np.array([b["mean_ms"] for b in blocks])
    slow = np.array([(b["machine_before"] + b["machine_after"]) / 2 / reference for b in blocks])
    paced = means / slow
    return {"lowest_ms": float(means.min()), "median_ms": float(np.median(means)), "highest_ms": float(means.max()),
            "highest_over_lowest": float(means.max() / means.min()), "later_over_1.1": later_over(means),
            "later_over_1.1_at_reference_pace": later_over(paced),
            "highest_over_lowest_at_reference_pace": float(paced.max() / paced.min()),
            "cpu_share": float(np.mean([b["cpu_mean_ms"] / b["mean_ms"] for b in blocks]))}


def run(name: str, model: StarbucksModel, rounds: int, searches: int) -> dict:
    searcher, frontier, texts = calibrated(name, model)
    passes = budget_passes(texts, 1, searches)
    plans = [p.plan for p in frontier.points]
    for plan in plans:  # a plan's first search: set-up, which neither calibration nor the budgets time
        searcher.search(texts[0], k=K, budget=plan)
    blocks = {str(p): [] for p in plans}
    for _ in tqdm(range(rounds), desc=name):
        for plan in plans:
            before = reference_ms()
            b = block(searcher, plan, texts, passes)
            blocks[str(plan)].append({**b, "machine_before": before, "machine_after": reference_ms()})
    reference = float(np.median([x for bs in blocks.values() for b in bs
                                 for x in (b["machine_before"], b["machine_after"])]))
    return {"collection": name, "calibration": frontier.topics, "queries": len(texts), "passes": passes,
            "searches_per_block": passes * len(texts), "reference_median_ms": reference,
            "plans": [{"plan": str(p.plan), "calibrated_ms": p.ms, **summary(blocks[str(p.plan)], reference),
                       "blocks": blocks[str(p.plan)]} for p in frontier.points]}


def markdown(results: dict) -> str:
    p = results["provenance"]
    lines = ["# Noise floor: the same plan's mean over a block of searches, block after block", "",
             f"`{p['command']}` at commit {p['git_commit'][:10]}; one thread; {results['rounds']} blocks per plan, "
             f"each of at least {results['searches']} searches, the plans in turn; load average "
             f"{p['machine']['load_average']} at start, {results['load_average_at_end']} at end.", "",
             "Later over 1.1x: the share of ordered pairs of a plan's blocks (an earlier, a later) whose later "
             "mean is over 1.1x the earlier one, which a budget set on the earlier block reads as broken. "
             "At the reference pace: each block's mean over the reference workload's reading around it.", "",
             "| collection | plan | calibrated ms | block means: lowest / median / highest ms | highest / lowest "
             "| later over 1.1x | at the reference pace: highest / lowest, later over 1.1x | on the CPU |",
             "|---|---|---|---|---|---|---|---|"]
    lines += runtime.plan_rows(results, lambda c, q: (
        f"| {c['collection']} | {q['plan']} | {q['calibrated_ms']:.3f} | {q['lowest_ms']:.3f} / {q['median_ms']:.3f} / "
        f"{q['highest_ms']:.3f} | {q['highest_over_lowest']:.2f} | {q['later_over_1.1']:.0%} | "
        f"{q['highest_over_lowest_at_reference_pace']:.2f}, {q['later_over_1.1_at_reference_pace']:.0%} | "
        f"{q['cpu_share']:.0%} |"))
    return "\n".join(lines) + "\n"


def summary_table(results: dict) -> str:
    """The README's table: per collection, the spread of block means over all its plans, and BM25 alone's."""
    lines = ["| collection | plans | blocks x searches | highest / lowest block mean, by plan | later blocks over "
             "1.1x an earlier one, all plans | the same at the reference pace | BM25 alone: highest / lowest, "
             "later over 1.1x |", "|---|---|---|---|---|---|---|"]
    for c in results["collections"]:
        plans = c["plans"]
        spread = [q["highest_over_lowest"] for q in plans]
        bm25 = [q for q in plans if not Plan.parse(q["plan"]).sizes]  # BM25 alone: no stage encodes
        lines.append(f"| {c['collection']} | {len(plans)} | {results['rounds']} x {c['searches_per_block']} | "
                     f"{min(spread):.2f}-{max(spread):.2f} | {np.mean([q['later_over_1.1'] for q in plans]):.0%} | "
                     f"{np.mean([q['later_over_1.1_at_reference_pace'] for q in plans]):.0%} | "
                     + (", ".join(f"{q['highest_over_lowest']:.2f}, {q['later_over_1.1']:.0%}" for q in bm25) or "-")
                     + " |")
    return "\n".join(lines) + "\n\n" + runtime.table_source(results, "experiments/results/noise_floor/noise_floor.json")


def main(argv: list[str] | None = None) -> None:
    parser = runtime.collections_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=8, help="blocks per plan")
    parser.add_argument("--searches", type=int, default=1000, help="searches per block, at least (whole passes)")
    args = parser.parse_args(argv)
    runtime.over_collections("experiments.noise_floor", argv, args.datasets,
                             lambda name, model: run(name, model, args.rounds, args.searches), OUT, "noise_floor",
                             markdown, rounds=args.rounds, searches=args.searches)


if __name__ == "__main__":
    main()
