"""The searcher: encode once at every size a plan needs, shortlist, then rerank."""
from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from indexes import Index
from retrieval.plan import Plan
from starbucks.encoder import Encoder
from starbucks.errors import StarbucksError
from starbucks.model import StarbucksModel


@dataclasses.dataclass
class Result:
    """One query's ranking, the plan that made it and where the time went (milliseconds).

    ``docids`` holds the last stage's survivors by score, then what earlier stages
    dropped, in their order; ``scores`` are each document's score at the last stage
    that scored it, so only the order is comparable across stages.
    """

    docids: list[str]
    scores: list[float]
    plan: Plan
    timings: dict[str, float]

    @property
    def total_ms(self) -> float:
        return sum(self.timings.values())


class Searcher:
    """Cascaded search over one index. Safe to call from many threads at once."""

    def __init__(self, index: str | Path | Index, model: str | Path | StarbucksModel | None = None):
        self.index = index if isinstance(index, Index) else Index(index)
        manifest = self.index.manifest
        if model is None:
            model = None if manifest.model_name == "default" else manifest.model_name
        if not isinstance(model, StarbucksModel):
            model = StarbucksModel.load(model)
        if model.fingerprint() != manifest.model_fingerprint:
            raise StarbucksError(
                f"{self.index.path} was built with model {manifest.model_name!r} "
                f"(fingerprint {manifest.model_fingerprint}); {model.name!r} has fingerprint "
                f"{model.fingerprint()}: search it with the model that built it"
            )
        self.model = model
        self.encoder = Encoder(model)
        self._planner = None
        self._planner_lock = threading.Lock()

    @property
    def planner(self):
        """The budget planner; its cost model is measured on first use and cached in the index."""
        from retrieval.planner import Planner

        with self._planner_lock:
            if self._planner is None:
                self._planner = Planner.for_searcher(self)
            return self._planner

    def resolve(self, budget: Plan | str | float | None, k: int) -> Plan:
        """The plan to run: given, parsed from text, or chosen for a latency budget."""
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k must be a positive integer, not {k!r}")
        if k > len(self.index):
            raise ValueError(f"k={k} is more than the {len(self.index)} documents in the index")
        if isinstance(budget, str):
            budget = Plan.parse(budget)
        if isinstance(budget, Plan):
            plan = budget
        else:
            plan = self.planner.choose(budget, k)
        for size in plan.sizes:
            self.index.require(size)
        if k > plan.depth:
            raise ValueError(f"k={k} is more than the {plan.depth} candidates plan {plan} shortlists")
        return plan

    def search(self, query: str, k: int = 10, budget: Plan | str | float | None = None) -> Result:
        """Top-k for one query. ``budget``: a Plan, a plan string, milliseconds, or None (best plan)."""
        return self.search_batch([query], k=k, budget=budget)[0]

    def search_batch(self, queries: Sequence[str], k: int = 10, budget: Plan | str | float | None = None) -> list[Result]:
        """Top-k for many queries: encoded and shortlisted together, timings amortised per query."""
        if isinstance(queries, str):
            raise TypeError("search_batch takes a list of queries; use search() for one")
        plan = self.resolve(budget, k)
        n = len(queries)
        if n == 0:
            return []
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        vectors = self.encoder.encode_queries(queries, sorted(set(plan.sizes)))
        t1 = time.perf_counter()
        timings["encode"] = (t1 - t0) * 1000 / n
        first = plan[0]
        scores, rows = self.index.search(first.size, vectors[first.size], first.keep)
        t2 = time.perf_counter()
        timings[f"shortlist {first.size}"] = (t2 - t1) * 1000 / n
        rankings = [self._valid(scores[i], rows[i]) for i in range(n)]
        for stage in plan[1:]:
            t = time.perf_counter()
            rankings = [self._rerank(r, stage, vectors[stage.size][i]) for i, r in enumerate(rankings)]
            timings[f"rerank {stage.size}"] = (time.perf_counter() - t) * 1000 / n
        results = []
        for ranking in rankings:
            head = ranking.order[:k]
            results.append(Result(
                docids=self.index.docids.lookup(ranking.rows[head]),
                scores=ranking.scores[head].tolist(),
                plan=plan,
                timings=dict(timings),
            ))
        return results

    @staticmethod
    def _valid(scores: np.ndarray, rows: np.ndarray) -> "_Ranking":
        keep = rows >= 0  # FAISS pads with -1 when it finds fewer than asked
        n = int(keep.sum())
        return _Ranking(rows[keep], scores[keep].astype(np.float32), np.arange(n), n)

    def _rerank(self, ranking: "_Ranking", stage, query: np.ndarray) -> "_Ranking":
        """Rescore the survivors at a larger size; what earlier stages dropped stays below them."""
        alive = ranking.order[: ranking.alive]
        new_scores = self.index.rescore(stage.size, query, ranking.rows[alive])
        scores = ranking.scores.copy()
        scores[alive] = new_scores
        order = np.concatenate([alive[np.argsort(-new_scores, kind="stable")], ranking.order[ranking.alive :]])
        return _Ranking(ranking.rows, scores, order, min(stage.keep, len(alive)))


@dataclasses.dataclass
class _Ranking:
    rows: np.ndarray  # candidate row numbers, in shortlist order
    scores: np.ndarray  # each candidate's score at the last stage that scored it
    order: np.ndarray  # positions into rows, best first
    alive: int  # how many at the head of order go on to the next stage
