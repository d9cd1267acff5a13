"""Choosing the frontier from noisy timings: how often each rule keeps the plans that belong on
calibration's frontier, and prices them so that their budgets hold.

Calibration times the grid's Pareto plans end to end (``retrieval.calibrate.end_to_end``) and chooses
its frontier from those timings (``choose_frontier``). On a shared machine one plan's timing moves by
up to 1.4x from one measurement to the next, so the rule that turns timings into a frontier decides
which plans a slow or a fast reading drops. This benchmark times every plan ``experiments.query_path``'s
calibration considered (the ``timed`` record of its ``calibration.json``, in each index folder) end to
end over the same calibration topics, ``--rounds`` times, and then replays each rule on every ordered
choice of ``USED`` rounds as its successive timings. Each replay is judged on the rounds it did not use:
there a plan's latency is the mean of its passes, and the plans on the Pareto set of those latencies
belong on the frontier.

For each rule, over the replays:
- kept: the share of the plans that belong on the frontier which its frontier holds;
- the 1 % plan: its frontier's fastest plan within 1 % of the best effectiveness on the calibration
  topics, its held-out latency over that of the fastest such plan that belongs on the frontier (1 is
  best), and the share of replays in which that ratio is over 1.2 (the 5x target's misses came so);
- budgets: the share of its frontier plans whose held-out latency is at most 1.1x the latency the
  rule priced them at (the budget contract), and the share of replays in which every one holds;
- the nDCG@10 it loses against the plans that belong on the frontier, at budgets set at their latencies,
  and the share of those budgets below its cheapest price (refused);
- plans timed: the end-to-end timings of plans it spent (its cost).

    python -m experiments.frontier_choice --rounds 10
    python -m experiments.frontier_choice --replay

Writes experiments/results/frontier_choice/frontier_choice.{json,md}.
"""
from __future__ import annotations

import dataclasses
import itertools
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

import retrieval.calibrate as cal
from experiments import runtime
from experiments.datasets import COLLECTIONS
from experiments.encoders import calibrated
from experiments.frontier import calibration_topics
from experiments.query_path import held_out_topics
from retrieval import Plan
from retrieval.evaluate import judged_topics
from retrieval.frontier import Point, pareto
from retrieval.planner import sets_pace
from starbucks.topics import read_qrels, read_topics

OUT = Path(__file__).resolve().parent / "results" / "frontier_choice"
USED = 4  # rounds a replay may use as its timings, in order; the others judge it
TOLERANCE = 1.1  # the budget contract's
WITHIN = 0.01  # the 5x target's plan: within 1 % of the best effectiveness
MISS = 1.2  # a 1 % plan this much slower than the one that belongs on the frontier counts as a miss


class Replay:
    """Timings from recorded rounds: each call to ``end_to_end`` takes the next round's readings of the
    points it is given, as calibration would have measured them then."""

    def __init__(self, readings: list[dict], order: tuple[int, ...]):
        self.readings, self.order, self.calls, self.timed = readings, iter(order), 0, 0

    def end_to_end(self, searcher, points: list[Point], texts, k, *args, **kwargs) -> list[Point]:
        ms = self.readings[next(self.order)]
        self.calls += 1
        self.timed += len(points)
        return [dataclasses.replace(p, ms=ms[str(p.plan)]) for p in points]


@contextmanager
def replaying(replay: Replay):
    real = cal.end_to_end
    cal.end_to_end = replay.end_to_end
    try:
        yield
    finally:
        cal.end_to_end = real


def combined(first: list[Point], second: list[Point], how) -> list[Point]:
    """Each point with ``how`` of its two latencies; a plan that does not set the pace, the slower one
    (as calibration keeps it)."""
    return [dataclasses.replace(p, ms=how(p.ms, q.ms) if sets_pace(p.plan, p.ms) else max(p.ms, q.ms))
            for p, q in zip(first, second)]


def once(candidates: list[Point]) -> list[Point]:
    """One timing chooses and prices the frontier."""
    return pareto(cal.end_to_end(None, candidates, [], 0))


def calibrations(candidates: list[Point]) -> list[Point]:
    """``retrieval.calibrate.choose_frontier`` as it stands."""
    return cal.choose_frontier(None, candidates, [], 0)[0]


def confirmed(chosen: list[Point]) -> list[Point]:
    """The chosen plans timed once more, each at that latency (the slower of its two where it does not
    set the pace), and the frontier taken again."""
    return pareto(combined(chosen, cal.end_to_end(None, chosen, [], 0), lambda first, second: second))


def confirmed_with_second_chances(candidates: list[Point]) -> list[Point]:
    """Calibration's rule before ``choose_frontier`` timed every candidate twice: chosen by one timing,
    confirmed by a second timing of the chosen plans, and the plans the first dropped only through plans
    the second then dropped timed a second time and offered again."""
    first = cal.end_to_end(None, candidates, [], 0)
    chosen = pareto(first)
    kept = confirmed(chosen)
    picked, stayed = {p.plan for p in chosen}, [p for p in first if p.plan in {q.plan for q in kept}]
    retry = [p for p in first if p.plan not in picked and any(q is p for q in pareto(stayed + [p]))]
    return pareto(kept + confirmed(retry)) if retry else kept


def twice(how):
    def rule(candidates: list[Point]) -> list[Point]:
        return pareto(combined(cal.end_to_end(None, candidates, [], 0), cal.end_to_end(None, candidates, [], 0), how))
    return rule


def at_slowest_speed(n: int):
    """Every candidate timed ``n`` times; a plan's cost is the mean of its timings, and its price that cost
    at the machine's speed in the slowest of the timings (the median over the plans of a timing's reading
    over their cost): a spell of the machine moves every plan timed in it alike, and the frontier is chosen
    by costs that every timing weighs the same."""
    def rule(candidates: list[Point]) -> list[Point]:
        timings = [cal.end_to_end(None, candidates, [], 0) for _ in range(n)]
        ms = np.array([[p.ms for p in t] for t in timings])
        cost = ms.mean(axis=0)
        speed = float(np.median(ms / cost, axis=1).max())
        return pareto([dataclasses.replace(p, ms=float(c * speed) if sets_pace(p.plan, c) else float(m.max()))
                       for p, c, m in zip(candidates, cost, ms.T)])
    return rule


RULES = {
    "once (one timing chooses and prices)": once,
    "once, confirmed, with second chances (calibration's before)": confirmed_with_second_chances,
    "twice, mean (calibration's)": calibrations,
    "twice, slower": twice(max),
    "twice, at the slower timing's speed": at_slowest_speed(2),
    "three times, at the slowest timing's speed": at_slowest_speed(3),
}


def judge(frontier: list[Point], truth: dict[str, float], effectiveness: dict[str, float]) -> dict:
    """One replay's frontier against the held-out latencies ``truth``."""
    belongs = pareto([Point(Plan.parse(p), ms, effectiveness[p]) for p, ms in truth.items()])
    on = {str(p.plan) for p in frontier}
    kept = np.mean([str(p.plan) in on for p in belongs])
    target = (1 - WITHIN) * max(effectiveness.values())
    best = min(truth[str(p.plan)] for p in belongs if p.effectiveness >= target)
    within = [truth[str(p.plan)] for p in frontier if p.effectiveness >= target]
    ratio = min(within) / best if within else float("inf")
    over = [truth[str(p.plan)] / p.ms for p in frontier]
    unpaced = [o for p, o in zip(frontier, over) if not sets_pace(p.plan, p.ms)]
    lost, refused = [], 0
    for b in belongs:  # a budget at each latency that belongs on the frontier: the best it could buy there
        picks = [p.effectiveness for p in frontier if p.ms <= truth[str(b.plan)]]
        if picks:
            lost.append(b.effectiveness - max(picks))
        else:  # below the rule's cheapest price: refused
            refused += 1
    return {"kept": float(kept), "ratio": ratio, "holds": float(np.mean([o <= TOLERANCE for o in over])),
            "worst": float(max(over)),
            "unpaced_hold": float(all(o <= TOLERANCE for o in unpaced)), "lost": float(np.mean(lost)) if lost else 0.0,
            "refused": refused / len(belongs), "plans": len(frontier)}


def replay_all(rounds: list[dict], effectiveness: dict[str, float], candidates: list[Point]) -> dict:
    """Every rule on every ordered choice of ``USED`` rounds, judged on the rest."""
    readings = [r["ms"] for r in rounds]
    out = {}
    for name, rule in RULES.items():
        trials, timed = [], []
        for order in itertools.permutations(range(len(rounds)), USED):
            replay = Replay(readings, order)
            with replaying(replay):
                frontier = rule(candidates)
            held = [r for i, r in enumerate(rounds) if i not in order]
            truth = {p: float(np.mean([x for r in held for x in r["passes"][p]])) for p in effectiveness}
            trials.append(judge(frontier, truth, effectiveness))
            timed.append(replay.timed)
        ratio = np.array([t["ratio"] for t in trials])
        out[name] = {"replays": len(trials), "kept": float(np.mean([t["kept"] for t in trials])),
                     "ratio_median": float(np.median(ratio)), "ratio_over_miss": float(np.mean(ratio > MISS)),
                     "holds": float(np.mean([t["holds"] for t in trials])),
                     "all_hold": float(np.mean([t["holds"] == 1 for t in trials])),
                     "worst_median": float(np.median([t["worst"] for t in trials])),
                     "unpaced_hold": float(np.mean([t["unpaced_hold"] for t in trials])),
                     "lost": float(np.mean([t["lost"] for t in trials])),
                     "refused": float(np.mean([t["refused"] for t in trials])),
                     "plans": float(np.mean([t["plans"] for t in trials])), "timed": float(np.mean(timed))}
    return out


def as_points(records: list[dict]) -> list[Point]:
    """The candidate plans of ``records`` (``Frontier.timed``, or this benchmark's ``plans``), each at its
    grid estimate."""
    return [Point(Plan.parse(r["plan"]), r["grid_ms"], r["effectiveness"]) for r in records]


def calibration_texts(name: str, frontier) -> list[str]:
    """The calibration topics ``experiments.query_path`` calibrated ``name`` on, as it draws them."""
    c = COLLECTIONS[name]
    qrels = read_qrels(c.qrels)
    topics = judged_topics(read_topics(c.topics), qrels)
    cal_topics, cal_qrels, _ = held_out_topics(name) or calibration_topics(name, topics, qrels, frontier.queries)
    return list(judged_topics(cal_topics, cal_qrels).values())


def run(name: str, model, rounds: int) -> dict:
    searcher, frontier, _ = calibrated(name, model)
    if not frontier.timed:
        raise SystemExit(f"{name}: its calibration has no record of the plans it timed; run experiments.query_path")
    texts = calibration_texts(name, frontier)
    if len(texts) != frontier.queries:
        raise SystemExit(f"{name}: {len(texts)} calibration topics here, {frontier.queries} in its calibration")
    candidates = as_points(frontier.timed)
    recorded = []
    for _ in tqdm(range(rounds), desc=name):
        passes = {}
        points = cal.end_to_end(searcher, candidates, texts, frontier.k, passes=passes)
        recorded.append({"ms": {str(p.plan): p.ms for p in points},
                         "passes": {str(plan): ms for plan, ms in passes.items()}})
    effectiveness = {str(p.plan): p.effectiveness for p in candidates}
    return {"collection": name, "calibration": frontier.topics, "queries": len(texts), "k": frontier.k,
            "plans": [{"plan": str(p.plan), "effectiveness": p.effectiveness, "grid_ms": p.ms,
                       "sets_pace": sets_pace(p.plan, p.ms)} for p in candidates],
            "rounds": recorded, "rules": replay_all(recorded, effectiveness, candidates)}


def markdown(results: dict) -> str:
    lines = runtime.heading(
        results, "Choosing the frontier from noisy timings",
        f"Every plan calibration considered, timed end to end {results['rounds']} times over the calibration "
        f"topics; each rule replayed on every ordered choice of {USED} of those timings, and judged on the "
        "others (a plan's latency there: the mean of its passes).")
    if "replayed" in results:
        lines += [f"The rules replayed on these timings at commit {results['replayed']['git_commit'][:10]} "
                  f"(`{results['replayed']['command']}`).", ""]
    lines += ["Kept: the share of the plans that belong on the frontier that the rule's frontier holds. "
              "1 % plan: the rule's fastest plan within 1 % of the best nDCG@10, its latency over that of the "
              f"fastest such plan that belongs (median), and how often that is over {MISS}x. Budgets hold: "
              f"the share of frontier plans whose latency is at most {TOLERANCE}x the rule's price, and the "
              "share of replays in which all do; the same share for the plans that do not set the planner's pace (BM25 "
              "alone, plans under half a millisecond), which nothing cheaper makes up for. Lost: nDCG@10 lost at budgets set at the latencies of the "
              "plans that belong on the frontier, against those plans, where the rule's frontier has a plan "
              "within the budget; refused: the share of those budgets below its cheapest price.", "",
              "| collection | rule | kept | 1 % plan: x the best, over 1.2x | budgets hold: plans, replays "
              "| worst latency / price (median) | plans that do not set the pace: all hold | nDCG@10 lost "
              "| budgets refused | frontier plans | plans timed |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in results["collections"]:
        for rule, r in c["rules"].items():
            lines.append(f"| {c['collection']} | {rule} | {r['kept']:.0%} | {r['ratio_median']:.2f}, "
                         f"{r['ratio_over_miss']:.0%} | {r['holds']:.0%}, {r['all_hold']:.0%} | "
                         f"{r['worst_median']:.2f} | {r['unpaced_hold']:.0%} | {r['lost']:.4f} | "
                         f"{r['refused']:.0%} | {r['plans']:.1f} | {r['timed']:.1f} |")
    lines += ["", "Each plan's timings (ms; calibration's end-to-end latency, round by round):", ""]
    for c in results["collections"]:
        lines += [f"### {c['collection']} ({c['queries']} calibration topics)", "",
                  "| plan | nDCG@10 | grid ms | timings ms | highest / lowest |", "|---|---|---|---|---|"]
        for q in c["plans"]:
            ms = [r["ms"][q["plan"]] for r in c["rounds"]]
            lines.append(f"| {q['plan']} | {q['effectiveness']:.4f} | {q['grid_ms']:.2f} | "
                         f"{' / '.join(f'{x:.2f}' for x in ms)} | {max(ms) / min(ms):.2f} |")
        lines.append("")
    return "\n".join(lines)


def summary_table(results: dict) -> str:
    """The README's table: each rule's share of the plans that belong on the frontier kept, its budgets
    holding, and its cost, per collection."""
    lines = ["| collection | rule | kept | budgets hold: plans, replays | BM25 alone and plans under 0.5 ms: "
             "all hold | nDCG@10 lost | budgets refused | plans timed |", "|---|---|---|---|---|---|---|---|"]
    for c in results["collections"]:
        for rule, r in c["rules"].items():
            lines.append(f"| {c['collection']} | {rule} | {r['kept']:.0%} | {r['holds']:.0%}, {r['all_hold']:.0%} | "
                         f"{r['unpaced_hold']:.0%} | {r['lost']:.4f} | {r['refused']:.0%} | {r['timed']:.1f} |")
    replayed = (f" The rules replayed at {results['replayed']['git_commit'][:7]} on the timings of:"
                if "replayed" in results else "")
    return ("\n".join(lines) + f"\n\nEach rule replayed on every ordered choice of {results['used']} of "
            f"{results['rounds']} end-to-end timings of every plan, judged on the others.{replayed} "
            + runtime.table_source(results, "experiments/results/frontier_choice/frontier_choice.json"))


def replay_results(argv: list[str] | None) -> None:
    """The rules replayed on the recorded timings (after a rule changed); the timings' provenance stays,
    and the replay's own is recorded beside it."""
    import json

    path = OUT / "frontier_choice.json"
    if not path.exists():
        raise SystemExit(f"{path}: no recorded timings to replay; run without --replay first")
    results = json.loads(path.read_text())
    for c in results["collections"]:
        candidates = as_points(c["plans"])
        c["rules"] = replay_all(c["rounds"], {str(p.plan): p.effectiveness for p in candidates}, candidates)
    results["replayed"] = runtime.record("experiments.frontier_choice", 1, argv)
    path.write_text(json.dumps(results, indent=2) + "\n")  # the timings' own load at the end stays
    text = markdown(results)
    (OUT / "frontier_choice.md").write_text(text)
    print(text)


def main(argv: list[str] | None = None) -> None:
    parser = runtime.collections_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=8, help=f"end-to-end timings of every plan (more than {USED})")
    parser.add_argument("--replay", action="store_true",
                        help="replay the rules on the timings in the results file again, timing nothing")
    args = parser.parse_args(argv)
    if args.replay:
        return replay_results(argv)
    if args.rounds <= USED:
        parser.error(f"--rounds must be more than {USED}: a replay uses {USED} and is judged on the rest")
    runtime.over_collections("experiments.frontier_choice", argv, args.datasets,
                             lambda name, model: run(name, model, args.rounds), OUT, "frontier_choice",
                             markdown, rounds=args.rounds, used=USED)


if __name__ == "__main__":
    main()
