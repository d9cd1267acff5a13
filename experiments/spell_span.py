"""How long calibration must sample BM25 alone for its price to hold: one plan's block means, back to
back for many minutes, and sampling spans replayed on them.

A budget on BM25 alone (the cheapest plan, which never sets the planner's pace) holds only if the
machine never runs slower than the slowest block calibration met (``retrieval.calibrate.Spells``: a
block of 1,000 searches every ``SPELL_SECONDS``). Calibration on a small collection lasts about a
minute (the DL19 pool's grid: five or six blocks), a large one's many minutes. This benchmark records
the cheapest BM25-alone plan of a collection's calibrated frontier (``experiments.query_path``'s
index) searched over its evaluation topics, one thread, in blocks of at least ``--searches`` searches,
back to back for ``--minutes``. Then, for each sampling span, for every start in the recording: the
blocks a calibration starting there samples (one every ``SPELL_SECONDS`` through the span), their
slowest mean as the price, and every block in the ``--horizon`` seconds after the span judged against
it, as a budget's block is.

Columns, per span: blocks sampled; the share of later blocks within 1.1x the price (a budget holding);
the share of starts whose later blocks all hold; the worst later block over the price; the price over
the recording's median block (what a higher price costs: budgets below it are refused).

    python -m experiments.spell_span --datasets dl19-pool --minutes 30

Writes experiments/results/spell_span/spell_span.{json,md}.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from experiments import runtime
from experiments.encoders import calibrated
from experiments.noise_floor import K, TOLERANCE, block
from experiments.query_path import budget_passes
from retrieval import Plan
from retrieval.calibrate import SPELL_SECONDS
from starbucks.model import StarbucksModel

OUT = Path(__file__).resolve().parent / "results" / "spell_span"
SPANS = (0, 30, 60, 120, 240, 480)  # seconds of sampling: 0 is one block


def replay(times, means, span: float, horizon: float, every: float = SPELL_SECONDS,
           tolerance: float = TOLERANCE) -> dict:
    """Calibrations sampling ``span`` seconds of the recording (block means ``means`` ending at ``times``,
    seconds), one block every ``every`` s, started every ``every`` s while ``span + horizon`` fits; each
    priced at its slowest sample and judged on every block in the ``horizon`` after its span."""
    t, m = np.asarray(times, dtype=np.float64), np.asarray(means, dtype=np.float64)
    starts = np.arange(t[0], t[-1] - span - horizon + 1e-9, every)
    if not len(starts):
        raise ValueError(f"a recording of {t[-1] - t[0]:.0f} s is too short for a span of {span} s "
                         f"and a horizon of {horizon} s")
    offsets = np.arange(0.0, span + 1e-9, every)
    held, all_held, worst, cost = [], [], [], []
    median = float(np.median(m))
    for s in starts:
        sampled = np.minimum(np.searchsorted(t, s + offsets), len(t) - 1)
        price = float(m[sampled].max())
        later = m[(t > s + span) & (t <= s + span + horizon)]
        ratio = later / price
        held.append(float(np.mean(ratio <= tolerance)))
        all_held.append(bool(np.all(ratio <= tolerance)))
        worst.append(float(ratio.max()))
        cost.append(price / median)
    return {"span_s": span, "blocks_sampled": len(offsets), "starts": len(starts),
            "later_blocks_holding": float(np.mean(held)), "starts_all_holding": float(np.mean(all_held)),
            "worst_later_over_price": float(np.max(worst)), "price_over_median": float(np.median(cost)),
            "price_over_median_highest": float(np.max(cost))}


def cheapest_bm25(frontier) -> Plan:
    """The frontier's cheapest plan that encodes nothing (BM25 alone); ``bm25:10`` where it has none."""
    alone = [p for p in frontier.points if not p.plan.sizes]
    return min(alone, key=lambda p: p.ms).plan if alone else Plan.parse(f"bm25:{K}")


def run(name: str, model: StarbucksModel, minutes: float, searches: int, horizon: float) -> dict:
    searcher, frontier, texts = calibrated(name, model)
    plan = cheapest_bm25(frontier)
    passes = budget_passes(texts, 1, searches)
    searcher.search(texts[0], k=K, budget=plan)  # set-up, which no block times
    blocks, start = [], time.perf_counter()
    with tqdm(total=round(minutes * 60), desc=name, unit="s") as bar:
        while time.perf_counter() - start < minutes * 60:
            b = block(searcher, plan, texts, passes)
            blocks.append({"end_s": round(time.perf_counter() - start, 4), "mean_ms": round(b["mean_ms"], 5),
                           "stolen_ms": round(b["stolen_ms"], 1)})
            bar.update(round(time.perf_counter() - start) - bar.n)
    t, m = [b["end_s"] for b in blocks], [b["mean_ms"] for b in blocks]
    return {"collection": name, "plan": str(plan), "queries": len(texts), "searches_per_block": passes * len(texts),
            "blocks": len(blocks), "median_ms": float(np.median(m)), "lowest_ms": float(np.min(m)),
            "highest_ms": float(np.max(m)),
            "spans": [replay(t, m, s, horizon) for s in SPANS if s + horizon < t[-1] - t[0]],
            "recording": blocks}


def span_table(results: dict) -> list[str]:
    """The table's lines: a row per collection and span."""
    lines = ["| collection | plan | span s | blocks sampled | later blocks holding | starts whose later blocks "
             "all hold | worst later / price | price / median block (median, highest) |",
             "|---|---|---|---|---|---|---|---|"]
    for c in results["collections"]:
        for s in c["spans"]:
            lines.append(f"| {c['collection']} | {c['plan']} | {s['span_s']} | {s['blocks_sampled']} | "
                         f"{s['later_blocks_holding']:.1%} | {s['starts_all_holding']:.0%} | "
                         f"{s['worst_later_over_price']:.2f} | {s['price_over_median']:.2f}, "
                         f"{s['price_over_median_highest']:.2f} |")
    return lines


def markdown(results: dict) -> str:
    lines = runtime.heading(results, "Spell span: how long calibration samples BM25 alone for its price to hold",
                            f"Blocks back to back for {results['minutes']} minutes; each calibration sampled one "
                            f"block every {SPELL_SECONDS:.0f} s through its span, priced at the slowest, and judged on "
                            f"every block in the {results['horizon_s']:.0f} s after it.")
    lines += span_table(results)
    lines += [""] + [f"{c['collection']}: {c['blocks']} blocks of {c['searches_per_block']} searches, mean "
                     f"{c['lowest_ms']:.3f} / {c['median_ms']:.3f} / {c['highest_ms']:.3f} ms (lowest / median / "
                     f"highest)." for c in results["collections"]]
    return "\n".join(lines) + "\n"


def summary_table(results: dict) -> str:
    """The README's table: the span rows."""
    return ("\n".join(span_table(results)) + "\n\n"
            + runtime.table_source(results, "experiments/results/spell_span/spell_span.json"))


def main(argv: list[str] | None = None) -> None:
    parser = runtime.collections_parser(__doc__, datasets=("dl19-pool",))
    parser.add_argument("--minutes", type=float, default=30.0, help="how long to record, per collection")
    parser.add_argument("--searches", type=int, default=1000, help="searches per block, at least (whole passes)")
    parser.add_argument("--horizon", type=float, default=300.0, help="seconds after a span its budgets are judged in")
    args = parser.parse_args(argv)
    runtime.over_collections("experiments.spell_span", argv, args.datasets,
                             lambda name, model: run(name, model, args.minutes, args.searches, args.horizon),
                             OUT, "spell_span", markdown, minutes=args.minutes, horizon_s=args.horizon)


if __name__ == "__main__":
    main()
