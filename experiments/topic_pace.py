"""Whether a collection's evaluation topics run slower than its calibration topics, against what the plans'
prices lead one to expect, and why: every plan of the calibrated frontier that encodes, over both topic
sets searched in one shuffled order, each search's latency over what its query's length leads its price
to expect.

Calibration prices each plan on the calibration topics, with a slope per token (``Point.expected_ms``);
the planner's pace is the median of each search's latency over that expectation. Were the evaluation
topics slower than expected where the calibration topics are not, the pace would rise on them alone.
Here both sets are searched in one mixed order, pass after pass, so that both meet the same machine, the
same warm caches and the same plan's set-up (each plan's first search, untimed). For each plan and set:
the mean latency, the mean expected, their ratio; the search split into encoding and the stages after
it; and encoding against what calibration topics of the same token count took (a step in the
encoder's cost between token counts, which a slope per token smooths over, shows there). A collection
without a training split (the DL19 pool) is calibrated on its evaluation topics: its rows are a
control, what the comparison reads where the two sets are one.

    python -m experiments.topic_pace

Writes experiments/results/topic_pace/topic_pace.{json,md}.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from experiments import runtime
from experiments.encoders import calibrated
from experiments.frontier_choice import calibration_texts
from experiments.noise_floor import K
from starbucks.model import StarbucksModel

OUT = Path(__file__).resolve().parent / "results" / "topic_pace"
SETS = ("calibration", "evaluation")
RATIOS = ("over_expected", "median_ratio", "encode_ms", "stages_ms", "encode_over_same_length")  # set over set


def same_length(tokens: np.ndarray, encode: np.ndarray, at: np.ndarray) -> np.ndarray:
    """What encoding took for queries of each token count in ``at``: the median of ``encode`` (ms) over the
    searches whose query had that count (``tokens``), interpolated between counts and held flat beyond
    the counts seen."""
    counts = np.unique(tokens)
    medians = np.array([np.median(encode[tokens == t]) for t in counts])
    return np.interp(at, counts, medians)


def run(name: str, model: StarbucksModel, passes: int) -> dict:
    searcher, frontier, evaluation = calibrated(name, model)
    texts = {"calibration": calibration_texts(name, frontier), "evaluation": evaluation}
    queries = [(s, q) for s in SETS for q in texts[s]]
    tokens = np.array(searcher.encoder.token_counts([q for _, q in queries]), dtype=np.float64)
    which = np.array([s for s, _ in queries])
    points = [p for p in frontier.points if p.plan.sizes]
    rows = []
    for point in tqdm(points, desc=name, unit="plan"):
        searcher.search(queries[0][1], k=K, budget=point.plan)  # the plan's set-up, which nothing times
        ms = np.empty((passes, len(queries)))
        encode = np.empty((passes, len(queries)))
        for r in range(passes):
            for i in np.random.default_rng(r).permutation(len(queries)):
                t = time.perf_counter()
                result = searcher.search(queries[i][1], k=K, budget=point.plan)
                ms[r, i] = (time.perf_counter() - t) * 1000
                encode[r, i] = result.timings["encode"]
        ms, encode = ms.mean(axis=0), encode.mean(axis=0)  # each query's mean over the passes
        expected = np.array([point.expected_ms(t) for t in tokens])
        cal = which == "calibration"
        like = same_length(tokens[cal], encode[cal], tokens)
        row = {"plan": str(point.plan), "price_ms": point.ms, "per_token_ms": point.per_token_ms}
        for s in SETS:
            m = which == s
            row[s] = {"searches": int(m.sum()) * passes, "mean_tokens": float(tokens[m].mean()),
                      "mean_ms": float(ms[m].mean()), "expected_ms": float(expected[m].mean()),
                      "over_expected": float(ms[m].mean() / expected[m].mean()),
                      "median_ratio": float(np.median(ms[m] / expected[m])),
                      "encode_ms": float(encode[m].mean()), "stages_ms": float((ms[m] - encode[m]).mean()),
                      "encode_over_same_length": float(encode[m].mean() / like[m].mean())}
        rows.append(row)
    # Where a collection has no training split, calibration ran on its evaluation topics: a control.
    return {"collection": name, "queries": {s: len(texts[s]) for s in SETS}, "passes": passes,
            "same_topics": sorted(texts["calibration"]) == sorted(texts["evaluation"]),
            "plans": rows, "summary": summarise(rows)}


def summarise(rows: list[dict]) -> dict:
    """Over the plans: each of the evaluation topics' figures over the calibration topics', as the median
    over plans (mean over expected, median per-search ratio, encoding, the stages, encoding over same
    length)."""
    return {f"{key}_evaluation_over_calibration": float(np.median([r["evaluation"][key] / r["calibration"][key]
                                                                   for r in rows])) for key in RATIOS}


def markdown(results: dict) -> str:
    lines = runtime.heading(results, "Topic pace: evaluation topics against calibration topics",
                            f"Both topic sets in one shuffled order, {results['passes']} passes, every plan of the "
                            "calibrated frontier that encodes; each query's mean over the passes.")
    lines += ["| collection | plan | set | queries' mean tokens | mean ms | expected ms | mean / expected | "
              "median search / expected | encode ms | stages ms | encode / same length on calibration topics |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in results["collections"]:
        for r in c["plans"]:
            for s in SETS:
                x = r[s]
                lines.append(f"| {c['collection']} | {r['plan']} | {s} | {x['mean_tokens']:.1f} | {x['mean_ms']:.3f} | "
                             f"{x['expected_ms']:.3f} | {x['over_expected']:.3f} | {x['median_ratio']:.3f} | "
                             f"{x['encode_ms']:.3f} | {x['stages_ms']:.3f} | {x['encode_over_same_length']:.3f} |")
    lines += ["", "Evaluation over calibration, the median over a collection's plans:", ""]
    lines += summary_lines(results)
    return "\n".join(lines) + "\n"


def summary_lines(results: dict) -> list[str]:
    """The summary table: per collection, its evaluation topics' figures over its calibration topics'."""
    out = ["| collection | mean / expected | median search / expected | encode ms | stages ms | encode / same length |",
           "|---|---|---|---|---|---|"]
    for c in results["collections"]:
        s = c["summary"]
        name = c["collection"] + (" (calibrated on its evaluation topics: a control)" if c["same_topics"] else "")
        out.append(f"| {name} | " + " | ".join(
            f"{s[f'{key}_evaluation_over_calibration']:.3f}" for key in RATIOS) + " |")
    return out


def summary_table(results: dict) -> str:
    """The README's table: the summary lines, and where they come from."""
    return ("\n".join(summary_lines(results)) + "\n\n"
            + runtime.table_source(results, "experiments/results/topic_pace/topic_pace.json"))


def main(argv: list[str] | None = None) -> None:
    parser = runtime.collections_parser(__doc__)
    parser.add_argument("--passes", type=int, default=3, help="passes over both topic sets, per plan")
    args = parser.parse_args(argv)
    runtime.over_collections("experiments.topic_pace", argv, args.datasets,
                             lambda name, model: run(name, model, args.passes), OUT, "topic_pace", markdown,
                             passes=args.passes)


if __name__ == "__main__":
    main()
