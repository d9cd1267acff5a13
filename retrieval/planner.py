"""Turn a latency budget into a plan, from a cost model measured on this machine.

The cost model holds three measured tables, cached in ``costs.json`` in the index
folder and re-measured when the machine (CPU count, thread settings) changes:

* ``encode_ms[layer]``: encoding one query up to that layer;
* ``first_ms[size][keep]``: the first stage at that size (its FAISS index, or an
  exact scan of the stored vectors) returning ``keep`` candidates;
* ``rescore_us[size]``: rescoring one candidate at that size (fetch + dot product).

A plan's predicted latency is ``encode_ms[deepest layer] + first_ms[first size][keep]``
plus, for every later stage, ``rescore_us[size] x candidates it receives``.

Choosing: after ``starbucks calibrate`` (``calibration.json`` measured on this machine
and index), the most effective calibrated plan whose measured latency fits the budget.
Without one, the cost model alone: among candidate plans whose prediction fits the
budget, the one expected to be most effective wins. Expected effectiveness orders plans
by their last stage's size (deeper, then wider), then their first stage's size, then
how many candidates reach the last stage; cost breaks ties. The first such choice warns
once, and ``Planner.source`` says which was used. ``budget=None`` takes the most
effective plan regardless of cost: an exhaustive scan at the largest stored size.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import statistics
import time
import warnings

import numpy as np

from indexes.files import atomic_write_json
from retrieval.frontier import Frontier
from retrieval.plan import Plan, Stage
from starbucks.sizes import Size

COSTS = "costs.json"
KEEPS = (50, 100, 200, 500, 1000, 2000)
MIDDLE_KEEPS = (50, 100, 200)
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


def machine_key() -> str:
    import faiss
    import torch

    return f"{platform.machine()}|cpus={os.cpu_count()}|torch_threads={torch.get_num_threads()}|faiss_threads={faiss.omp_get_max_threads()}"


@dataclasses.dataclass
class CostModel:
    machine: str
    index: str  # corpus + model fingerprint of the index it was measured on
    encode_ms: dict[int, float]
    first_ms: dict[Size, dict[int, float]]
    rescore_us: dict[Size, float]

    def first(self, size: Size, keep: int) -> float:
        """Interpolate the first-stage cost linearly in keep between measured points."""
        table = sorted(self.first_ms[size].items())
        keeps = [k for k, _ in table]
        return float(np.interp(keep, keeps, [ms for _, ms in table]))

    def predict(self, plan: Plan) -> float:
        """Predicted milliseconds for one query."""
        ms = self.encode_ms[max(s.layer for s in plan.sizes)] + self.first(plan[0].size, plan[0].keep)
        for prev, stage in zip(plan, plan[1:]):
            ms += self.rescore_us[stage.size] * prev.keep / 1000
        return ms

    def to_dict(self) -> dict:
        return {
            "machine": self.machine, "index": self.index,
            "encode_ms": {str(k): v for k, v in self.encode_ms.items()},
            "first_ms": {str(s): {str(k): v for k, v in t.items()} for s, t in self.first_ms.items()},
            "rescore_us": {str(s): v for s, v in self.rescore_us.items()},
        }

    @classmethod
    def from_dict(cls, d: dict) -> "CostModel":
        return cls(
            machine=d["machine"], index=d["index"],
            encode_ms={int(k): v for k, v in d["encode_ms"].items()},
            first_ms={Size.parse(s): {int(k): v for k, v in t.items()} for s, t in d["first_ms"].items()},
            rescore_us={Size.parse(s): v for s, v in d["rescore_us"].items()},
        )


def _median_ms(fn, repeats: int = 5) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def measure(searcher) -> CostModel:
    """Time encoding, first stages and rescoring on this machine, one query at a time."""
    index, encoder = searcher.index, searcher.encoder
    sizes = index.sizes
    queries = list(SAMPLE_QUERIES)
    vectors = encoder.encode_queries(queries, sizes)
    encode_ms = {}
    for layer in sorted({s.layer for s in sizes}):
        size = max(s for s in sizes if s.layer == layer)
        encode_ms[layer] = statistics.median(
            _median_ms(lambda q=q: encoder.encode_queries([q], [size]), 3) for q in queries[:4]
        )
    n = len(index)
    keeps = sorted({min(k, n) for k in KEEPS} | {1})
    first_ms = {}
    for size in sizes:
        q = vectors[size][:1]
        first_ms[size] = {k: _median_ms(lambda k=k: index.search(size, q, k), 3) for k in keeps}
    rng = np.random.default_rng(0)
    rows = rng.choice(n, size=min(n, 1000), replace=False)
    rescore_us = {}
    for size in sizes:
        q = vectors[size][0]
        rescore_us[size] = _median_ms(lambda: index.rescore(size, q, rows)) * 1000 / len(rows)
    return CostModel(machine_key(), index_key(index), encode_ms, first_ms, rescore_us)


def index_key(index) -> str:
    m = index.manifest
    return f"{m.model_fingerprint}:{m.corpus_fingerprint}:{m.index_type}"


def _size_key(size: Size) -> tuple[int, int]:
    return (size.layer, size.dim)


def _larger(a: Size, b: Size) -> bool:
    """b is worth rescoring with after a: no shallower, no narrower, not the same."""
    return b.layer >= a.layer and b.dim >= a.dim and b != a


class Planner:
    """Enumerates the plans an index supports and picks one for a budget."""

    def __init__(self, index, costs: CostModel, frontier: Frontier | None = None):
        self.index = index
        self.costs = costs
        self.frontier = frontier
        self.source = "calibration" if frontier is not None else "cost model"
        self._warned = False

    @classmethod
    def for_searcher(cls, searcher) -> "Planner":
        """Load the cached cost model if it fits this machine and index, else measure and cache it."""
        index = searcher.index
        path = index.path / COSTS
        costs = None
        if path.is_file():
            try:
                costs = CostModel.from_dict(json.loads(path.read_text()))
            except (json.JSONDecodeError, KeyError, ValueError, TypeError):
                costs = None
        if costs is None or costs.machine != machine_key() or costs.index != index_key(index) \
                or set(costs.rescore_us) != set(index.sizes):
            costs = measure(searcher)
            try:
                atomic_write_json(path, costs.to_dict())
            except OSError as e:
                warnings.warn(f"could not cache the cost model in {path}: {e}")
        return cls(index, costs, Frontier.load(index.path, machine_key(), index_key(index)))

    def candidates(self, k: int) -> list[Plan]:
        """Every plan considered for a budget: exhaustive scans and 1-3 stage cascades."""
        n = len(self.index)
        depth = max(k, min(1000, n))
        plans = [Plan([Stage(s, depth)]) for s in self.index.sizes]
        for first in self.index.manifest.shortlist:
            for keep in sorted({min(x, n) for x in KEEPS if x >= k} | {min(max(k, 100), n)}):
                larger = [s for s in self.index.sizes if _larger(first, s)]
                for last in larger:
                    plans.append(Plan([Stage(first, keep), Stage(last, k)]))
                    for middle in larger:
                        if _larger(middle, last):
                            for mk in MIDDLE_KEEPS:
                                if k <= mk < keep:
                                    plans.append(Plan([Stage(first, keep), Stage(middle, mk), Stage(last, k)]))
        return plans

    @staticmethod
    def expected_effectiveness(plan: Plan, num_docs: int) -> tuple:
        """The documented preference order (higher is better); cost is not part of it."""
        reach = plan[-2].keep if len(plan) > 1 else num_docs
        return (_size_key(plan[-1].size), _size_key(plan[0].size), reach)

    def choose(self, budget: float | None, k: int) -> Plan:
        """The most effective plan whose predicted latency (ms) fits ``budget``."""
        plans = self.candidates(k)
        n = len(self.index)
        rank = lambda p: (self.expected_effectiveness(p, n), -self.costs.predict(p))
        if budget is None:
            return max(plans, key=rank)
        if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not math.isfinite(budget) or budget <= 0:
            raise ValueError(f"budget must be a positive number of milliseconds, a Plan or None, not {budget!r}")
        if self.frontier is not None:
            plan = self.frontier.choose(budget, k)
            if plan is not None:
                self.source = "calibration"
                return plan
            self._warn(f"no calibrated plan returns k={k} (calibrated at k={self.frontier.k})")
        else:
            self._warn(f"{self.index.path} has no calibration for this machine")
        fits = [p for p in plans if self.costs.predict(p) <= budget]
        if not fits:
            cheapest = min(plans, key=self.costs.predict)
            raise ValueError(
                f"budget {budget} ms is below the cheapest plan on this machine "
                f"({cheapest}: {self.costs.predict(cheapest):.2f} ms predicted)"
            )
        return max(fits, key=rank)

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
