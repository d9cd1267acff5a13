"""Turn a latency budget into a plan, from latencies measured on this machine.

The cost model holds three measured tables, cached in ``costs.json`` in the index
folder:

* ``encode_ms[layer]``: encoding one query up to that layer, with the searcher's encoder;
* ``first_ms[size][keep]``: the first stage at that size (its FAISS index, or an
  exact scan of the stored vectors) returning ``keep`` candidates;
* ``rescore_us[size]``: rescoring one candidate at that size (fetch + dot product).

A plan's predicted latency is ``encode_ms[deepest layer] + first_ms[first size][keep]``
plus, for every later stage, ``rescore_us[size] x candidates it receives``.

A measurement belongs to the machine, the encoder, the thread count and the rerank tier (``machine_key``):
change any and it is measured again. Encoding is measured in separate rounds; rounds that
disagree (other work on the machine) are retried once and then used but never cached.
Budgeted searches record their latency against the prediction (``Planner.observe``). When the
median ratio of the last few runs more than 10 % over 1, that is the machine's pace: a budget takes
the plans whose latency times the pace fits it, so a budget keeps its promise while the machine runs
slower than it was measured. A calibrated budget the pace moved off its own plan then shares its
searches between the plan that fits and the next more effective one (never past its own), at the share
whose mean fits (``Blend``): the budget is spent, and the plan that sets the pace stays in service to
see the machine recover. A budget whose searches ran past 1.1x it by more than a few budgets in all (a
stop of the machine, which no pace sees) makes that up on cheaper plans (``OVERRUN_FROM``). When recent
ratios run well away from 1 the cost model is measured again.

Choosing: after ``starbucks calibrate`` (``calibration.json`` measured on this machine,
encoder and index), the most effective calibrated plan whose measured latency fits the
budget. Without one, the cost model alone: among candidate plans whose prediction fits the
budget, the one expected to be most effective wins. Expected effectiveness orders plans
by their last stage's size (deeper, then wider), then their first stage's size, then
how many candidates reach the last stage; cost breaks ties. The first such choice warns
once, and ``Planner.source`` says which was used. ``budget=None`` measures nothing: the
calibrated frontier's most effective plan, or else a default cascade (a shortlist at the
widest last-layer shortlist size, reranked at the full size). Choices are cached per
(budget, k).
"""
from __future__ import annotations

import collections
import dataclasses
import json
import math
import os
import platform
import statistics
import threading
import time
import typing
import warnings

import numpy as np

from indexes.files import atomic_write_json
from retrieval.frontier import Frontier, Point
from retrieval.plan import BM25, Plan, Stage
from starbucks.sizes import Size

COSTS = "costs.json"
KEEPS = (50, 100, 200, 500, 1000, 2000)
MIDDLE_KEEPS = (50, 100, 200)
MEASURE_ROUNDS = 3  # separate rounds of the encoding measurement
MAX_SPREAD = 1.5  # rounds further apart than this: the machine was busy; not cached
DRIFT = 1.5  # observed latency this far above or below the prediction (median of recent queries): re-measure
DRIFT_WINDOW = 16  # budgeted queries the drift check looks at
# A drift counts once every check has found it, on the same side, for DRIFT_SECONDS: a lasting change (another
# machine, encoder or load) rather than a spell of the machine, which the pace follows. The query-path runs
# saw the median of 16 searches at 1.5-1.6x for a while on collections whose budgets all held.
DRIFT_SECONDS = 60.0
PACE_WINDOW = 8  # budgeted queries the pace is the median of
PACE_STEP = 0.05  # a pace this far (relative) from the one the cached choices were made at chooses again
PACE_SLACK = 1.1  # the pace counts only when searches run slower than this (the budget contract's tolerance)
# Only plans that encode their query, predicted at PACE_MIN_MS or more, set the pace. BM25 alone does not:
# its cost follows its terms' postings, which no expectation here knows (``experiments.pace_ratios``:
# ratios' sd 0.13-0.42, against 0.03-0.11 for plans that encode, from 0.77 ms up); nor does a plan so
# cheap that the timer and fixed overheads dominate it.
PACE_MIN_MS = 0.5
# Budgeted searches whose mean query length the choices follow: long enough that a stretch of long topics
# does not move it (NFCorpus's dev topics, in file order: 64-search means 4.7-10.3 tokens, 256-search
# 6.2-7.8, all 7.1), short enough to follow a lasting change within a few seconds of searches.
LENGTH_WINDOW = 256
# A mean query length this far (relative, and at least LENGTH_MIN_STEP tokens) from the one choices were made
# at chooses again: a quarter more tokens raises an encoding plan's latency by about the contract's tolerance.
LENGTH_STEP = 0.25
LENGTH_MIN_STEP = 2.0
PACE_EXPIRY = 32  # budgeted searches without a plan that sets the pace, after which it returns to 1
# A budget's overrun: the milliseconds its searches ran past PACE_SLACK x the budget, less what later searches
# ran under it (never below 0). Once it exceeds OVERRUN_FROM budgets (a stop of the machine: no pace sees
# one search), the budget makes it up: it chooses as if it were its overrun / MAKE_UP_SEARCHES less
# (cut in steps of 1/CUT_STEPS; the cheapest plan at most), so its mean over any stretch of searches that
# starts and ends with no overrun, and never reached OVERRUN_MAX, stays within PACE_SLACK x the budget.
OVERRUN_FROM = 8  # budgets: a few slow searches stay below it; on a 1,000-search mean it is 0.8 % of the budget
MAKE_UP_SEARCHES = 100
# An overrun is kept up to this many budgets: a longer stop (seconds of a migrated machine) would otherwise
# keep a budget on cheaper plans for many thousands of searches, and no mean over 1,000 can absorb it anyway.
OVERRUN_MAX = 1000
CUT_STEPS = 20
SPARSE_KEEPS = (100, 200, 500, 1000)  # BM25 shortlist depths the planner considers
FUSIONS = ("rrf", "linear:0.3", "linear:0.5", "linear:0.7")  # fusions of BM25 with the full size it considers
EXIT_SPARSE_KEEPS = (100, 1000)  # BM25 depths reranked at an earlier layer's exit
EXIT_FUSIONS = ("linear:0.5", "linear:0.7")  # ... and fused with it
SEARCH_VALUES = {"ef": (32, 64, 256), "nprobe": (4, 16, 64)}  # per-search values tried beside the stored one
DEFAULT_SHORTLIST = 1000  # candidates the uncalibrated default cascade reranks
SAMPLE_QUERIES = (
    "what is the best way to reduce memory use in a search engine",
    "symptoms of vitamin d deficiency",
    "how do graph algorithms find shortest paths",
    "history of the printing press",
    "effects of exercise on blood pressure",
    "define information retrieval",
    "who invented the telephone",
    "causes of inflation in developing economies",
)


def sets_pace(plan: Plan, ms: float) -> bool:
    """Whether searches with ``plan``, expected to take ``ms``, tell the planner the machine's pace: it
    encodes its query and costs ``PACE_MIN_MS`` or more. A budget whose plan does not cannot learn that
    the machine runs slow, and keeps its plan through a slow spell (calibration times such plans for it:
    ``retrieval.calibrate.end_to_end``)."""
    return bool(plan.sizes) and ms >= PACE_MIN_MS


def machine_key(encoder=None, rerank_tier: str = "mmap") -> str:
    """What a measured latency depends on: the processor, the cores, and the encoder, thread
    count and rerank tier that search (a measurement taken with another setting does not apply)."""
    import faiss
    import torch

    kind = getattr(encoder, "kind", "torch")
    threads = getattr(encoder, "threads", None) or torch.get_num_threads()
    return (f"{platform.machine()}|cpus={os.cpu_count()}|encoder={kind}|threads={threads}"
            f"|torch_threads={torch.get_num_threads()}|faiss_threads={faiss.omp_get_max_threads()}"
            + ("" if rerank_tier == "mmap" else f"|rerank_tier={rerank_tier}"))


def searcher_key(searcher) -> str:
    """``machine_key`` for a searcher: its encoder and its rerank tier."""
    return machine_key(searcher.encoder, getattr(searcher, "rerank_tier", "mmap"))


@dataclasses.dataclass
class CostModel:
    machine: str
    index: str  # corpus + model fingerprint of the index it was measured on
    encode_ms: dict[int, float]
    first_ms: dict[Size, dict[int, float]]
    rescore_us: dict[Size, float]
    spread: float = 1.0  # largest over smallest of the encoding rounds: far above 1 means disturbed
    load_average: float | None = None  # the 1-minute load average when measured

    @property
    def contended(self) -> bool:
        """Whether the measurement was disturbed by other work (its rounds disagree)."""
        return self.spread > MAX_SPREAD

    def first(self, size: Size, keep: int) -> float:
        """Interpolate the first-stage cost linearly in keep between measured points."""
        table = sorted(self.first_ms[size].items())
        keeps = [k for k, _ in table]
        return float(np.interp(keep, keeps, [ms for _, ms in table]))

    def predict(self, plan: Plan) -> float:
        """Predicted milliseconds for one query."""
        ms = self.encode_ms.get(plan.layer, 0.0) + self.first(first_key(plan[0]), plan[0].keep)
        for prev, stage in zip(plan, plan[1:]):
            ms += self.rescore_us[stage.size] * prev.keep / 1000
        if plan[-1].fuse and not plan[0].sparse:  # BM25 scores every row for the fusion
            ms += self.first(BM25, 1)
        return ms

    def to_dict(self) -> dict:
        return {
            "machine": self.machine, "index": self.index,
            "encode_ms": {str(k): v for k, v in self.encode_ms.items()},
            "first_ms": {str(s): {str(k): v for k, v in t.items()} for s, t in self.first_ms.items()},
            "rescore_us": {str(s): v for s, v in self.rescore_us.items()},
            "spread": self.spread, "load_average": self.load_average,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "CostModel":
        return cls(
            machine=d["machine"], index=d["index"],
            encode_ms={int(k): v for k, v in d["encode_ms"].items()},
            first_ms={_stage_size(s): {int(k): v for k, v in t.items()} for s, t in d["first_ms"].items()},
            rescore_us={Size.parse(s): v for s, v in d["rescore_us"].items()},
            spread=d.get("spread", 1.0), load_average=d.get("load_average"),
        )


def _stage_size(text: str) -> Size | str:
    return text if text == BM25 or not text[:1].isdigit() or "~" in text else Size.parse(text)


def first_key(stage: Stage) -> Size | str:
    """What a first stage's cost is kept under: its size, or its text (``6x64~ef=32``, ``b6x384``, ``bm25``)."""
    return stage.size if not (stage.param or stage.binary) else stage.source


def first_stages(index) -> list[Stage]:
    """The first stages an index offers (keep 1, to be set): each shortlist size, with each of a few
    search parameter values when its FAISS index takes one (HNSW ef, IVF nprobe), and each binary shortlist
    (with such values too when it is a binary HNSW or IVF index)."""
    from indexes.faiss_index import param_values

    stages = []
    for size in index.manifest.shortlist:
        stages.append(Stage(size, 1))
        stages += [Stage(size, 1, param=p) for p in param_values(index.shortlist[size], SEARCH_VALUES)]
    binary = getattr(index, "binary", {})
    for size in sorted(binary):
        stages.append(Stage(size, 1, binary=True))
        stages += [Stage(size, 1, param=p, binary=True) for p in param_values(binary[size], SEARCH_VALUES)]
    return stages


def _median_ms(fn, repeats: int = 5) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def _encode_table(encoder, sizes, queries) -> dict[int, float]:
    """Median ms to encode one query up to each stored layer."""
    table = {}
    for layer in sorted({s.layer for s in sizes}):
        size = max(s for s in sizes if s.layer == layer)
        table[layer] = statistics.median(
            _median_ms(lambda q=q: encoder.encode_queries([q], [size]), 3) for q in queries[:4]
        )
    return table


def measure(searcher, rounds: int = MEASURE_ROUNDS) -> CostModel:
    """Time encoding, first stages and rescoring on this machine, one query at a time.

    Encoding, the largest cost, is measured in ``rounds`` separate rounds; the model keeps
    their median and records their spread (largest round over smallest), so a measurement
    disturbed by other work shows as such and is not cached (see ``Planner``).
    """
    index, encoder = searcher.index, searcher.encoder
    sizes = index.sizes
    queries = list(SAMPLE_QUERIES)
    vectors = encoder.encode_queries(queries, sizes)
    encode_rounds = [_encode_table(encoder, sizes, queries)]
    n = len(index)
    keeps = sorted({min(k, n) for k in KEEPS} | {1})
    first_ms = {}
    for size in sizes:
        q = vectors[size][:1]
        first_ms[size] = {k: _median_ms(lambda k=k: index.search(size, q, k), 3) for k in keeps}
    for stage in first_stages(index):
        if stage.param or stage.binary:
            q = vectors[stage.size][:1]
            first_ms[first_key(stage)] = {
                k: _median_ms(lambda k=k: searcher.first_stage(stage._replace(keep=k), q), 3) for k in keeps}
    if index.bm25 is not None:
        first_ms[BM25] = {k: _median_ms(lambda k=k: index.bm25.search(queries[:1], k), 3) for k in keeps}
    rng = np.random.default_rng(0)
    rows = rng.choice(n, size=min(n, 1000), replace=False)
    rescore_us = {}
    for size in sizes:
        q = vectors[size][0]
        tier = getattr(searcher, "tier", None)
        rescore_us[size] = _median_ms(lambda: index.rescore(size, q, rows, tier)) * 1000 / len(rows)
    encode_rounds += [_encode_table(encoder, sizes, queries) for _ in range(rounds - 1)]
    layers = list(encode_rounds[0])
    encode_ms = {layer: statistics.median(r[layer] for r in encode_rounds) for layer in layers}
    # Half a millisecond of slack: sub-millisecond timings jitter by more than 1.5x on any machine.
    spread = max((max(r[layer] for r in encode_rounds) + 0.5) / (min(r[layer] for r in encode_rounds) + 0.5)
                 for layer in layers)
    return CostModel(searcher_key(searcher), index_key(index), encode_ms, first_ms, rescore_us,
                     spread=spread, load_average=round(os.getloadavg()[0], 2))


class QueryPath(typing.NamedTuple):
    """What a planner measures a searcher's costs with: its index, encoder and rerank tier. Not the searcher
    itself, which holds its planner: a reference back would make the pair a reference cycle, and a cycle
    among objects frozen out of the collector's passes (:mod:`starbucks.heap`) is never freed."""

    index: object
    encoder: object
    tier: object = None
    rerank_tier: str = "mmap"

    @classmethod
    def of(cls, searcher) -> "QueryPath":
        return cls(searcher.index, searcher.encoder, getattr(searcher, "tier", None),
                   getattr(searcher, "rerank_tier", "mmap"))

    def first_stage(self, stage, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from retrieval.searcher import first_stage

        return first_stage(self.index, stage, queries)


def _length_step(tokens: float) -> float:
    return max(LENGTH_STEP * tokens, LENGTH_MIN_STEP)


def index_key(index) -> str:
    m = index.manifest
    return f"{m.model_fingerprint}:{m.corpus_fingerprint}:{m.index_type}"


def _size_key(size: Size | str) -> tuple[int, int]:
    return (0, 0) if size == BM25 else (size.layer, size.dim)


def _larger(a: Size, b: Size) -> bool:
    """b is worth rescoring with after a: no shallower, no narrower, not the same."""
    return b.layer >= a.layer and b.dim >= a.dim and b != a


class Blend:
    """Two calibrated plans a budget shares its searches between while the machine runs slow
    (``Frontier.blend``): ``above`` takes ``share`` of them, evenly spread (every search adds the share
    to a credit; one that reaches 1 runs ``above``), the rest run ``plan``."""

    def __init__(self, plan: Plan, above: Plan, share: float):
        self.plan, self.above, self.share = plan, above, share
        self._credit = 0.0

    def next(self) -> Plan:
        self._credit += self.share
        if self._credit >= 1.0:
            self._credit -= 1.0
            return self.above
        return self.plan

    def __repr__(self) -> str:
        return f"Blend({self.plan}, {self.above} for {self.share:.0%} of searches)"


def _runs(choice: "Plan | Blend") -> tuple:
    """What a choice runs: its plan, the plan blended in and that one's share."""
    return (choice.plan, choice.above, choice.share) if isinstance(choice, Blend) else (choice, None, 0.0)


class Planner:
    """Enumerates the plans an index supports and picks one for a budget.

    Nothing is measured until a budget in milliseconds needs the cost model; the default
    path (``budget=None``) never measures. Choices are cached per (budget, k) until the
    cost model changes.
    """

    def __init__(self, index, costs: CostModel | None = None, frontier: Frontier | None = None, searcher=None):
        self.index = index
        self._costs = costs
        self.frontier = frontier
        self.path = None if searcher is None else QueryPath.of(searcher)  # what costs are measured with
        self.source = "calibration" if frontier is not None else "cost model"
        self._warned = False
        self._drift_warned = False  # the calibrated drift warning is said once per planner
        self._over: set[float] = set()  # budgets warned about: even their cheapest plan runs over (at the pace, or overran)
        self._chosen: dict[tuple, Plan | Blend] = {}
        self._predicted: dict[tuple, Point | None] = {}  # (plan, calibrated) -> its latency, for observe
        self._ratios: collections.deque = collections.deque(maxlen=DRIFT_WINDOW)
        self._observed = 0  # budgeted searches recorded since the last drift check
        self._drift_side = 0  # where the last drift check found the median: 1 above DRIFT, -1 below 1/DRIFT, 0 within
        self._drift_since = 0.0  # when the checks last moved to that side (time.monotonic)
        self._paced: collections.deque = collections.deque(maxlen=PACE_WINDOW)  # ratios of plans that set the pace
        self._quiet = 0  # budgeted searches since the last one that could set the pace
        self.pace = 1.0  # how much slower than measured searches run now (1: within PACE_SLACK)
        self._lengths: collections.deque = collections.deque(maxlen=LENGTH_WINDOW)  # recent queries' tokens
        self._length_sum = 0  # their sum, kept as they come and go
        self.tokens = None  # the served queries' mean token count choices are made at (None: the calibration topics')
        self._overrun: dict[tuple, float] = {}  # (budget, k) -> ms not yet made up (``OVERRUN_FROM``)
        self.overrun_from = OVERRUN_FROM  # budgets of overrun a budget makes up past (math.inf: never)
        self.made_up: collections.Counter = collections.Counter()  # (budget, k) -> searches it ran cut
        self._lock = threading.Lock()

    @classmethod
    def for_searcher(cls, searcher) -> "Planner":
        """The planner of a searcher: its calibration if measured here; the cost model on demand."""
        index = searcher.index
        return cls(index, None, Frontier.load(index.path, searcher_key(searcher), index_key(index)), searcher)

    @classmethod
    def pinned(cls, searcher, point: Point, k: int) -> tuple["Planner", float]:
        """A planner whose frontier is ``point`` alone, and a budget in ms that chooses its plan: calibration
        searches each plan through one (``retrieval.calibrate.end_to_end``), so that the plan's latency takes
        in what the planner does for every budgeted search, choosing and observing (which counts on a plan of
        a tenth of a millisecond, as BM25 alone on NFCorpus). The budget is twice the point's estimate, which
        its searches do not overrun; the planner warns of nothing, since its latencies are what calibration
        measures."""
        frontier = Frontier(searcher_key(searcher), index_key(searcher.index), "pinned", k, "", 0, 1, [point])
        planner = cls(searcher.index, None, frontier, searcher)
        budget = 2 * point.ms
        planner._warned = planner._drift_warned = True
        planner._over.add(budget)
        return planner, budget

    @property
    def costs(self) -> CostModel:
        """The cost model: cached in the index if it was measured here with this encoder and these
        threads, else measured now (and cached only if the measurement was undisturbed)."""
        if self._costs is None:
            self._costs = self._cached_costs() or self.remeasure()
        return self._costs

    def _cached_costs(self) -> CostModel | None:
        path = self.index.path / COSTS
        if self.path is None or not path.is_file():
            return None
        try:
            costs = CostModel.from_dict(json.loads(path.read_text()))
        except (json.JSONDecodeError, KeyError, ValueError, TypeError):
            return None
        if costs.machine != searcher_key(self.path) or costs.index != index_key(self.index) \
                or set(costs.rescore_us) != set(self.index.sizes) or costs.contended \
                or any(first_key(s) not in costs.first_ms for s in first_stages(self.index)):
            return None
        return costs

    def remeasure(self) -> CostModel:
        """Measure the cost model afresh; cache it in the index unless other work disturbed it."""
        if self.path is None:
            raise ValueError("this planner has no searcher to measure costs with")
        costs = measure(self.path)
        if costs.contended:  # one retry: a passing burst of other work
            costs = min(costs, measure(self.path), key=lambda c: c.spread)
        path = self.index.path / COSTS
        if costs.contended:
            warnings.warn(f"the cost model was measured while the machine was busy (rounds {costs.spread:.1f}x apart, "
                          f"load {costs.load_average}); used for now, not cached in {path}", stacklevel=2)
        else:
            try:
                atomic_write_json(path, costs.to_dict())
            except OSError as e:
                warnings.warn(f"could not cache the cost model in {path}: {e}", stacklevel=2)
        with self._lock:
            self._costs = costs
            self._chosen.clear()
            self._predicted.clear()
            self._ratios.clear()
            self._observed = 0
            self._paced.clear()
            self.pace = 1.0
        return costs

    def observe(self, plan: Plan, ms: float, tokens: int | None = None, budget: float | None = None,
                k: int | None = None) -> None:
        """Record a budgeted query's measured latency; ``tokens``, its query's token count where it was encoded;
        ``budget`` and ``k``, the budget that chose the plan, whose overrun the latency adds to or makes up
        (``OVERRUN_FROM``).

        The pace: the median ratio to the prediction over the last ``PACE_WINDOW`` searches of plans
        that encode their query, predicted at ``PACE_MIN_MS`` or more, when it exceeds ``PACE_SLACK``
        (else 1). Cached choices are made again when it moves by more than ``PACE_STEP``. After
        ``PACE_EXPIRY`` searches with none such (the pace moved a budget to BM25 alone), it returns to 1,
        so the budget tries its plan again. Drift: when the median over ``DRIFT_WINDOW`` searches of such
        plans runs well away from 1, on the same side, at every check for ``DRIFT_SECONDS``, the cost
        model is measured again (calibrated plans only warn, once: rerun calibrate). BM25 alone's ratio swings with the query's terms, and a plan under
        ``PACE_MIN_MS`` with the timer's jitter, so they count towards neither; nor does a plan's first
        search, which pays its one-time set-up.

        A calibrated plan's ratio is to what the query's length leads one to expect
        (``Point.expected_ms``): its latency grows with the tokens encoded, and a run of long queries is
        not a slow machine."""
        calibrated = self.frontier is not None and self.source == "calibration"
        if tokens is not None and calibrated:
            self._note_length(tokens)
        key = (plan, calibrated)
        point = self._predicted.get(key, False)
        if point is False:  # looked up once per plan: at sub-millisecond budgets the lookup itself counts
            point = self.frontier.point(plan) if calibrated else (
                Point(plan, self._costs.predict(plan), 0.0) if self._costs else None)
            if calibrated or self._costs is not None:
                self._predicted[key] = point
            # A plan's first search in this process pays its one-time set-up (its exit graph opened and
            # run, its vectors' first pages), not the machine's pace nor a budget's overrun: many times a
            # search's latency.
            return
        if budget is not None:
            with self._lock:
                key = (budget, k)
                over = self._overrun.get(key, 0.0) + ms - PACE_SLACK * budget
                self._overrun[key] = min(max(0.0, over), OVERRUN_MAX * budget)
        if point is None or not point.ms:
            return
        with self._lock:
            if not sets_pace(plan, point.ms):  # its terms or jitter, not the machine: neither
                self._quiet += 1
                if self._quiet >= PACE_EXPIRY and self.pace != 1.0:
                    self._paced.clear()
                    self._set_pace(1.0)
                return
            ratio = ms / point.expected_ms(tokens)
            self._ratios.append(ratio)
            self._observed += 1
            self._paced.append(ratio)
            self._quiet = 0
            if len(self._paced) == PACE_WINDOW:
                paced = statistics.median(self._paced)
                self._set_pace(paced if paced > PACE_SLACK else 1.0)
            if self._observed < DRIFT_WINDOW:
                return
            self._observed = 0
            ratio = statistics.median(self._ratios)
            side = (ratio > DRIFT) - (ratio < 1 / DRIFT)
            now = time.monotonic()
            if side != self._drift_side:  # the checks moved to another side: its clock starts now
                self._drift_side, self._drift_since = side, now
            if not side or now - self._drift_since < DRIFT_SECONDS:
                return
            self._drift_side = 0  # acted on: a drift after this starts its clock afresh
        if calibrated:
            # Once: the advice does not change with the ratio, and a warning is a write to stderr inside a search.
            if not self._drift_warned:
                self._drift_warned = True
                warnings.warn(f"searches take {ratio:.1f}x the calibrated latency, and have for {DRIFT_SECONDS:g} s "
                              f"or more: rerun starbucks calibrate --remeasure on this machine", stacklevel=3)
        else:
            self.remeasure()

    def _note_length(self, tokens: int) -> None:
        """Follow the served queries' mean length: over the last ``LENGTH_WINDOW`` searches, once it moves
        more than ``LENGTH_STEP`` from the length choices were made at (the calibration topics' at first),
        budgets choose again at the new one. Queries longer than the topics cost more on every plan that
        encodes them, and the pace, which judges each search by its own length, does not see that: a
        budget's mean holds only if its plan is chosen for the queries it serves. A stretch of long
        queries moves a 256-search mean little."""
        with self._lock:
            if len(self._lengths) == LENGTH_WINDOW:
                self._length_sum -= self._lengths[0]
            self._lengths.append(tokens)
            self._length_sum += tokens
            if len(self._lengths) < LENGTH_WINDOW:
                return
            calibrated = next((p.tokens for p in self.frontier.points if p.tokens is not None), None)
            if calibrated is None:
                return
            mean = self._length_sum / LENGTH_WINDOW
            base = calibrated if self.tokens is None else self.tokens
            if abs(mean - base) > _length_step(base):  # back near the topics' length: their choices again
                self.tokens = None if abs(mean - calibrated) <= _length_step(calibrated) else mean
                self._chosen = {key: p for key, p in self._chosen.items() if key[0] is None}

    def _set_pace(self, pace: float) -> None:
        """A new pace (under the lock); the cached budget choices go when it moved by more than PACE_STEP."""
        if abs(pace / self.pace - 1) > PACE_STEP:  # a pace is 1 or above PACE_SLACK: leaving 1 always moves it
            self.pace = pace
            self._chosen = {key: p for key, p in self._chosen.items() if key[0] is None}

    def default(self, k: int) -> Plan:
        """The plan for ``budget=None``: the calibrated frontier's most effective plan, else a
        shortlist at the widest last-layer shortlist size reranked at the full size. Measures nothing."""
        if self.frontier is not None:
            plan = self.frontier.best(k)
            if plan is not None:
                self.source = "calibration"
                return plan
        sizes = self.index.sizes
        full = max(sizes)
        shortlist = [s for s in self.index.manifest.shortlist if s != full and _larger(s, full)]
        n = len(self.index)
        if not shortlist:  # nothing to shortlist from: the FAISS index (or scan) at the full size
            return Plan([Stage(full, max(k, min(n, DEFAULT_SHORTLIST)))])
        first = max(shortlist, key=lambda s: (s.layer == full.layer, s.dim, s.layer))
        return Plan([Stage(first, max(k, min(n, DEFAULT_SHORTLIST))), Stage(full, k)])

    def candidates(self, k: int) -> list[Plan]:
        """Every plan considered for a budget: exhaustive scans, 1-3 stage cascades, and with a stored
        BM25 index the BM25 plans (``sparse_candidates``)."""
        n = len(self.index)
        depth = max(k, min(1000, n))
        plans = [Plan([Stage(s, depth)]) for s in self.index.sizes]
        for start in first_stages(self.index):
            first = start.size
            for keep in sorted({min(x, n) for x in KEEPS if x >= k} | {min(max(k, 100), n)}):
                head = start._replace(keep=keep)
                larger = [s for s in self.index.sizes if _larger(first, s) or (start.binary and s == first)]
                for last in larger:
                    plans.append(Plan([head, Stage(last, k)]))
                    for middle in larger:
                        if _larger(middle, last):
                            for mk in MIDDLE_KEEPS:
                                if k <= mk < keep:
                                    plans.append(Plan([head, Stage(middle, mk), Stage(last, k)]))
        return plans + self.sparse_candidates(k)

    @staticmethod
    def expected_effectiveness(plan: Plan, num_docs: int, stored: int | None = None) -> tuple:
        """The documented preference order (higher is better); cost is not part of it. BM25 ranks
        below every dense size here: only calibration measures what it is worth. A binary first stage ranks
        below every float one. Last, a larger search parameter (``stored``: the value the first stage's
        index holds, used without one)."""
        reach = plan[-2].keep if len(plan) > 1 else num_docs
        param = plan[0].param[1] if plan[0].param else (stored or 0)
        return (_size_key(plan[-1].size), not plan[0].binary, _size_key(plan[0].size), reach, param)

    def sparse_candidates(self, k: int) -> list[Plan]:
        """Plans with BM25: alone, shortlisting for the full size, and fused with it; and shortlisting for
        each earlier layer's exit (its widest stored size), alone and fused: a query encoded to layer 3
        costs about half of one encoded to layer 6, so these fill the latencies between BM25 alone and
        the full-size hybrids."""
        if self.index.bm25 is None:
            return []
        n = len(self.index)
        full = max(self.index.sizes)
        plans = [Plan([Stage(BM25, k)])]  # alone, it returns its top k: ranking deeper buys nothing
        for keep in sorted({min(x, n) for x in SPARSE_KEEPS if x >= k} | {min(max(k, 100), n)}):
            plans.append(Plan([Stage(BM25, keep), Stage(full, k)]))
            plans += [Plan([Stage(BM25, keep), Stage(full, k, fuse)]) for fuse in FUSIONS]
        exits = [max(s for s in self.index.sizes if s.layer == layer)
                 for layer in sorted({s.layer for s in self.index.sizes if s.layer < full.layer})]
        for size in exits:
            for keep in sorted({min(max(x, k), n) for x in EXIT_SPARSE_KEEPS}):
                plans.append(Plan([Stage(BM25, keep), Stage(size, k)]))
                plans += [Plan([Stage(BM25, keep), Stage(size, k, fuse)]) for fuse in EXIT_FUSIONS]
        return plans

    def choose(self, budget: float | None, k: int) -> Plan:
        """The most effective plan whose (measured or predicted) latency in ms, times the pace, fits
        ``budget`` (the cheapest plan when none does; a budget below the cheapest plan's latency is an
        error at any pace); ``None``: the default plan (``default``). Cached per (budget, k) and pace.

        While the machine runs slow (a pace above 1) and the pace moved a calibrated budget off its own
        plan, the budget shares its searches between the plan that fits and the next more effective
        frontier plan (never past its own), so that their mean at the pace is the budget
        (``Frontier.blend``, ``Blend``): each call then returns one of the two.

        A budget whose searches overran it by more than ``OVERRUN_FROM`` budgets (``observe``) makes that up:
        it chooses as a budget cut by its overrun over ``MAKE_UP_SEARCHES`` searches would (the cheapest plan
        at most) until the overrun is back under that, counting such searches in ``made_up`` where the
        cut changed what they run."""
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float))
                                   or not math.isfinite(budget) or budget <= 0):
            raise ValueError(f"budget must be a positive number of milliseconds, a Plan or None, not {budget!r}")
        key = (budget, k)
        plan = self._chosen.get(key)
        if plan is None:
            plan = self.default(k) if budget is None else self._choose(float(budget), k)
            with self._lock:
                self._chosen[key] = plan
        over = self._overrun.get(key, 0.0) if budget is not None else 0.0
        if over and over > self.overrun_from * budget:
            plan = self._cut(key, math.ceil(over / MAKE_UP_SEARCHES / budget * CUT_STEPS), plan)
        if isinstance(plan, Blend):
            with self._lock:
                return plan.next()
        return plan

    def _cut(self, key: tuple, steps: int, own: "Plan | Blend") -> "Plan | Blend":
        """What a budget making up an overrun runs: its choice at ``steps``/``CUT_STEPS`` less (the cheapest
        plan at most), cached per step; ``own`` itself where that is what it chooses anyway. A budget whose
        own plan is already the cheapest has nothing to make an overrun up on: once the overrun calls for a
        cut past the cheapest plan (``MAKE_UP_SEARCHES`` budgets; a few slow searches of a sub-millisecond
        budget, which its later searches make up, stay below that), it warns once that it cannot be kept
        now."""
        plan = self._cut_to(key, min(steps, CUT_STEPS), own)
        if plan is not own:
            with self._lock:
                self.made_up[key] += 1
        elif steps > CUT_STEPS and key[0] not in self._over and self._cut_to(key, CUT_STEPS, own) is own:
            self._over.add(key[0])  # nothing cheaper to make it up on: say so, once per budget
            warnings.warn(f"budget {key[0]:g} ms cannot be kept now: its searches ran "
                          f"{self._overrun.get(key, 0.0):.1f} ms past it, and it already runs the cheapest "
                          f"plan ({_runs(own)[0]})", stacklevel=4)
        return plan

    def _cut_to(self, key: tuple, steps: int, own: "Plan | Blend") -> "Plan | Blend":
        """A budget's choice at ``steps``/``CUT_STEPS`` less, cached; ``own`` itself where it runs the same."""
        plan = self._chosen.get((*key, steps))
        if plan is None:
            budget, k = key
            plan = self._choose(budget * (1 - steps / CUT_STEPS), k, cut=True)
            if _runs(plan) == _runs(own):
                plan = own
            with self._lock:
                self._chosen[(*key, steps)] = plan
        return plan

    def _choose(self, budget: float, k: int, cut: bool = False) -> "Plan | Blend":
        """``cut``: a budget cut to make up an overrun, which takes the cheapest plan where it is below every
        plan, and says nothing of it."""
        if self.frontier is not None:
            blend = self.frontier.blend(budget, k, self.pace, self.tokens, floor=cut)
            if blend is not None:
                plan, above, share = blend
                self.source = "calibration"
                if not cut:
                    self._say_if_over(budget, plan, self.frontier.point(plan).expected_ms(self.tokens))
                return plan if above is None else Blend(plan, above, share)
            self._warn(f"no calibrated plan returns k={k} (calibrated at k={self.frontier.k})")
        else:
            self._warn(f"{self.index.path} has no calibration for this machine")
        plans = self.candidates(k)
        costs = self.costs
        cheapest = min(plans, key=costs.predict)
        if costs.predict(cheapest) > budget and not cut:
            raise ValueError(
                f"budget {budget:g} ms is below the cheapest plan on this machine "
                f"({cheapest}: {costs.predict(cheapest):.2f} ms predicted)"
            )
        fits = [p for p in plans if costs.predict(p) * self.pace <= budget] or [cheapest]
        n = len(self.index)
        plan = max(fits, key=lambda p: (self.expected_effectiveness(p, n, self._stored(p)), -costs.predict(p)))
        if not cut:
            self._say_if_over(budget, plan, costs.predict(plan))
        return plan

    def _say_if_over(self, budget: float, plan: Plan, ms: float | None) -> None:
        """Warn, once per budget, when at the machine's present pace even the plan it takes (the cheapest,
        then) is expected to run past the budget's tolerance: the promise cannot be kept until the pace
        returns, and the caller should know rather than find out.

        Only of a plan that sets the pace (``sets_pace``): the pace is read on plans that encode, BM25
        alone need not slow with them (its cost follows its terms' postings), and calibration prices it
        through the slowest spell it met. A budget on such a plan is told it cannot be kept by its own
        searches instead: their overrun, once nothing cheaper can make it up (``_cut``)."""
        if (ms is None or not sets_pace(plan, ms) or ms * self.pace <= PACE_SLACK * budget
                or budget in self._over):
            return
        self._over.add(budget)
        warnings.warn(f"searches run {self.pace:.2f}x slower than measured: budget {budget:g} ms cannot be kept "
                      f"now (its cheapest plan, {plan}, takes about {ms * self.pace:.2f} ms)", stacklevel=5)

    def _stored(self, plan: Plan) -> int | None:
        """The search parameter value held by the index the plan's first stage searches (None: none)."""
        from indexes.faiss_index import stored_param

        indexes = getattr(self.index, "binary", {}) if plan[0].binary else self.index.shortlist
        index = indexes.get(plan[0].size) if not plan[0].sparse else None
        return stored_param(index) if index is not None else None

    def _warn(self, why: str) -> None:
        """Say once that a budget is planned from the cost model alone."""
        self.source = "cost model"
        if not self._warned:
            self._warned = True
            warnings.warn(f"{why}: budgets are planned from the cost model alone "
                          f"(run starbucks calibrate for measured plans)", stacklevel=4)

    def margin(self, plan: Plan) -> float | None:
        """The early-stopping margin calibration learnt for ``plan`` (None for one stage: nothing to skip);
        an error without one."""
        if len(plan) == 1:
            return None
        margin = self.frontier.margin(plan) if self.frontier is not None else None
        if margin is None:
            raise ValueError(f"no early-stopping margin for plan {plan}: run starbucks calibrate on this "
                             f"machine and use a budget or a multi-stage plan from its frontier")
        return margin
