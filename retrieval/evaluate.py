"""Run topics through a searcher (or BM25), score with ir-measures, write TREC runs, print tables."""
from __future__ import annotations

import dataclasses
import re
import statistics
import time
import warnings
from pathlib import Path
from typing import Callable, Sequence

import ir_measures
from tqdm.auto import tqdm

from retrieval.plan import Plan
from starbucks.errors import StarbucksError
from starbucks.topics import Qrels

DEFAULT_MEASURES = ("nDCG@10", "RR@10", "R@1000")
Rankings = dict[str, list[str]]  # qid -> docids, best first


def parse_measures(names: Sequence[str]) -> list:
    measures = []
    for name in names:
        try:
            measures.append(ir_measures.parse_measure(name))
        except (ValueError, NameError, TypeError, SyntaxError):
            raise StarbucksError(f"unknown measure {name!r} (ir-measures names, e.g. nDCG@10, RR@10, R@1000, AP)") from None
    return measures


def depth_for(measures) -> int:
    """How deep a ranking the measures look: the largest cutoff (1000 if any has none)."""
    cutoffs = [m["cutoff"] if "cutoff" in m.params else None for m in measures]
    return 1000 if any(c is None for c in cutoffs) else max(cutoffs)


def judged_topics(topics: dict[str, str], qrels: Qrels) -> dict[str, str]:
    """The topics that have judgements (the rest cannot be scored)."""
    judged = {q: t for q, t in topics.items() if q in qrels}
    if not judged:
        raise StarbucksError("no topic has judgements: do the topics and qrels belong together?")
    return judged


def to_run(rankings: Rankings) -> dict[str, dict[str, float]]:
    """A run for ir-measures with rank-based scores, so ties cannot reorder a ranking."""
    return {q: {d: float(len(ds) - i) for i, d in enumerate(ds)} for q, ds in rankings.items()}


def score(rankings: Rankings, qrels: Qrels, measures) -> dict[str, float]:
    """Measures aggregated over the ranked topics."""
    values = ir_measures.calc_aggregate(measures, qrels, to_run(rankings))
    return {str(m): float(values.get(m, 0.0)) for m in measures}


def run_scores(scores: Sequence[float]) -> list[float]:
    """A ranking's scores as written to a run file: the real score wherever it is below the one above,
    else just below that one, so tools that sort by score (trec_eval) read the ranking's own order.

    Only ties and a cascade's tail are moved: what an earlier, smaller stage dropped is scored at
    that size, which can be above the last stage's scores.
    """
    out: list[float] = []
    for s in scores:
        s = float(s)
        if out and not s < out[-1]:
            s = out[-1] - max(abs(out[-1]) * 1e-6, 1e-6)
        out.append(s)
    return out


def run_tag(*parts: str) -> str:
    """A TREC run tag (one token): the parts joined by '_', anything but [A-Za-z0-9.:,@+-] dropped."""
    return "_".join(re.sub(r"[^A-Za-z0-9.:,@+\-]+", "-", p).strip("-") for p in parts if p)


def write_trec(path: Path, rankings: Rankings, tag: str, scores: dict[str, Sequence[float]] | None = None) -> None:
    """A TREC run file; ``scores`` (per query, along the ranking) are written through :func:`run_scores`,
    without them the scores count down from the ranking's length."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for qid, docids in rankings.items():
            values = run_scores(scores[qid]) if scores is not None else [len(docids) - i for i in range(len(docids))]
            for rank, (docid, value) in enumerate(zip(docids, values), 1):
                f.write(f"{qid} Q0 {docid} {rank} {value:.10g} {tag}\n")


def check_coverage(qrels: Qrels, topics: dict[str, str], docids, where: object = "qrels",
                   threshold: float = 0.5) -> float:
    """The share of judged relevant documents the index holds; a warning when it is below ``threshold``
    (the qrels and the index likely belong to different collections, or the index is a sample)."""
    judged = {d for q, docs in qrels.items() if q in topics for d, rel in docs.items() if rel > 0}
    if not judged:
        return 1.0
    present = set(docids)
    share = sum(d in present for d in judged) / len(judged)
    if share < threshold:
        warnings.warn(f"{where}: only {share:.0%} of the {len(judged)} relevant documents judged for these "
                      f"topics are in the index; do the qrels and the index belong to the same corpus?",
                      stacklevel=2)
    return share


@dataclasses.dataclass
class Row:
    """One system's line of a results table."""

    name: str
    metrics: dict[str, float]
    mean_ms: float  # per query
    p50_ms: float
    p95_ms: float
    qps: float
    mode: str  # "single" (one query at a time) or "batch N"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def timed_rankings(topics: dict[str, str], search: Callable[[list[str]], list[list[str]]],
                   batch: int, desc: str, progress: bool) -> tuple[Rankings, list[float], float]:
    """Call ``search`` on batches of queries; per-query latencies (ms) and the wall time (s).

    The first batch is searched once more, untimed, before the timed pass: a process's first search
    with a plan pays that plan's one-time set-up (its exit graph opened and run once: 23-34 ms on the DL19
    pool where the graph was saved by an earlier process, up to 762 ms where it is joined,
    ``python -m experiments.cold_paths``), which would otherwise land on the mean of whichever row runs
    it first."""
    qids = list(topics)
    rankings, latencies = {}, []
    if qids:
        search([topics[q] for q in qids[:batch]])
    wall = time.perf_counter()
    for start in tqdm(range(0, len(qids), batch), desc=desc, unit="batch" if batch > 1 else "query",
                      disable=not progress, leave=False):
        chunk = qids[start : start + batch]
        t = time.perf_counter()
        results = search([topics[q] for q in chunk])
        ms = (time.perf_counter() - t) * 1000 / len(chunk)
        latencies += [ms] * len(chunk)
        rankings.update(zip(chunk, results))
    return rankings, latencies, time.perf_counter() - wall


def make_row(name: str, rankings: Rankings, latencies: list[float], wall: float, qrels: Qrels, measures, batch: int) -> Row:
    latencies = sorted(latencies)
    return Row(
        name=name, metrics=score(rankings, qrels, measures),
        mean_ms=statistics.fmean(latencies),
        p50_ms=latencies[len(latencies) // 2],
        p95_ms=latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))],
        qps=len(latencies) / wall, mode="single" if batch == 1 else f"batch {batch}",
    )


def evaluate_searcher(searcher, topics: dict[str, str], qrels: Qrels, budget: Plan | float | None,
                      measures, batch: int = 1, runs_dir: Path | None = None, progress: bool = True,
                      written: set[str] | None = None) -> Row:
    """Evaluate one plan (or budget) over the judged topics.

    With ``runs_dir``, the ranking goes to a TREC run file named after the row (a budget's file
    says so); ``written`` holds the names already written by this evaluation, so two rows that
    resolve to the same plan get two files.
    """
    topics = judged_topics(topics, qrels)
    depth = min(depth_for(measures), len(searcher.index))
    if isinstance(budget, Plan):
        depth = min(depth, budget.depth)  # a plan ranks only what it shortlists
    plan = searcher.resolve(budget, depth)
    name = str(plan) if budget is None or isinstance(budget, Plan) else f"budget {budget:g} ms: {plan}"

    scores: dict[str, list[float]] = {}

    def search(queries):
        results = searcher.search_batch(queries, k=depth, budget=plan)
        for query, r in zip(queries, results):
            scores[query] = r.scores
        return [r.docids for r in results]

    rankings, latencies, wall = timed_rankings(topics, search, batch, str(plan), progress)
    if runs_dir is not None:
        stem = str(plan).replace(":", "@").replace(",", "_")
        if not (budget is None or isinstance(budget, Plan)):
            stem = f"budget{budget:g}ms_{stem}"
        written = set() if written is None else written
        name_on_disk, n = stem, 1
        while name_on_disk in written:
            n += 1
            name_on_disk = f"{stem}_{n}"
        written.add(name_on_disk)
        loaded = getattr(searcher, "model", None)  # its folder's name; "default" says less
        model = Path(str(loaded.name if loaded is not None else searcher.index.manifest.model_name)).name
        write_trec(Path(runs_dir) / f"{name_on_disk}.trec", rankings, run_tag("starbucks", model, str(plan)),
                   {q: scores[topics[q]] for q in rankings})
    return make_row(name, rankings, latencies, wall, qrels, measures, batch)


def size_plans(searcher, depth: int) -> list[Plan]:
    """One exhaustive single-stage plan per stored size: the paper's per-size table."""
    return [Plan.exhaustive(s, min(depth, len(searcher.index))) for s in searcher.index.sizes]


def format_table(rows: Sequence[Row], title: str = "") -> str:
    """A markdown table: one line per system, measures then speed."""
    if not rows:
        return ""
    names = list(rows[0].metrics)
    head = ["system", *names, "ms/query", "p50 ms", "p95 ms", "queries/s", "mode"]
    lines = ([f"### {title}", ""] if title else []) + [
        "| " + " | ".join(head) + " |", "|" + "---|" * len(head)
    ]
    for r in rows:
        cells = [r.name, *(f"{r.metrics[n]:.4f}" for n in names),
                 f"{r.mean_ms:.2f}", f"{r.p50_ms:.2f}", f"{r.p95_ms:.2f}", f"{r.qps:.1f}", r.mode]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
