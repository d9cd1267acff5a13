"""The searcher: encode once at every size a plan needs, shortlist, then rerank."""
from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from indexes import Index
from indexes.tiers import RerankTier, check_tier
from retrieval.fusion import fuse
from retrieval.plan import BM25, Plan
from starbucks.encoder import check_encoder, make_encoder
from starbucks.errors import StarbucksError
from starbucks.model import StarbucksModel
from starbucks.heap import settle


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
    stopped_early: bool = False  # with early_stop: the shortlist was decisive, middle stages were skipped

    @property
    def total_ms(self) -> float:
        return sum(self.timings.values())


def first_stage(index: Index, stage, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A dense first stage's (scores, rows) per query over ``index`` (see ``Searcher.first_stage``)."""
    if stage.binary:
        return index.search_binary(stage.size, queries, stage.keep, stage.param)
    return index.search(stage.size, queries, stage.keep, stage.param)


class Searcher:
    """Cascaded search over one index. Safe to call from many threads at once."""

    def __init__(self, index: str | Path | Index, model: str | Path | StarbucksModel | None = None,
                 encoder: str = "auto", threads: int | None = None, rerank_tier: "str | RerankTier" = "mmap",
                 freeze_heap: bool = True):
        """``encoder``: ``auto``, ``torch``, ``onnx`` or ``onnx-int8``; ``threads``: for every library
        on the query path (default: the available cores; pick 1 for the latency of single queries).
        ``rerank_tier``: where the rerank sizes' vectors live while rescoring: ``mmap`` (the memory-mapped
        files, read in row order), ``float16`` (copied into RAM) or ``int8`` (8-bit codes per dimension in
        RAM, scored from the codes), each optionally with the sizes it holds (``int8:6x384``; other rerank
        sizes are read from their files), or ``residual:SIZE`` for a size with an IVF-PQ shortlist (what
        its codes leave out, in RAM, for the rerank right after that shortlist); see :mod:`indexes.tiers`.
        A rerank stage at the same size as the stage before it reads the stored vectors whatever the tier:
        ``b6x384:10000,6x384:50,6x384:10``
        rescores 10,000 candidates from int8 codes, then the best 50 exactly. A loaded ``RerankTier`` of the
        same index can be passed instead, to share it among searchers.
        ``freeze_heap``: once loaded, collect the garbage and freeze every object alive out of the cycle
        collector's later passes (:func:`starbucks.heap.settle`), so that a full pass, which with torch and
        ONNX Runtime loaded would take a search some 160 ms (``experiments.cold_paths``), scans only what
        was made since. False for a program whose objects alive now must have their reference cycles
        collected later."""
        check_encoder(encoder)
        if not isinstance(rerank_tier, RerankTier):
            check_tier(rerank_tier)
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
        self.encoder = make_encoder(model, encoder, threads)
        self._threads = threads
        self._encoders = {self.encoder.kind: self.encoder}  # the searcher's own, and those plans name (encoder=)
        self._encoders_lock = threading.Lock()
        if isinstance(rerank_tier, RerankTier):
            rerank_tier.check(self.index)
            self.tier = rerank_tier
        else:
            self.tier = RerankTier(self.index, rerank_tier)
        self.rerank_tier = self.tier.name
        self._planner = None
        self._planner_lock = threading.Lock()
        if freeze_heap:
            settle()

    @property
    def planner(self):
        """The budget planner; its cost model is measured on first use and cached in the index."""
        planner = self._planner
        if planner is not None:  # every budgeted search asks twice: no lock (and no import) once it exists
            return planner
        from retrieval.planner import Planner

        with self._planner_lock:
            if self._planner is None:
                self._planner = Planner.for_searcher(self)
            return self._planner

    def encoder_named(self, kind: str | None):
        """The encoder of that kind (``torch``, ``onnx``, ``onnx-int8``), as a plan names it with ``encoder=``:
        made on first use with the searcher's threads. None: the searcher's own."""
        if kind is None:
            return self.encoder
        encoder = self._encoders.get(kind)
        if encoder is None:
            with self._encoders_lock:
                encoder = self._encoders.get(kind)
                if encoder is None:
                    encoder = self._encoders[kind] = make_encoder(self.model, kind, self._threads)
        return encoder

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
        if plan[0].binary:
            self.index.require_binary(plan[0].size)
        if plan[0].param:  # fits the first stage's (binary) shortlist index, or a one-line ValueError now
            check = self.index.binary_search_parameters if plan[0].binary else self.index.search_parameters
            check(plan[0].size, plan[0].param)
        if plan.uses_bm25:
            self.index.require(BM25)
        if k > plan.depth:
            raise ValueError(f"k={k} is more than the {plan.depth} candidates plan {plan} shortlists")
        return plan

    def warm_up(self, k: int = 10, query: str | None = None) -> dict[str, float]:
        """Search ``query`` (default: a sample query) once with each plan budgets can choose: the calibrated
        frontier's plans, else the default plan. A process's first search of a plan pays its set-up (its
        exit graph opened and run once: 23-34 ms on the DL19 pool here where an earlier process saved the
        graph, up to 762 ms where it is joined, ``python -m experiments.cold_paths``), which a service
        would rather pay at start than in its first searches. Writes nothing into the index (a graph
        joined here is saved with the model's export) and sets no pace; returns each plan's first-search ms."""
        from retrieval.planner import SAMPLE_QUERIES

        text = SAMPLE_QUERIES[0] if query is None else query
        frontier = self.planner.frontier
        plans = [p.plan for p in frontier.points] if frontier is not None else [self.planner.default(k)]
        out = {}
        for plan in plans:
            t = time.perf_counter()
            self.search(text, k=min(k, len(self.index), plan.depth), budget=plan)
            out[str(plan)] = (time.perf_counter() - t) * 1000
        return out

    def search(self, query: str, k: int = 10, budget: Plan | str | float | None = None,
               early_stop: bool = False) -> Result:
        """Top-k for one query. ``budget``: a Plan, a plan string, milliseconds, or None (best plan).

        ``early_stop``: skip the middle stages and rerank only the top k when the shortlist is
        decisive, by the margin ``starbucks calibrate`` learnt for the plan (an error without one).
        """
        return self.search_batch([query], k=k, budget=budget, early_stop=early_stop)[0]

    def search_batch(self, queries: Sequence[str], k: int = 10, budget: Plan | str | float | None = None,
                     early_stop: bool = False) -> list[Result]:
        """Top-k for many queries: encoded and shortlisted together, timings amortised per query."""
        if isinstance(queries, str):
            raise TypeError("search_batch takes a list of queries; use search() for one")
        t0 = time.perf_counter()
        plan = self.resolve(budget, k)
        margin = self.planner.margin(plan) if early_stop else None
        if not queries:
            return []
        loaded = time.perf_counter()
        encoder = self.encoder_named(plan.encoder) if plan.sizes else None
        t1 = time.perf_counter()
        loading = t1 - loaded  # a plan's first use of the encoder it names loads it: not this search's cost
        lengths = []  # each query's tokens, as encoded
        vectors = encoder.encode_queries(queries, sorted(set(plan.sizes)), lengths=lengths) if plan.sizes else {}
        encode_ms = (time.perf_counter() - t1) * 1000 / len(queries)
        results = self.run(plan, vectors, k, margin, {"encode": encode_ms} if plan.sizes else {},
                           texts=list(queries))
        if isinstance(budget, (int, float)) and not isinstance(budget, bool) and len(queries) == 1:
            self.planner.observe(plan, (time.perf_counter() - t0 - loading) * 1000, lengths[0] if lengths else None,
                                 budget=budget, k=k)
        return results

    def run(self, plan: Plan, vectors: dict, k: int, margin: float | None = None,
            timings: dict[str, float] | None = None, texts: Sequence[str] | None = None) -> list[Result]:
        """Run a resolved plan from query vectors already encoded (calibration encodes once for every plan);
        ``texts``, the queries themselves, for a plan that uses BM25.

        With ``margin``, a query whose first-stage ``decisiveness`` reaches it skips the middle
        stages and only its top k are rescored at the last stage.
        """
        timings = dict(timings or {})
        first = plan[0]
        if plan.uses_bm25 and texts is None:
            raise ValueError(f"plan {plan} uses BM25: pass the query texts")
        n = len(texts) if first.sparse else len(vectors[first.size])
        t = time.perf_counter()
        sparse = None  # per query, every row's BM25 score (for fusion)
        if first.sparse:
            # Alone, BM25 returns its top k, the head of any deeper ranking of it: it ranks no deeper.
            depth = min(first.keep, k) if len(plan) == 1 else first.keep
            scores, rows, sparse = self.index.bm25.search(texts, depth)
        else:
            scores, rows = self.first_stage(first, vectors[first.size])
        rankings = [self._valid(scores[i], rows[i]) for i in range(n)]
        timings[f"shortlist {first.source}"] = (time.perf_counter() - t) * 1000 / n
        if plan[-1].fuse and sparse is None:
            sparse = [self.index.bm25.scores(tokens) for tokens in self.index.bm25.tokens(texts)]
        stopped = [margin is not None and len(plan) > 1 and decisiveness(r.scores, k) >= margin for r in rankings]
        for j, stage in enumerate(plan[1:], 1):
            last = j == len(plan) - 1
            t = time.perf_counter()
            active = [i for i in range(n) if last or not stopped[i]]
            for i in active:
                if stopped[i]:
                    rankings[i] = dataclasses.replace(rankings[i], alive=min(rankings[i].alive, k))
            alive = [rankings[i].rows[rankings[i].order[: rankings[i].alive]] for i in active]
            queries = np.asarray(vectors[stage.size])[active]
            exact = j > 1 and plan[j - 1].size == stage.size  # a repeated size refines: from the stored vectors
            tier = None if exact else self.tier
            # Right after an IVF-PQ shortlist of the same size, a residual tier adds what its codes left out.
            residual = tier.residual(stage.size) if tier is not None and j == 1 and plan.reranks_its_shortlist else None
            if residual is not None:
                new = [residual.scores(queries[a : a + 1], rows, rankings[i].scores[rankings[i].order[: len(rows)]])
                       for a, (i, rows) in enumerate(zip(active, alive))]
            else:
                new = self.index.rescore_batch(stage.size, queries, alive, tier)
            for i, new_scores in zip(active, new):
                rankings[i] = self._rerank(rankings[i], stage, new_scores, sparse[i] if stage.fuse else None)
            timings[f"rerank {stage.size}"] = (time.perf_counter() - t) * 1000 / n
        results = []
        for ranking, stop in zip(rankings, stopped):
            head = ranking.order[:k]
            results.append(Result(
                docids=self.index.docids.lookup(ranking.rows[head]),
                scores=ranking.scores[head].tolist(),
                plan=plan,
                timings=dict(timings),
                stopped_early=stop,
            ))
        return results

    def first_stage(self, stage, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A dense first stage's (scores, rows) per query, with its search parameter or by the Hamming
        distance of sign bits (binary); rows -1 pad."""
        return first_stage(self.index, stage, queries)

    @staticmethod
    def _valid(scores: np.ndarray, rows: np.ndarray) -> "_Ranking":
        keep = rows >= 0  # FAISS pads with -1 when it finds fewer than asked
        n = int(keep.sum())
        return _Ranking(rows[keep], scores[keep].astype(np.float32), np.arange(n), n)

    @staticmethod
    def _rerank(ranking: "_Ranking", stage, new_scores: np.ndarray, sparse: np.ndarray | None = None) -> "_Ranking":
        """Reorder the survivors by their scores at a larger size, ``new_scores`` (fused with their BM25
        scores when the stage says so); what earlier stages dropped stays below them."""
        alive = ranking.order[: ranking.alive]
        if stage.fuse:
            new_scores = fuse(new_scores, sparse[ranking.rows[alive]], stage.fuse)
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


def decisiveness(scores: np.ndarray, k: int) -> float:
    """How clearly a shortlist's top k stand apart: the gap between its k-th and (k+1)-th score
    over the spread of all its scores, from 0 to 1 (1 when it holds no more than k: nothing to cut)."""
    if len(scores) <= k:
        return 1.0
    spread = float(scores[0] - scores[-1])
    return float(scores[k - 1] - scores[k]) / spread if spread > 0 else 0.0
