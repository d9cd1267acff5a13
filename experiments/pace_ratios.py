"""Which plans can tell the planner the machine's pace: each frontier plan's searches against what its
calibration expects of them, and how far the median of a pace window of them strays on a steady machine.

For each collection, with the frontier ``experiments.query_path`` calibrated last (its
``calibration.json`` in the index folder), one thread: each frontier plan searches the evaluation
topics, one query after another, in ``--repeats`` passes, the plans in turn; each search's latency
over ``Point.expected_ms`` for its query's tokens is its ratio, what ``Planner.observe`` takes. For
each plan: the ratios' mean and standard deviation, and over consecutive windows of
``PACE_WINDOW`` searches (the pace is their median), the windows' medians at the 5th, 50th and 95th
percentile and the share above ``PACE_SLACK`` (a pace the machine did not cause: a plan whose
windows often read above it would move budgets on its own noise).

    python -m experiments.pace_ratios --datasets scifact nfcorpus-dev dl19-pool

Writes experiments/results/pace_ratios/pace_ratios.{json,md}.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from experiments import runtime
from experiments.encoders import calibrated
from retrieval import Searcher
from retrieval.planner import PACE_SLACK, PACE_WINDOW
from starbucks.model import StarbucksModel

OUT = Path(__file__).resolve().parent / "results" / "pace_ratios"
K = 10


def ratios(searcher: Searcher, point, texts: list[str], repeats: int) -> np.ndarray:
    """Each search's latency over what its query's length leads calibration to expect, pass after pass."""
    tokens = searcher.encoder_named(point.plan.encoder).token_counts(texts) if point.plan.sizes else [None] * len(texts)
    expected = np.array([point.expected_ms(t) for t in tokens])
    searcher.search(texts[0], k=K, budget=point.plan)  # its first search: set-up, which the planner skips too
    out = np.empty((repeats, len(texts)))
    for r in range(repeats):
        for i, text in enumerate(texts):
            t = time.perf_counter()
            searcher.search(text, k=K, budget=point.plan)
            out[r, i] = (time.perf_counter() - t) * 1000
    return (out / expected).reshape(-1)


def summary(r: np.ndarray) -> dict:
    windows = np.median(r[: len(r) // PACE_WINDOW * PACE_WINDOW].reshape(-1, PACE_WINDOW), axis=1)
    return {"searches": len(r), "mean": float(r.mean()), "sd": float(r.std()),
            "window_median_p5": float(np.percentile(windows, 5)), "window_median_p50": float(np.median(windows)),
            "window_median_p95": float(np.percentile(windows, 95)),
            "windows_over_slack": float(np.mean(windows > PACE_SLACK))}


def run(name: str, model: StarbucksModel, repeats: int) -> dict:
    searcher, frontier, texts = calibrated(name, model)
    plans = []
    for point in frontier.points:
        plans.append({"plan": str(point.plan), "calibrated_ms": point.ms, "encodes": bool(point.plan.sizes),
                      **summary(ratios(searcher, point, texts, repeats))})
    return {"collection": name, "calibration": frontier.topics, "queries": len(texts), "plans": plans}


def markdown(results: dict) -> str:
    p = results["provenance"]
    lines = ["# Pace ratios: each frontier plan's searches over their calibrated expectation", "",
             f"`{p['command']}` at commit {p['git_commit'][:10]}; one thread; {results['repeats']} passes; load "
             f"average {p['machine']['load_average']} at start, {results['load_average_at_end']} at end. "
             f"Windows of {PACE_WINDOW} searches (the pace is their median); a window over {PACE_SLACK} reads as "
             f"a slow machine.", "",
             "| collection | plan | encodes its query | calibrated ms | mean ratio | sd | window median p5 / p50 / p95 "
             "| windows over the slack |",
             "|---|---|---|---|---|---|---|---|"]
    for c in results["collections"]:
        for q in c["plans"]:
            lines.append(f"| {c['collection']} | {q['plan']} | {'yes' if q['encodes'] else 'no'} | "
                         f"{q['calibrated_ms']:.2f} | {q['mean']:.3f} | {q['sd']:.3f} | {q['window_median_p5']:.2f} / "
                         f"{q['window_median_p50']:.2f} / {q['window_median_p95']:.2f} | {q['windows_over_slack']:.0%} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = runtime.collections_parser(__doc__)
    parser.add_argument("--repeats", type=int, default=2, help="passes over the topics per plan")
    args = parser.parse_args(argv)
    runtime.over_collections("experiments.pace_ratios", argv, args.datasets,
                             lambda name, model: run(name, model, args.repeats), OUT, "pace_ratios", markdown,
                             repeats=args.repeats)


if __name__ == "__main__":
    main()
