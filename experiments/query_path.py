"""The query path end to end: what each encoder, early exits, BM25 and fusion buy, and whether budgets hold.

For each collection, over the index ``experiments.encoders`` builds (every diagonal size plus
BM25, encoded with ONNX fp32, which equals torch fp32), one query at a time from its text,
one thread:

1. calibrate with the CPU default encoder on training topics: the held-out ones the training
   recipes never see where they exist, else the first judged ones, else (no training split)
   the evaluation topics, said so in the results; calibration measures every plan that encodes
   its query with int8 query vectors too (``encoder=onnx-int8``), so the frontier and the
   budgets can take them;
2. time every system on each evaluation query in turn (so load from other work falls on
   all alike; each query then starts with caches the other systems' models flushed), and again
   warm, each system over every query in a block as a service running one system does, the
   blocks alternating over the passes; ``--repeats`` passes, each query's median: exhaustive full size with torch
   (the path before the fast encoder), ONNX fp32 and ONNX int8; every calibrated frontier
   plan (early exits among them), and each one that encodes the query with the default encoder
   (dense or fused) again with int8 query vectors against the same index, where its int8 twin is
   not on the frontier itself; BM25 alone, BM25 then the full
   size, and fused plans; the default path
   (``budget=None``); then budget tables: searching with ``budget=B`` for budgets from the
   frontier's measured latencies, each budget over every query in a block (as a service with
   one budget runs; one searcher serves them all, so the pace it learns from its searches
   carries on from block to block, and a budget's searches may run more than one plan), the
   blocks alternating over the passes, over the evaluation topics and again over the
   calibration topics the budgets were set on (the contract); a budget's block runs over its topics
   in as many passes as give it ``--budget-searches`` searches (1,000; never fewer than
   ``--repeats`` passes), so every verdict is a mean over as many searches whatever the size of
   the topic set: one 40-100 ms stop of the virtual machine adds 0.3-0.8 ms to the mean of three
   passes over DL19's 43 topics, more than the tolerance of any budget under 3 ms, and 0.04-0.1 ms
   to a mean over 1,000; each budget's row counts the searches its planner cut to make up an overrun
   (``Planner.choose``);
3. report the fastest plan within 1 % of exhaustive full-size nDCG@10 and its speed-up over
   the torch exhaustive path and over the exhaustive path with the default encoder, timed in
   turn and timed warm, whether
   every budget held (the mean over every search of every pass at most 1.1x the budget) on either
   set of topics, and
   whether a hybrid plan beat both BM25 and the dense full size. Each search's CPU time is recorded,
   and around each pass of a budget's block the hypervisor's steal time, the thread's switches and
   page faults, and a reference workload against its time at calibration. A broken budget is then
   judged again with each pass's steal taken out and at calibration's machine speed: a profile of the
   break, which tells a stopped or slow machine from a plan that runs over (the contract is judged as
   measured).

    python -m experiments.query_path --datasets scifact nfcorpus-dev dl19-pool

Writes experiments/results/query_path/NAME.{json,md} and a summary query_path.md.
"""
from __future__ import annotations

import argparse
import collections
import gc
import json
import os
import resource
import time
import warnings
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from experiments import runtime
from experiments.datasets import COLLECTIONS
from experiments.encoders import index_for
from experiments.frontier import CALIBRATION_SPLITS, calibration_topics
from retrieval import Plan, Searcher
from retrieval.calibrate import calibrate
from retrieval.evaluate import judged_topics, score
from retrieval.frontier import format_frontier
from starbucks.encoder import CPU_DEFAULT
from starbucks.model import StarbucksModel
from starbucks.topics import read_qrels, read_topics

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "query_path"
K = 10
ENCODERS = ("torch", "onnx", "onnx-int8")
INT8 = "onnx-int8"
HYBRIDS = ("bm25:1000,{full}:10", "bm25:1000,{full}:10,fuse=rrf", "bm25:1000,{full}:10,fuse=linear:0.3",
           "bm25:1000,{full}:10,fuse=linear:0.5", "bm25:1000,{full}:10,fuse=linear:0.7")
ROUND_BUDGETS = (1.0, 2.0, 3.0, 5.0, 8.0, 12.0, 20.0)
HELD_OUT = {"scifact": "scifact", "nfcorpus-dev": "nfcorpus"}  # the training recipes' collection names


def systems(searchers: dict, default: str, frontier, full) -> list[tuple[str, str, object]]:
    """(kind, name, search(text) -> Result) for every system compared."""
    s = searchers[default]
    out = [("exhaustive", f"{full}:{K} exhaustive, {kind}", _plan(searchers[kind], Plan.exhaustive(full, K)))
           for kind in ENCODERS]
    out += [("frontier", str(p.plan) if p.plan.encoder else f"{p.plan} ({default})", _plan(s, p.plan))
            for p in frontier.points]
    # The frontier's other plans with int8 query vectors, searched against the same (fp32-encoded) index:
    # every frontier plan that encodes the query with the default encoder and whose int8 twin calibration
    # left off the frontier (dense and fused; BM25 alone encodes nothing).
    on_frontier = {p.plan for p in frontier.points}
    twins = [p.plan.with_encoder(INT8) for p in frontier.points if p.plan.sizes and p.plan.encoder is None]
    out += [("frontier int8 queries", str(plan), _plan(s, plan)) for plan in twins if plan not in on_frontier]
    out += [("BM25", f"bm25:{K}", _plan(s, Plan.parse(f"bm25:{K}")))]
    out += [("hybrid", f"{h.format(full=full)} ({default})", _plan(s, Plan.parse(h.format(full=full)))) for h in HYBRIDS]
    out += [("default", f"budget=None ({default})", lambda q: s.search(q, k=K))]
    return out


def _plan(searcher: Searcher, plan: Plan):
    return lambda q: searcher.search(q, k=K, budget=plan)


def budgets(frontier) -> list[float]:
    """Each frontier plan's measured latency (the smallest budget that selects it) and round numbers above the cheapest."""
    cheapest = frontier.points[0].ms
    return sorted({round(p.ms + 0.005, 2) for p in frontier.points} | {b for b in ROUND_BUDGETS if b >= cheapest})


_REFERENCE = {}


def reference_ms(rounds: int = 5) -> float:
    """A fixed workload's median time in ms: a scatter-add of 50,000 postings into 200,000 scores and a
    product of 64 x 384 by 384 x 1,000, what a BM25 search and a rescoring do. Timed with the budgets'
    blocks of searches and at calibration, its ratio tells a slow spell of the machine from a slow plan."""
    if not _REFERENCE:
        rng = np.random.default_rng(0)
        _REFERENCE.update(rows=rng.choice(200_000, 50_000, replace=False), data=rng.random(50_000, dtype=np.float32),
                          a=rng.random((64, 384), dtype=np.float32), b=rng.random((384, 1000), dtype=np.float32))
    r = _REFERENCE
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        scores = np.zeros(200_000, dtype=np.float32)
        scores[r["rows"]] += r["data"]
        r["a"] @ r["b"]
        times.append((time.perf_counter() - t) * 1000)
    return float(np.median(times))


def timed(systems: list, topics: dict, repeats: int, interleave: bool = True,
          reference: float | None = None, keep_rankings: bool = False) -> dict[str, dict]:
    """Each system's rankings and per-query latency (median over passes). ``interleave``: each query
    goes through every system in turn; else each system runs every query in a block (as a service
    running one budget would), the blocks alternating over the passes. ``reference``: the reference
    workload's time at calibration; each block then records the workload's time just before it and just
    after it, over that (``machine_x``, ``machine_x_after``: above 1, the machine ran slower than when the
    plans were measured). Blocks record each pass's mean (``pass_mean_ms``) and profile (``pass_profile``:
    the hypervisor's steal time, the thread's involuntary switches and page faults); every search its
    CPU time (``off_cpu``). ``keep_rankings``: every pass's rankings too (``rankings_per_pass``), where
    a system's plan may change from pass to pass."""
    qids = list(topics)
    for _, _, search in systems:  # warm-up: lazy set-up is not timed
        search(topics[qids[0]])
    ms = {name: np.empty((repeats, len(qids))) for _, name, _ in systems}
    rankings = {name: {} for _, name, _ in systems}
    per_pass = {name: [{} for _ in range(repeats)] for _, name, _ in systems} if keep_rankings else None
    plans = {}

    passes = CollectorPasses()
    machine = {name: [] for _, name, _ in systems}
    machine_after = {name: [] for _, name, _ in systems}

    cpu = {name: np.empty((repeats, len(qids))) for _, name, _ in systems}
    # Per pass of a block: what the thread and the machine went through (read between passes only:
    # reading /proc/stat between searches slows the searches that follow).
    pass_profile = {name: [] for _, name, _ in systems}
    at_start = {}

    def one(r, i, qid, name, search):
        passes.system = name
        c = time.thread_time()
        t = time.perf_counter()
        result = search(topics[qid])
        ms[name][r, i] = (time.perf_counter() - t) * 1000
        cpu[name][r, i] = (time.thread_time() - c) * 1000
        passes.system = None
        plans.setdefault(name, collections.Counter())[str(result.plan)] += 1
        if r == 0:
            rankings[name][qid] = result.docids
        if per_pass is not None:
            per_pass[name][r][qid] = result.docids

    def bracket(name, after=False):
        """Around each pass of a block: the reference workload outside it, the pass's profile inside."""
        if interleave:
            return
        if not after and reference is not None:
            machine[name].append(reference_ms() / reference)
        now = (resource.getrusage(resource.RUSAGE_THREAD), steal_ticks())
        if not after:
            at_start[name] = now
            return
        (before, steal), (end, steal_end) = at_start.pop(name), now
        pass_profile[name].append({
            "stolen_ms": stolen_ms(steal, steal_end),
            "involuntary_switches": end.ru_nivcsw - before.ru_nivcsw,
            "faults": end.ru_minflt - before.ru_minflt + end.ru_majflt - before.ru_majflt})
        if reference is not None:
            machine_after[name].append(reference_ms() / reference)

    gc.callbacks.append(passes)
    try:
        _passes(systems, qids, repeats, interleave, one, bracket)
    finally:
        gc.callbacks.remove(passes)
    out = {}
    for kind, name, _ in systems:
        per_query = np.median(ms[name], axis=0)
        out[name] = {"kind": kind, "mean_ms": float(per_query.mean()), "every_search_mean_ms": float(ms[name].mean()),
                     "p50_ms": float(np.percentile(per_query, 50)),
                     "p95_ms": float(np.percentile(per_query, 95)),
                     "plans": [plan for plan, _ in plans[name].most_common()],
                     "plan_share": {plan: n / plans[name].total() for plan, n in plans[name].most_common()},
                     "collector": passes.of(name),
                     **off_cpu(ms[name], cpu[name], qids),
                     **({"pass_profile": [{**profile, "off_cpu_ms": float(off)} for profile, off in zip(
                         pass_profile[name], np.clip(ms[name] - cpu[name], 0, None).sum(axis=1))],
                         "pass_mean_ms": ms[name].mean(axis=1).tolist()} if not interleave else {}),
                     **({"machine_x": machine[name], "machine_x_after": machine_after[name]} if machine[name] else {}),
                     "rankings": rankings[name],
                     **({"rankings_per_pass": per_pass[name]} if per_pass is not None else {})}
    return out


def _passes(systems: list, qids: list, repeats: int, interleave: bool, one, bracket) -> None:
    for r in range(repeats):
        if interleave:
            for i, qid in enumerate(tqdm(qids, desc=f"pass {r + 1}/{repeats}", leave=False)):
                for _, name, search in systems:
                    one(r, i, qid, name, search)
        else:
            for _, name, search in tqdm(systems, desc=f"pass {r + 1}/{repeats}", leave=False):
                bracket(name)
                for i, qid in enumerate(qids):
                    one(r, i, qid, name, search)
                bracket(name, after=True)


SLOWEST = 3  # the slowest searches each system's profile lists


TICK_MS = 1000 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 10.0


def steal_ticks() -> np.ndarray | None:
    """Each CPU's steal time so far, in clock ticks (``/proc/stat``): time the hypervisor ran something
    else while this virtual machine's CPU had work. None where the kernel does not say."""
    try:
        with open("/proc/stat", "rb") as f:
            lines = f.read().splitlines()
        return np.array([int(line.split()[8]) for line in lines[1:] if line.startswith(b"cpu")])
    except (OSError, IndexError, ValueError):
        return None


def stolen_ms(before: np.ndarray | None, after: np.ndarray | None) -> float | None:
    """The steal time between two ``steal_ticks`` readings on the CPU that saw most of it, in ms (None
    where ``/proc/stat`` could not be read)."""
    if before is None or after is None:
        return None
    return float((after - before).max(initial=0) * TICK_MS)


def off_cpu(ms: np.ndarray, cpu: np.ndarray, qids: list) -> dict:
    """Where a system's time went beyond its work: the searching thread's CPU time in each search against
    its wall time (``thread_time``; at one thread the encoder, FAISS and BM25 all run on it), summed over
    every search as ``off_cpu_ms`` (time the thread waited: descheduled, on the disk, or its virtual CPU
    stopped by the hypervisor), and its slowest searches with their CPU time. A search slow on the CPU
    did more work; one slow off it waited for the machine (each pass's ``pass_profile`` says how: the
    hypervisor's steal time, the thread's involuntary switches and its page faults)."""
    slowest = np.argsort(ms, axis=None)[::-1][:SLOWEST]
    return {"searches": int(ms.size), "cpu_mean_ms": float(cpu.mean()),
            "off_cpu_ms": float(np.clip(ms - cpu, 0, None).sum()),
            "slowest": [{"pass": int(r), "query": qids[i], "ms": float(ms[r, i]), "cpu_ms": float(cpu[r, i])}
                        for r, i in (np.unravel_index(j, ms.shape) for j in slowest)]}


class CollectorPasses:
    """The cycle collector's passes that ran inside a timed search (a ``gc.callbacks`` hook): per system,
    how many, of which generation, and the ms they took, part of the search's time. The profile that tells
    a slow block's cause from its plan's."""

    def __init__(self):
        self.system = None
        self._start = 0.0
        self._seen: dict[str, dict] = {}

    def __call__(self, phase: str, info: dict) -> None:
        if self.system is None:
            return
        if phase == "start":
            self._start = time.perf_counter()
            return
        seen = self._seen.setdefault(self.system, {"passes": 0, "full_passes": 0, "ms": 0.0})
        seen["passes"] += 1
        seen["full_passes"] += info["generation"] == 2
        seen["ms"] += (time.perf_counter() - self._start) * 1000

    def of(self, system: str) -> dict:
        return self._seen.get(system, {"passes": 0, "full_passes": 0, "ms": 0.0})


def run(name: str, model: StarbucksModel, args) -> dict:
    c = COLLECTIONS[name]
    folder, build = index_for(name, "onnx", model, args.build_threads)
    runtime.setup(1)
    qrels = read_qrels(c.qrels)
    topics = judged_topics(read_topics(c.topics), qrels)
    default = CPU_DEFAULT
    searchers = {kind: Searcher(folder, model=model, encoder=kind, threads=1) for kind in ENCODERS}
    cal_topics, cal_qrels, cal_note = held_out_topics(name) or calibration_topics(
        name, topics, qrels, args.calibration_queries)
    reference = reference_ms()
    frontier, points = calibrate(searchers[default], cal_topics, cal_qrels, "nDCG@10", 0.01, cal_note,
                                 progress=False, remeasure=True)
    reference = min(reference, reference_ms())  # the machine as calibration found it, at its faster end
    frontier.save(folder)
    print(format_frontier(frontier), flush=True)
    searchers[default] = Searcher(folder, model=model, encoder=default, threads=1)  # planning from the frontier
    full = max(searchers[default].index.sizes)
    compared = systems(searchers, default, frontier, full)
    budget_list = budgets(frontier)
    s = searchers[default]
    budgeted = [("budget", f"budget {b:g} ms", (lambda b: lambda q: s.search(q, k=K, budget=b))(b)) for b in budget_list]
    # Budgets are timed as a search service with one budget runs: each budget over every query in a
    # block, the blocks alternating over the passes.
    said = {"evaluation": [], "calibration": []}  # what the planner warned of in each topic set's budget blocks
    measured = {**timed(compared, topics, args.repeats),
                **made_up(s, budget_list, lambda: timed(budgeted, topics, budget_passes(
                    topics, args.repeats, args.budget_searches), interleave=False, reference=reference),
                    said["evaluation"])}
    # Warm: the same systems, each over every query in a block (its model's weights stay in the caches).
    for system, row in timed(compared, topics, args.repeats, interleave=False).items():
        measured[system]["warm"] = {key: row[key] for key in ("mean_ms", "p50_ms", "p95_ms")}
    for row in measured.values():
        row["nDCG@10"] = score(row.pop("rankings"), qrels, _ndcg())["nDCG@10"]
    # The contract itself: the same budgets searched over the calibration topics they were set on.
    on_calibration = made_up(s, budget_list, lambda: timed(budgeted, cal_topics, budget_passes(
        cal_topics, args.repeats, args.budget_searches), interleave=False, reference=reference),
        said["calibration"])
    for row in on_calibration.values():
        row["nDCG@10"] = score(row.pop("rankings"), cal_qrels, _ndcg())["nDCG@10"]
    budget_rows = [budget_row(b, measured[f"budget {b:g} ms"], frontier) for b in budget_list]
    calibration_rows = [budget_row(b, on_calibration[f"budget {b:g} ms"], frontier) for b in budget_list]
    return {"collection": name, "note": c.note, "queries": len(topics), "documents": len(s.index),
            "model": model.fingerprint(), "default_encoder": default, "calibration": frontier.to_dict(),
            "plans_measured": len(points), "build": build, "systems": measured, "budgets": budget_rows,
            "budgets_on_calibration_topics": calibration_rows, "planner_warnings": said,
            "summary": summarise(measured, full, default, budget_rows, calibration_rows)}


def made_up(searcher: Searcher, budget_list: list, run, said: list | None = None) -> dict:
    """``run()``'s rows of the budgets, each with how many of its searches its planner cut to make up an
    overrun (``made_up``; counted from the searcher's planner, so it takes in the block's one untimed
    warm-up search). ``said``: gets what the planner warned of meanwhile (the calibrated latency drifted,
    a budget cannot be kept now), each message once, in order; the warnings are shown as well."""
    counts = searcher.planner.made_up
    before = {b: counts[(b, K)] for b in budget_list}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = run()
    for w in caught:
        warnings.showwarning(w.message, w.category, w.filename, w.lineno)
        if said is not None and issubclass(w.category, UserWarning) and str(w.message) not in said:
            said.append(str(w.message))
    for b in budget_list:
        rows[f"budget {b:g} ms"]["made_up"] = counts[(b, K)] - before[b]
    return rows


def budget_passes(topics: dict, repeats: int, searches: int) -> int:
    """Passes over ``topics`` that give each budget's block at least ``searches`` searches, and never
    fewer than ``repeats``."""
    return max(repeats, -(-searches // max(len(topics), 1)))


def held_out_topics(name: str) -> tuple[dict, dict, str] | None:
    """The judged train topics the training recipes hold out (never trained on, by the default
    model's adaptors either): drawn here as ``experiments.training.default_model --stages data``
    draws them (the same count and seed), so no file from a training run is needed."""
    from experiments.training.default_model import HOLDOUT
    from training.build_data import SEED, split_holdout

    if name not in HELD_OUT:
        return None
    path = CALIBRATION_SPLITS[name][1]
    _, held = split_holdout(read_qrels(path), HOLDOUT[HELD_OUT[name]], SEED, path)
    chosen = judged_topics(read_topics(CALIBRATION_SPLITS[name][0]), held)
    return chosen, {q: held[q] for q in chosen}, f"{len(chosen)} held-out judged train topics of {path}"


def budget_row(budget: float, row: dict, frontier) -> dict:
    """A budget's measured row; its plan is the one most of its searches ran (the pace moves a budget
    to a cheaper plan while the machine runs slow), the others with their share of the searches. The
    contract is judged on the mean over every search of every pass (``mean_ms``), not the mean of each
    query's median (``per_query_median_mean_ms``), which drops the occasional slow search."""
    plan = Plan.parse(row["plans"][0])
    mean = row["every_search_mean_ms"]
    out = {"budget_ms": budget, "plan": str(plan), "predicted_ms": frontier.measured(plan), "mean_ms": mean,
           "per_query_median_mean_ms": row["mean_ms"], "p95_ms": row["p95_ms"], "nDCG@10": row["nDCG@10"],
           "holds": mean <= 1.1 * budget, "plan_share": row.get("plan_share", {str(plan): 1.0}),
           **({"collector": row["collector"]} if "collector" in row else {}),
           **{key: row[key] for key in ("machine_x", "machine_x_after", "pass_mean_ms", "searches", "cpu_mean_ms",
                                        "off_cpu_ms", "pass_profile", "slowest", "made_up") if key in row}}
    if "pass_mean_ms" in row and "machine_x_after" in row:
        scaled = at_machine_speed(row["pass_mean_ms"], row["machine_x"], row["machine_x_after"])
        out.update(mean_ms_at_calibration_speed=scaled, holds_at_calibration_speed=scaled <= 1.1 * budget)
    less = less_steal(row.get("pass_mean_ms", []), row.get("pass_profile", []), row.get("searches"))
    if less is not None:
        out.update(mean_ms_less_steal=less, holds_less_steal=less <= 1.1 * budget)
    return out


def less_steal(pass_means: list, profile: list, searches: int | None) -> float | None:
    """The mean latency with the hypervisor's steal time taken out of each pass: no more than the time the
    searching thread spent off the CPU in it (steal is counted on any of the machine's CPUs, in 10 ms
    ticks). A profile of a broken budget, not the contract: it tells a block the hypervisor stopped from
    one whose plan ran over. None without the counts."""
    if not searches or not pass_means or len(profile) != len(pass_means) \
            or any(p.get("stolen_ms") is None for p in profile):
        return None
    per_pass = searches / len(pass_means)
    return float(np.mean([m - min(p["stolen_ms"], p["off_cpu_ms"]) / per_pass for m, p in zip(pass_means, profile)]))


def at_machine_speed(pass_means: list, before: list, after: list) -> float:
    """The mean over passes of each pass's mean latency divided by how much slower the machine ran than at
    calibration, where the reference workload ran slower both before and after the pass (the smaller
    of the two; a faster machine is not credited). A profile of a broken budget, not the contract: it
    tells a block that ran over because the whole machine slowed down from one whose plan ran over."""
    slow = [max(1.0, min(b, a)) for b, a in zip(before, after)]
    return float(np.mean([m / x for m, x in zip(pass_means, slow)]))


def _ndcg():
    import ir_measures

    return [ir_measures.parse_measure("nDCG@10")]


def fastest_within_1pct(rows: dict, full, default: str, warm: bool = False) -> dict:
    """The fastest system within 1 % of torch exhaustive full-size nDCG@10 and its speed-ups, by the
    timing in turn or (``warm``) by the warm timing; None when the rows have no warm timing."""
    def ms(row):
        return row["warm"]["mean_ms"] if warm else row["mean_ms"]

    if warm and not all("warm" in r for r in rows.values() if r["kind"] != "budget"):
        return None
    today, new = rows[f"{full}:{K} exhaustive, torch"], rows[f"{full}:{K} exhaustive, {default}"]
    ok = {n: r for n, r in rows.items() if r["nDCG@10"] >= 0.99 * today["nDCG@10"] and r["kind"] != "budget"}
    fastest = min(ok, key=lambda n: ms(ok[n]))
    # Dense: no plan the system ran uses BM25 (the default path is judged by what it chose).
    dense = {n: r for n, r in ok.items() if not any(Plan.parse(p).uses_bm25 for p in r["plans"])}
    fastest_dense = min(dense, key=lambda n: ms(dense[n]))
    return {"today_ms": ms(today), "system": fastest, "mean_ms": ms(ok[fastest]), "nDCG@10": ok[fastest]["nDCG@10"],
            "x_today": ms(today) / ms(ok[fastest]), "x_exhaustive_default_encoder": ms(new) / ms(ok[fastest]),
            "target_x_today": 5.0, "reached": ms(today) / ms(ok[fastest]) >= 5.0,
            "dense": {"system": fastest_dense, "mean_ms": ms(dense[fastest_dense]),
                      "nDCG@10": dense[fastest_dense]["nDCG@10"], "x_today": ms(today) / ms(dense[fastest_dense]),
                      "x_exhaustive_default_encoder": ms(new) / ms(dense[fastest_dense])}}


def summarise(rows: dict, full, default: str, budget_rows: list, calibration_rows: list | None = None) -> dict:
    today = rows[f"{full}:{K} exhaustive, torch"]
    in_turn = fastest_within_1pct(rows, full, default)
    dense = in_turn.pop("dense")
    in_turn.pop("today_ms")
    hybrids = {n: r for n, r in rows.items() if r["kind"] == "hybrid" and "fuse=" in n}
    best_hybrid = max(hybrids, key=lambda n: hybrids[n]["nDCG@10"])
    bm25 = rows[f"bm25:{K}"]["nDCG@10"]
    return {
        "today": {"system": f"{full}:{K} exhaustive, torch", "mean_ms": today["mean_ms"], "nDCG@10": today["nDCG@10"]},
        "fastest_within_1pct": in_turn,
        "fastest_dense_within_1pct": dense,
        "fastest_within_1pct_warm": fastest_within_1pct(rows, full, default, warm=True),
        "budgets_hold": all(r["holds"] for r in budget_rows),
        "budgets_broken": [r["budget_ms"] for r in budget_rows if not r["holds"]],
        "budgets_broken_at_calibration_speed": still_broken(budget_rows),
        "budgets_broken_less_steal": still_broken(budget_rows, "holds_less_steal"),
        **({"budgets_hold_on_calibration_topics": all(r["holds"] for r in calibration_rows),
            "budgets_broken_on_calibration_topics": [r["budget_ms"] for r in calibration_rows if not r["holds"]],
            "budgets_broken_on_calibration_topics_at_calibration_speed": still_broken(calibration_rows),
            "budgets_broken_on_calibration_topics_less_steal": still_broken(calibration_rows, "holds_less_steal")}
           if calibration_rows is not None else {}),
        "hybrid": {"system": best_hybrid, "nDCG@10": hybrids[best_hybrid]["nDCG@10"], "bm25": bm25,
                   "dense_full": today["nDCG@10"],
                   "beats_both": hybrids[best_hybrid]["nDCG@10"] > max(bm25, today["nDCG@10"])},
    }


def still_broken(rows: list, verdict: str = "holds_at_calibration_speed") -> list | None:
    """The broken budgets that run over even by ``verdict``: at calibration's machine speed, or with the
    hypervisor's steal taken out (``holds_less_steal``). None: not measured."""
    if not all(verdict in r for r in rows):
        return None
    return [r["budget_ms"] for r in rows if not r["holds"] and not r[verdict]]


def markdown(results: dict) -> str:
    r = results["result"]
    p = results["provenance"]
    lines = [f"# Query path: {r['collection']} ({r['note']})", "", f"`{p['command']}` at commit {p['git_commit'][:10]}; "
             f"{r['documents']:,} documents, {r['queries']} queries, one thread, {results['repeats']} passes "
             f"(each query's median); load average {p['machine']['load_average']} at start, "
             f"{results['load_average_at_end']} at end.", "",
             f"Calibrated with {r['default_encoder']} on {r['calibration']['topics']} ({r['plans_measured']} plans).", "",
             *timed_table(r["calibration"].get("timed")),
             "Timed in turn (each query through every system) and warm (each system over every query in a block):", "",
             "| system | kind | nDCG@10 | mean ms | p50 ms | p95 ms | warm mean ms | warm p95 ms |",
             "|---|---|---|---|---|---|---|---|"]
    for name, s in sorted(r["systems"].items(), key=lambda x: x[1]["mean_ms"]):
        if s["kind"] != "budget":
            warm = f"{s['warm']['mean_ms']:.2f} | {s['warm']['p95_ms']:.2f}" if "warm" in s else "| "
            lines.append(f"| {name} | {s['kind']} | {s['nDCG@10']:.4f} | {s['mean_ms']:.2f} | {s['p50_ms']:.2f} | "
                         f"{s['p95_ms']:.2f} | {warm} |")
    tables = [("Budgets over the evaluation topics (the plan each chose, its calibrated latency, and what searching "
               "with it measured):", r["budgets"], "evaluation")]
    if "budgets_on_calibration_topics" in r:
        tables.append(("The same budgets over the calibration topics they were set on (the contract):",
                       r["budgets_on_calibration_topics"], "calibration"))
    for title, rows, topic_set in tables:
        lines += ["", title + block_note(rows), "", "| budget ms | plan (share of searches) | predicted ms (main plan) | mean ms (every search) | p95 ms | "
                  "nDCG@10 | mean <= 1.1x budget | collector passes in its searches (full), ms | "
                  "reference workload before (and after) each pass, x calibration | "
                  "mean ms at calibration's machine speed | mean ms less the hypervisor's steal | mean ms on the CPU | "
                  "searches cut to make up an overrun |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for b in rows:
            pred = "" if b["predicted_ms"] is None else f"{b['predicted_ms']:.2f}"
            share = b.get("plan_share", {b["plan"]: 1.0})
            plan = b["plan"] if len(share) == 1 else "; ".join(f"{p} ({v:.0%})" for p, v in share.items())
            lines.append(f"| {b['budget_ms']:g} | {plan} | {pred} | {b['mean_ms']:.2f} | {b['p95_ms']:.2f} | "
                         f"{b['nDCG@10']:.4f} | {'yes' if b['holds'] else '**no**'} | {collector_cell(b)} | "
                         f"{machine_cell(b)} | {speed_cell(b)} | {speed_cell(b, 'less_steal')} | {cpu_cell(b)} | "
                         f"{b.get('made_up', '')} |")
        lines += broken_profile(rows)
        lines += warned(r.get("planner_warnings", {}).get(topic_set))
    lines += ["", "Summary:", "", "```json", json.dumps(r["summary"], indent=2), "```", ""]
    return "\n".join(lines)


def timed_table(timed: list | None) -> list[str]:
    """Lines of a table of every plan calibration timed end to end, and whether it stayed on the frontier
    (older results: not recorded)."""
    if not timed:
        return []
    lines = ["Every plan calibration timed end to end (the grid's frontier), each latency measured in order:", "",
             "| plan | nDCG@10 (calibration topics) | grid estimate ms | end-to-end ms | on the frontier |",
             "|---|---|---|---|---|"]
    for t in timed:
        spells = t.get("spells_ms")
        blocks = f" (blocks during calibration: {len(spells)}, slowest {max(spells):.2f})" if spells else ""
        lines.append(f"| {t['plan']} | {t['effectiveness']:.4f} | {t['grid_ms']:.2f} | "
                     f"{' / '.join(f'{ms:.2f}' for ms in t['ms'])}{blocks} | {'yes' if t['on_frontier'] else 'no'} |")
    return lines + [""]


def warned(said: list | None) -> list[str]:
    """Lines quoting what the planner warned of during a topic set's budget blocks (older results: not
    recorded)."""
    if said is None:
        return []
    return ["", "The planner warned: " + ("nothing." if not said else "; ".join(f'"{m}"' for m in said) + ".")]


def block_note(rows: list) -> str:
    """How many passes and searches each budget's mean was taken over (older results: not recorded)."""
    if not rows or "pass_mean_ms" not in rows[0]:
        return ""
    return f" each budget's mean over {len(rows[0]['pass_mean_ms'])} passes, {rows[0]['searches']:,} searches."


def broken_profile(rows: list) -> list[str]:
    """Lines profiling each broken budget: its passes' means, and its slowest searches on and off the CPU."""
    out = []
    for b in rows:
        if b["holds"] or "slowest" not in b:
            continue
        slow = "; ".join(f"{s['ms']:.1f} ms ({s['cpu_ms']:.1f} on the CPU; pass {s['pass'] + 1}, query {s['query']})"
                         for s in b["slowest"])
        passes = " / ".join(f"{pass_cell(x)}" for x in b.get("pass_profile", []))
        out.append(f"- budget {b['budget_ms']:g} broken: passes' means "
                   f"{' / '.join(f'{m:.2f}' for m in b['pass_mean_ms'])} ms; {b['off_cpu_ms']:.1f} ms off the CPU "
                   f"in all; slowest searches: {slow}; each pass: {passes}.")
    return ["", *out] if out else []


def pass_cell(p: dict) -> str:
    stolen = "steal unknown" if p["stolen_ms"] is None else f"{p['stolen_ms']:.0f} ms stolen"
    off = f"{p['off_cpu_ms']:.1f} ms off the CPU, " if "off_cpu_ms" in p else ""
    return f"{off}{stolen}, {p['involuntary_switches']} involuntary switches, {p['faults']} page faults"


def cpu_cell(row: dict) -> str:
    return f"{row['cpu_mean_ms']:.2f}" if "cpu_mean_ms" in row else ""


def machine_cell(row: dict) -> str:
    before, after = row.get("machine_x", []), row.get("machine_x_after")
    if after is None:
        return " / ".join(f"{x:.2f}" for x in before)
    return " / ".join(f"{b:.2f} ({a:.2f})" for b, a in zip(before, after))


def speed_cell(row: dict, by: str = "at_calibration_speed") -> str:
    if f"mean_ms_{by}" not in row:
        return ""
    if row["holds"]:
        return f"{row[f'mean_ms_{by}']:.2f}"
    verdict = "holds" if row[f"holds_{by}"] else "**over**"
    return f"{row[f'mean_ms_{by}']:.2f} ({verdict})"


def collector_cell(row: dict) -> str:
    c = row.get("collector")
    return "" if c is None else f"{c['passes']} ({c['full_passes']}), {c['ms']:.1f}"


def summary_table(out: Path) -> str:
    """One line per collection from the committed JSON files."""
    lines = ["| collection | today (torch, exhaustive full) ms | fastest within 1 % | its ms | x today | "
             "x exhaustive (new encoder) | fastest dense within 1 % | x today | warm: fastest within 1 % | x today | "
             "budgets hold (evaluation topics) | "
             "budgets hold (calibration topics) | best hybrid | hybrid / BM25 / dense full nDCG@10 |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for path in sorted(out.glob("*.json")):
        s = json.loads(path.read_text())["result"]["summary"]
        f, d, h = s["fastest_within_1pct"], s["fastest_dense_within_1pct"], s["hybrid"]
        lines.append(f"| {path.stem} | {s['today']['mean_ms']:.2f} | {f['system']} | {f['mean_ms']:.2f} | "
                     f"{f['x_today']:.2f}x | {f['x_exhaustive_default_encoder']:.2f}x | "
                     f"{d['system']} ({d['mean_ms']:.2f} ms) | {d['x_today']:.2f}x | {warm_cells(s)} | "
                     f"{held(s['budgets_hold'], s['budgets_broken'], s.get('budgets_broken_at_calibration_speed'), s.get('budgets_broken_less_steal'))} | "
                     f"{held(s.get('budgets_hold_on_calibration_topics'), s.get('budgets_broken_on_calibration_topics'), s.get('budgets_broken_on_calibration_topics_at_calibration_speed'), s.get('budgets_broken_on_calibration_topics_less_steal'))} | "
                     f"{h['system']} | {h['nDCG@10']:.4f} / {h['bm25']:.4f} / {h['dense_full']:.4f} |")
    return "\n".join(lines) + "\n"


def warm_cells(summary: dict) -> str:
    w = summary.get("fastest_within_1pct_warm")
    if not w:
        return "not measured | "
    return f"{w['system']} ({w['mean_ms']:.2f} ms; today {w['today_ms']:.2f} ms) | {w['x_today']:.2f}x"


def held(hold: bool | None, broken: list | None, at_speed: list | None = None, less_steal: list | None = None) -> str:
    """A topic set's verdict: the broken budgets, each marked where it held without the hypervisor's steal
    time or at calibration's machine speed."""
    if hold is None:
        return "not measured"
    if hold:
        return "yes"

    def why(b):
        if less_steal is not None and b not in less_steal:
            return " (holds without the hypervisor's steal)"
        return " (holds at calibration's machine speed)" if at_speed is not None and b not in at_speed else ""

    return "no: " + ", ".join(f"{b:g}{why(b)}" for b in broken)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=runtime.description(__doc__))
    parser.add_argument("--datasets", nargs="+", default=["scifact", "nfcorpus-dev", "dl19-pool"])
    parser.add_argument("--model", help="model folder (default: the shipped model)")
    parser.add_argument("--calibration-queries", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3, help="timed passes over the queries (default: %(default)s)")
    parser.add_argument("--budget-searches", type=int, default=1000,
                        help="searches each budget's mean is taken over, in whole passes over its topics "
                             "(default: %(default)s)")
    parser.add_argument("--build-threads", type=int, default=2, help="threads for building a missing index")
    parser.add_argument("--summarise", action="store_true",
                        help="only derive the summaries and tables again from the stored results files")
    args = parser.parse_args(argv)
    if args.summarise:
        for name in args.datasets:
            path = OUT / f"{name}.json"
            results = json.loads(path.read_text())
            r = results["result"]
            full = next(Plan.parse(s["plans"][0])[0].size for s in r["systems"].values() if s["kind"] == "exhaustive")
            r["summary"] = summarise(r["systems"], full, r["default_encoder"], r["budgets"],
                                     r.get("budgets_on_calibration_topics"))
            path.write_text(json.dumps(results, indent=2) + "\n")
            (OUT / f"{name}.md").write_text(markdown(results))
        (OUT / "query_path.md").write_text("# Query path, end to end\n\n" + summary_table(OUT))
        return
    runtime.setup(1)
    model = StarbucksModel.load(args.model, device="cpu")
    OUT.mkdir(parents=True, exist_ok=True)
    # Recorded before any results file is written: each collection's files rewritten in the run would
    # otherwise mark the checkout changed (``-dirty``) in the provenance of the collections after it.
    started = runtime.record("experiments.query_path", 1, argv)
    for name in args.datasets:
        results = {"provenance": {**started, "machine": runtime.machine(1)}, "repeats": args.repeats,
                   "budget_searches": args.budget_searches}
        results["result"] = run(name, model, args)
        results["load_average_at_end"] = runtime.machine(1)["load_average"]
        (OUT / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
        (OUT / f"{name}.md").write_text(markdown(results))
        print(markdown(results), flush=True)
    (OUT / "query_path.md").write_text("# Query path, end to end\n\n" + summary_table(OUT))


if __name__ == "__main__":
    main()
