"""Calibration: measure a grid of plans on real topics, keep the Pareto frontier, learn early stopping.

Every query is encoded alone, up to each layer, in several passes over the topics (each
query's median counts); each plan then runs from those vectors one query at a time,
and a plan's estimated latency is its deepest layer's encoding plus its own stages.

Beside the searcher's own encoder, the topics are also encoded with its cheaper variants
(``QUERY_VARIANTS``: the int8 graphs beside fp32 ONNX), and every plan that encodes its query is
tried with them too (``encoder=onnx-int8``): a budget can then buy a cheaper encoding of the
query rather than a smaller size. The topics say what each encoding costs in effectiveness.

The plans on the Pareto frontier of those estimates are then timed end to end, as searches
(``end_to_end``), twice, and the frontier is taken again over the mean of each plan's two measured
latencies (``choose_frontier``). A plan whose searches do not set the planner's pace (BM25 alone)
keeps its budgets through a slow spell of the machine: it is timed after every other plan's pass as
well, and takes its slowest mean over 1,000 consecutive searches (``STEADY_WINDOW``) in either
measurement; BM25 alone also runs blocks of 1,000 searches through the grid's minutes and the
timings', and on to at least ``SPELL_SPAN`` seconds in all (``Spells``), and takes the slowest block's
mean where that is slower. Effectiveness is scored with ir-measures.

Early stopping: for each multi-stage frontier plan, a query whose shortlist is
decisive (``searcher.decisiveness`` of its first stage reaches a margin) skips the
middle stages and has only its top k rescored. The margin is the lowest one at which
the calibration topics lose at most ``tolerance`` of the plan's effectiveness.
"""
from __future__ import annotations

import dataclasses
import statistics
import time

import ir_measures
import numpy as np
from tqdm.auto import tqdm

from retrieval.evaluate import depth_for, judged_topics, parse_measures, score, to_run
from retrieval.frontier import Frontier, Point, pareto
from retrieval.plan import Plan
from retrieval.planner import Planner, index_key, searcher_key, sets_pace
from retrieval.searcher import Searcher, decisiveness
from starbucks.heap import settle
from starbucks.sizes import Size
from starbucks.topics import Qrels


# Query encoders calibration tries beside the searcher's own, by its kind: int8 graphs encode a query in
# well under half the fp32 time; whether the vectors they give rank as well is for the topics to say.
QUERY_VARIANTS = {"onnx": ("onnx-int8",)}
# A plan that does not set the pace is calibrated at its slowest mean over this many consecutive searches
# (``end_to_end``): as many as a budget's verdict in ``experiments.query_path`` is a mean over.
STEADY_WINDOW = 1000
# End-to-end timings of every plan the frontier is chosen from (``choose_frontier``).
TIMINGS = 2
# During the grid, BM25 alone runs a budget's block of searches whenever this many seconds have passed
# (``Spells``), and its blocks take at most this share of the grid's time (where BM25 is slow, at scale).
SPELL_SECONDS = 5.0
SPELL_SHARE = 0.1
# The least time those blocks sample, from the grid's start through the end-to-end timings: a small
# collection's calibration waits out the rest, a block every SPELL_SECONDS (``Spells.through``).
SPELL_SPAN = 120.0


class Encoded:
    """Every stored size of every query, and per query the ms to encode it up to each layer
    (with ``encoder``, else the searcher's own)."""

    def __init__(self, searcher: Searcher, queries: list[str], progress: bool = True, repeats: int = 3,
                 encoder=None):
        encoder = encoder or searcher.encoder
        self.kind = None if encoder is searcher.encoder else encoder.kind  # as a plan names it (None: the searcher's)
        sizes = searcher.index.sizes
        layers = sorted({s.layer for s in sizes})
        self.vectors = {s: np.empty((len(queries), s.dim), dtype=np.float32) for s in sizes}
        self.encode_ms = {layer: np.empty(len(queries)) for layer in layers}
        self.encode_ms[0] = np.zeros(len(queries))  # a BM25-only plan encodes nothing
        self.texts = list(queries)
        encoder.encode_queries(queries[:1], sizes)  # warm-up
        # As a search meets them: every query once per pass, each after a different one (timing the
        # same query back to back finds its shapes and memory warm, and under-states the cost).
        times = {layer: np.empty((repeats, len(queries))) for layer in layers}
        bar = tqdm(total=repeats * len(layers) * len(queries), desc=f"encoding topics ({encoder.kind})", unit="query",
                   disable=not progress, leave=False)
        for r in range(repeats):
            for layer in layers:
                wanted = sizes if layer == layers[-1] else [s for s in sizes if s.layer == layer]
                for i, query in enumerate(queries):
                    t = time.perf_counter()
                    out = encoder.encode_queries([query], wanted)
                    times[layer][r, i] = (time.perf_counter() - t) * 1000
                    if r == 0:
                        for s in wanted:
                            self.vectors[s][i] = out[s][0]
                    bar.update()
        bar.close()
        for layer in layers:  # each query's median over the passes: one disturbed pass does not count
            self.encode_ms[layer] = np.median(times[layer], axis=0)

    def __len__(self) -> int:
        return len(self.texts)

    def text(self, i: int) -> list[str]:
        return self.texts[i : i + 1]

    def query(self, i: int, plan: Plan) -> dict[Size, np.ndarray]:
        return {s: self.vectors[s][i : i + 1] for s in set(plan.sizes)}


Encodings = Encoded | dict  # one encoder's, or each encoder's by the name plans give it (None: the searcher's)


def encoded_for(encoded: Encodings, plan: Plan) -> Encoded:
    """The topics as ``plan``'s encoder encoded them; an error when they were not encoded with it."""
    found = encoded.get(plan.encoder) if isinstance(encoded, dict) else encoded
    if found is None or found.kind != plan.encoder:
        raise ValueError(f"plan {plan}: the topics were not encoded with its encoder")
    return found


def run_plan(searcher: Searcher, plan: Plan, encoded: Encodings, qids: list[str], k: int,
             margin: float | None = None, repeats: int = 3) -> tuple[dict[str, list[str]], float, float]:
    """Run ``plan`` one query at a time, ``repeats`` passes: rankings, mean ms per query (encoding
    included, by the plan's encoder; each query's median over the passes), stopped fraction."""
    layer = plan.layer
    encoded = encoded_for(encoded, plan)
    rankings, stopped = {}, 0
    runs = np.empty((repeats, len(qids)))
    for r in range(repeats):  # whole passes, so a burst of other work hits one pass, not every one
        for i, qid in enumerate(qids):
            t = time.perf_counter()
            result = searcher.run(plan, encoded.query(i, plan), k, margin, texts=encoded.text(i))[0]
            runs[r, i] = (time.perf_counter() - t) * 1000
            if r == 0:
                rankings[qid] = result.docids
                stopped += result.stopped_early
    total = encoded.encode_ms[layer] + np.median(runs, axis=0)
    return rankings, float(np.mean(total)), stopped / len(qids)


def measure_plans(searcher: Searcher, plans: list[Plan], encoded: Encodings, qids: list[str], qrels: Qrels,
                  measure, k: int, progress: bool = True, between=None) -> list[Point]:
    """Each plan's measured latency and effectiveness over the topics; ``between()`` is called after each
    plan (``Spells``)."""
    points = []
    for plan in tqdm(plans, desc="measuring plans", unit="plan", disable=not progress, leave=False):
        rankings, ms, _ = run_plan(searcher, plan, encoded, qids, k)
        points.append(Point(plan, ms, score(rankings, qrels, [measure])[str(measure)]))
        if between is not None:
            between()
    return points


def _per_query(rankings: dict[str, list[str]], qrels: Qrels, measure) -> dict[str, float]:
    values = {m.query_id: m.value for m in ir_measures.iter_calc([measure], qrels, to_run(rankings))}
    return {q: values.get(q, 0.0) for q in rankings}


def learn_margin(searcher: Searcher, point: Point, encoded: Encodings, qids: list[str],
                 qrels: Qrels, measure, k: int, tolerance: float) -> Point:
    """The lowest decisiveness margin losing at most ``tolerance`` of the plan's effectiveness, and its effect."""
    plan, first = point.plan, point.plan[0]
    vectors = {s: encoded_for(encoded, plan).vectors[s] for s in set(plan.sizes)}
    full = _per_query({q: r.docids for q, r in zip(qids, searcher.run(plan, vectors, k))}, qrels, measure)
    early = _per_query({q: r.docids for q, r in zip(qids, searcher.run(plan, vectors, k, margin=0.0))}, qrels, measure)
    scores, rows = searcher.first_stage(first, vectors[first.size])
    decisive = [decisiveness(s[r >= 0], k) for s, r in zip(scores, rows)]
    allowed = tolerance * statistics.fmean(full.values()) * len(qids)
    order = sorted(range(len(qids)), key=lambda i: -decisive[i])
    margin, loss = None, 0.0
    for j, i in enumerate(order):
        loss += full[qids[i]] - early[qids[i]]
        boundary = j + 1 == len(order) or decisive[order[j + 1]] < decisive[i]
        if boundary and loss <= allowed:
            margin = decisive[i]  # stop every query at least this decisive
    rankings, ms, stopped = run_plan(searcher, plan, encoded, qids, k,
                                     margin if margin is not None else float("inf"))
    early_effect = {"stopped": stopped, "ms": ms, "effectiveness": score(rankings, qrels, [measure])[str(measure)],
                    "tolerance": tolerance}
    return dataclasses.replace(point, margin=margin, early=early_effect)


def end_to_end(searcher: Searcher, points: list[Point], texts: list[str], k: int, repeats: int = 3,
               passes: dict | None = None, between=None) -> list[Point]:
    """The points with their latency measured as a budgeted search pays it: ``search(text, budget=ms)``
    with a planner that chooses the point's plan (``Planner.pinned``), so the planner's own work for each
    search counts, query after query, in ``repeats`` passes; each pass runs every plan over every query in
    turn, so the passes of one plan lie minutes apart. A point keeps the mean of its slowest pass. The budget contract is about
    mean latency, and on a shared machine the same block of searches runs slower at some times than at
    others: a plan selected by a budget its slowest pass fits keeps that promise more often than one
    whose average pass just fits. (A mean, not a per-query median: a median drops the occasional slow
    search the contract counts.) Each plan's pass starts after another plan's, with the caches that one
    left, as a search after other work does; running a cheap plan's topics again within its pass would
    find their postings warm and under-state it.

    A plan that does not set the planner's pace (``planner.sets_pace``: BM25 alone, or a plan under half a
    millisecond) keeps its plan through a slow spell, so its latency must hold through one: it also
    searches the topics once after every other plan's pass, which spreads its searches over the whole
    measurement, and keeps the slowest mean over ``STEADY_WINDOW`` of its consecutive searches where that
    is slower than its slowest pass. (On a shared virtual machine the same plan's mean over 1,000 searches
    moves by more than the budget contract's 1.1x from one minute to the next with nothing else running
    on it: ``experiments.noise_floor``; budgets on plans that set the pace move to cheaper plans then.)

    The grid's latencies add encoding, timed alone, to each plan's stages, timed alone; in a real search
    the encoder's weights pass through the caches between them, so the sum under-states the whole
    (by 10-40 % here). Only the grid's Pareto points are measured again: they are few, and a plan the
    grid finds dominated stays dominated by much the same margin.

    ``passes``: gets each plan's pass means (ms), in order, by plan. ``between()`` is called after each
    plan's pass (``Spells``).
    """
    times = np.empty((len(points), repeats, len(texts)))
    steady = {j: [] for j, p in enumerate(points) if not sets_pace(p.plan, p.ms)}  # each one's searches, in order
    pinned = [Planner.pinned(searcher, p, k) for p in points]  # each plan searched as a budget that chooses it

    def sweep(j: int, texts: list[str] = texts) -> np.ndarray:
        return searched(searcher, pinned[j], texts, k)

    own = searcher._planner
    try:
        for j in range(len(points)):
            sweep(j, texts[:1])  # warm-up
        for r in range(repeats):
            for j in range(len(points)):
                times[j, r] = sweep(j)
                if j in steady:
                    steady[j].append(times[j, r])
                for s, searches in steady.items():
                    if s != j:
                        searches.append(sweep(s))
                if between is not None:
                    between()
    finally:
        searcher._planner = own
    slowest = times.mean(axis=2).max(axis=1)
    if passes is not None:
        passes.update({p.plan: times[j].mean(axis=1).tolist() for j, p in enumerate(points)})
    for j, searches in steady.items():
        slowest[j] = max(slowest[j], slowest_window(np.concatenate(searches), STEADY_WINDOW))
    tokens = np.asarray(searcher.encoder.token_counts(texts), dtype=np.float64)
    per_query = np.median(times, axis=1)
    return [dataclasses.replace(p, ms=float(ms), **per_token(tokens, q) if p.plan.sizes else {})
            for p, ms, q in zip(points, slowest, per_query)]


def searched(searcher: Searcher, pinned: tuple[Planner, float], texts: list[str], k: int) -> np.ndarray:
    """Each text searched in turn through a pinned planner (``Planner.pinned``): the ms of each search.
    The searcher keeps that planner; the caller puts its own back."""
    searcher._planner, budget = pinned
    ms = np.empty(len(texts))
    for i, text in enumerate(texts):
        t = time.perf_counter()
        searcher.search(text, k=k, budget=budget)
        ms[i] = (time.perf_counter() - t) * 1000
    return ms


class Spells:
    """BM25 alone (the plans that encode nothing, which never set the planner's pace), timed through the
    whole calibration: whenever ``SPELL_SECONDS`` have passed since the last, between two of the grid's
    plans (``measure_plans``) or two plans' passes of the end-to-end timings (``end_to_end``),
    ``STEADY_WINDOW`` searches in a row over the topics, as a budget's block runs them; never more than
    ``SPELL_SHARE`` of the time (a block that took d seconds waits at least 9 d for the next); and where
    that is over before ``SPELL_SPAN`` seconds, on until then (``through``). ``slowest``: by plan, the
    slowest such block's mean.

    A budget on such a plan keeps it through a slow spell of the machine: nothing cheaper makes up for
    it. The spells of a shared machine last seconds to minutes, and can leave every plan 1.3-1.5x slower
    than the minute before (``experiments.frontier_choice``), so the end-to-end timings' minute or two can
    miss them all; the grid's minutes meet more of them, and a small collection's grid lasts under a
    minute (``experiments.spell_span`` replays sampling spans on a recording of block after block)."""

    def __init__(self, searcher: Searcher, plans: list[Plan], texts: list[str], k: int):
        self.searcher, self.texts, self.k = searcher, texts, k
        self.pinned = {p: Planner.pinned(searcher, Point(p, 1.0, 0.0), k) for p in plans if not p.sizes}
        self.blocks: dict[Plan, list[float]] = {p: [] for p in self.pinned}
        self.passes = -(-STEADY_WINDOW // max(len(texts), 1))
        self.began = self.last = time.monotonic()
        self.wait = SPELL_SECONDS

    def due(self) -> float:
        """Seconds until the next block may run (0 or less: now)."""
        return self.last + self.wait - time.monotonic()

    def through(self, seconds: float | None = None, progress: bool = False) -> None:
        """Blocks on, one whenever due, until ``seconds`` (default ``SPELL_SPAN``) have passed since the
        first could; waiting between them."""
        end = self.began + (SPELL_SPAN if seconds is None else seconds)
        if not self.pinned or time.monotonic() >= end:
            return
        with tqdm(total=round(end - time.monotonic()), desc="timing BM25 alone through the machine's spells",
                  unit="s", disable=not progress, leave=False) as bar:
            while (left := end - time.monotonic()) > 0:
                time.sleep(max(0.0, min(left, self.due())))
                self()
                bar.update(max(0, round(bar.total - (end - time.monotonic())) - bar.n))

    def __call__(self) -> None:
        if not self.pinned or self.due() > 0:
            return
        start = time.monotonic()
        own = self.searcher._planner
        try:
            for plan, pinned in self.pinned.items():
                searched(self.searcher, pinned, self.texts[:1], self.k)  # warm-up
                block = np.concatenate([searched(self.searcher, pinned, self.texts, self.k)
                                        for _ in range(self.passes)])
                self.blocks[plan].append(float(block.mean()))
        finally:
            self.searcher._planner = own
        self.last = time.monotonic()
        self.wait = max(SPELL_SECONDS, (self.last - start) * (1 - SPELL_SHARE) / SPELL_SHARE)

    @property
    def slowest(self) -> dict[Plan, float]:
        return {p: max(b) for p, b in self.blocks.items() if b}


def slowest_window(ms: np.ndarray, window: int) -> float:
    """The largest mean over ``window`` consecutive values of ``ms`` (all of them, where fewer)."""
    if len(ms) <= window:
        return float(ms.mean())
    sums = np.cumsum(np.concatenate([[0.0], ms]))
    return float((sums[window:] - sums[:-window]).max() / window)


def per_token(tokens: np.ndarray, ms: np.ndarray) -> dict:
    """How a plan's latency grows with its query's tokens: the least-squares slope of each query's ms
    over its token count (never below 0), and the topics' mean token count it is taken from
    (``Point.per_token_ms``, ``Point.tokens``). The encoder's work grows with the tokens; SciFact's
    claims (8 to 64 tokens) run from under half to twice their plan's mean."""
    spread = tokens - tokens.mean()
    var = float(spread @ spread)
    slope = max(float(spread @ (ms - ms.mean())) / var, 0.0) if var > 0 else 0.0
    return {"per_token_ms": slope, "tokens": float(tokens.mean())}


def choose_frontier(searcher: Searcher, candidates: list[Point], texts: list[str], k: int,
                    timings: int = TIMINGS, spells: "Spells | None" = None,
                    progress: bool = False) -> tuple[list[Point], list[list[Point]]]:
    """The frontier of ``candidates`` timed end to end: every candidate is timed ``timings`` times
    (``end_to_end``, one measurement after another), and a plan takes the mean of its latencies; a plan
    that does not set the planner's pace (``sets_pace``: BM25 alone, or one under half a millisecond),
    the slowest. (frontier, each timing's points)

    On a shared machine a spell moves every plan timed in it alike: one calibration's three passes over
    every plan can run 1.5x slower than the next one's (``experiments.frontier_choice``). A frontier
    chosen from one timing, or from a timing of some plans and a later one of others, keeps or drops a
    plan by the spell it was timed in; every candidate timed in every measurement is weighed by all of
    them alike. Replayed on ten timings of every plan calibration considered, this kept more of the plans
    that belong on the frontier than choosing by one timing and confirming the chosen plans by a second,
    with more budgets holding and as many plans timed. A plan that does not set the pace keeps its budgets
    through a slow spell, so its latency must hold through one anywhere in the measurement, and the
    cheapest plan has nothing cheaper to make up on: it keeps its slowest timing, or the slowest block of
    ``spells`` (run between the timings' passes, and on to its span: ``Spells.through``) where that is
    slower."""
    if timings < 1:
        raise ValueError(f"timings must be 1 or more, not {timings!r}")
    measured = [end_to_end(searcher, candidates, texts, k, between=spells) for _ in range(timings)]
    floors = {}
    if spells is not None:
        spells.through(progress=progress)
        floors = spells.slowest
    points = []
    for p, *times in zip(candidates, *measured):
        ms = [t.ms for t in times]
        latency = typical = statistics.fmean(ms)
        if not sets_pace(p.plan, latency):
            latency = max(ms + [floors.get(p.plan, 0.0)])
        points.append(dataclasses.replace(times[-1], ms=latency, typical_ms=typical if latency > typical else None,
                                          per_token_ms=statistics.fmean(t.per_token_ms for t in times)))
    return pareto(points), measured


def calibrate(searcher: Searcher, topics: dict[str, str], qrels: Qrels, measure: str = "nDCG@10",
              tolerance: float = 0.01, topics_name: str = "", progress: bool = True,
              remeasure: bool = False, query_encoders: "tuple[str, ...] | None" = None) -> tuple[Frontier, list[Point]]:
    """Measure every plan the planner considers; the frontier (with early-stopping margins) and every point.

    ``query_encoders``: other encoders to try every plan that encodes its query with (as ``encoder=``
    plans); default ``QUERY_VARIANTS`` of the searcher's encoder (the int8 graphs beside fp32 ONNX),
    ``()`` for the searcher's own only."""
    if not 0 <= tolerance < 1:
        raise ValueError(f"tolerance must be a fraction in [0, 1), not {tolerance!r}")
    (m,) = parse_measures([measure])
    if remeasure:
        searcher.planner.remeasure()
    topics = judged_topics(topics, qrels)
    qids = list(topics)
    k = min(depth_for([m]), len(searcher.index))
    if query_encoders is None:
        query_encoders = QUERY_VARIANTS.get(searcher.encoder.kind, ())
    texts = [topics[q] for q in qids]
    encoded = {None: Encoded(searcher, texts, progress)}
    for kind in query_encoders:
        encoded[kind] = Encoded(searcher, texts, progress, encoder=searcher.encoder_named(kind))
    plans = searcher.planner.candidates(k)
    plans += [p.with_encoder(kind) for kind in query_encoders for p in plans if p.sizes]
    spells = Spells(searcher, plans, texts, k)
    points = measure_plans(searcher, plans, encoded, qids, qrels, m, k, progress, between=spells)
    settle()  # the grid's rankings, kept, stay out of the collector's passes during the timings that follow
    candidates = pareto(points)
    chosen, measured = choose_frontier(searcher, candidates, texts, k, spells=spells, progress=progress)
    frontier = [learn_margin(searcher, p, encoded, qids, qrels, m, k, tolerance)
                if len(p.plan) > 1 and not p.plan.uses_bm25 else p
                for p in chosen]
    kept = {p.plan for p in frontier}
    timed = [{"plan": str(c.plan), "effectiveness": c.effectiveness, "grid_ms": c.ms,
              "ms": [t.ms for t in times], "on_frontier": c.plan in kept,
              **({"spells_ms": spells.blocks[c.plan]} if spells.blocks.get(c.plan) else {})}
             for c, *times in zip(candidates, *measured)]
    result = Frontier(machine=searcher_key(searcher), index=index_key(searcher.index), measure=str(m), k=k,
                      topics=topics_name, queries=len(qids), plans_measured=len(plans), points=frontier,
                      timed=timed)
    return result, points
