"""Scale benchmark: search cost and memory at 100k-10M documents, on synthetic vectors (``experiments.synthetic``).

Real text cannot be encoded at that scale here, so document vectors are drawn from a generator
fitted to a real index; queries are real topics encoded by the real model. Quality is recall@10
against exhaustive full-size search over the same documents (its own top 10 are the qrels),
computed block by block over the memory-mapped vectors, so it fits at 10M.

1. Check the generator on the real corpus: the recall of every cascade over the real index
   against the same cascades over a synthetic index of the same size, for several mixture
   sizes; the one that agrees best generates the large corpora.
2. For each corpus size, every system timed from query vectors, one query at a time and in
   batches of 32, and end to end (the encoding of its deepest layer added):
   - cascades with each kind of shortlist: flat, HNSW and IVF(-PQ) float shortlists, and binary
     (sign-bit) shortlists searched flat (the binary full-size scan plus rescore), by HNSW or by IVF;
     for each, the cheapest plan of the planner's grid (and deeper shortlists) keeping 99 % recall@10;
   - the fastest of those with its rerank tier memory-mapped (warm, and cold: the rerank files'
     pages dropped with ``posix_fadvise(DONTNEED)`` before each timed block of queries), in RAM as
     float16, in RAM as int8 codes, and (after an IVF-PQ shortlist) as residual codes in RAM;
   - exhaustive full size: FAISS flat float32 in RAM, and the index's own float16 memory-mapped scan;
   - HNSW32 over full-size vectors over an efSearch sweep, and IVF-PQ + ``IndexRefineFlat``.
   Each system reports its build time, the bytes per document it holds by computation, and its
   resident memory measured as RSS growth (``/proc/self/statm`` before it is built or loaded and
   after its searches; for a memory map, the pages its searches touched). A baseline whose computed
   size does not fit in the memory available is skipped with that size. A plot of latency against
   recall, with bytes per document beside each point, is written when matplotlib is installed.

    python -m experiments.scale --fit-index experiments/indexes/dl19-pool-minilm-l6-base \\
        --topics ../shared/data/msmarco-passage/dev-small/queries.jsonl --docs 100000 1000000 --threads 1
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import os
import resource
import shutil
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm.auto import tqdm

from experiments import baselines, runtime
from experiments.datasets import ROOT
from experiments.synthetic import Generator, write_index
from indexes import Index
from indexes.faiss_index import HNSW_M, binary_index, fill_index, new_index, param_name, param_values
from indexes.tiers import RERANK_TIERS, ivfpq_shortlist
from retrieval import Plan, Searcher, Stage
from retrieval.calibrate import Encoded, measure_plans
from retrieval.evaluate import parse_measures
from retrieval.planner import Planner, first_stages
from starbucks.sizes import parse_sizes
from starbucks.topics import read_topics

HERE = Path(__file__).resolve().parent
K = 10
TARGET = 0.99
BATCH = 32
DEEP_KEEPS = (5000, 10000, 20000, 50000, 100000, 200000)
DEEP_SEARCH = {"ef": (512, 1024), "nprobe": (128, 256, 512)}  # ANN search values beyond the planner's, for recall near 1
DEEP_SEARCH_KEEPS = (100, 200, 500, 1000, 2000, 5000, 10000, 20000)  # depths tried with them (an ANN search deeper than this is a scan)
SHORTLIST_TYPES = ("flat", "hnsw", "ivfpq")  # float shortlist indexes the cascades are measured with
BINARY_TYPES = ("flat", "hnsw", "ivf")  # binary shortlist indexes
RUN_ONLY = "torch"  # the encoder of searchers that only run plans from encoded vectors (no ONNX session to load)
MEMORY_SHARE = 0.8  # a baseline is built only if its computed size fits in this share of the available memory
BUILD_THREADS: int | None = None  # FAISS threads while an index is built (--build-threads); searches keep --threads
SEARCH_THREADS: int | None = None


@contextlib.contextmanager
def building():
    """FAISS with ``BUILD_THREADS`` threads for the block (an index build), then ``SEARCH_THREADS`` again."""
    import faiss

    if BUILD_THREADS:
        faiss.omp_set_num_threads(BUILD_THREADS)
    try:
        yield
    finally:
        if BUILD_THREADS:
            faiss.omp_set_num_threads(SEARCH_THREADS or os.cpu_count() or 1)


def truth(index: Index, vectors: np.ndarray, qids: list[str]) -> dict[str, dict[str, int]]:
    """Exhaustive full-size top 10 per query, as qrels (``Index.scan``: block by block over the memory map)."""
    _, rows = index.scan(index.sizes[-1], vectors, K)
    return {q: {d: 1 for d in index.docids.lookup(r)} for q, r in zip(qids, rows)}


def grid(searcher: Searcher, encoded: Encoded, qids: list[str], qrels, binary: bool = False) -> list:
    """Recall@10 and ms (encoding included) of every cascade the planner considers with a float
    (or, with ``binary``, a binary) first stage, and of deeper shortlists (a fixed depth is a smaller
    share of a larger corpus)."""
    index = searcher.index
    full, n = index.sizes[-1], len(index)
    plans = [p for p in Planner(index, None).candidates(K) if len(p) > 1 and not p[0].sparse and p[0].binary == binary]
    starts = [(s, DEEP_SEARCH_KEEPS if ann(index, s) else DEEP_KEEPS) for s in first_stages(index) if s.binary == binary]
    starts += [(s, DEEP_SEARCH_KEEPS) for s in deeper_stages(index, binary)]
    for start, keeps in starts:
        first = start.size
        for keep in (k for k in keeps if k < n):
            plans.append(Plan([start._replace(keep=keep), Stage(full, K)]))
            plans += [Plan([start._replace(keep=keep), Stage(mid, m), Stage(full, K)]) for mid in index.sizes
                      if first < mid < full and mid.layer >= first.layer and mid.dim >= first.dim for m in (1000, 2000)]
    (recall,) = parse_measures([f"R@{K}"])
    return measure_plans(searcher, plans, encoded, qids, qrels, recall, K)


def ann(index: Index, stage: Stage) -> bool:
    """Whether a first stage searches an HNSW or IVF index (a graph asked for 200,000 neighbours walks them all)."""
    built = (getattr(index, "binary", {}) if stage.binary else index.shortlist).get(stage.size)
    return built is not None and param_name(built) is not None


def deeper_stages(index: Index, binary: bool) -> list[Stage]:
    """First stages over the index's ANN shortlists (float, or with ``binary`` its sign-bit ones) searched
    more deeply than the planner tries (``DEEP_SEARCH``): at scale, recall near 1 needs them."""
    built = getattr(index, "binary", {}) if binary else index.shortlist
    return [Stage(size, 1, param=p, binary=binary) for size in sorted(built)
            for p in param_values(built[size], DEEP_SEARCH)]


def rss_bytes() -> int:
    """This process's resident memory: its pages in RAM, the touched pages of memory-mapped files included."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def available_bytes() -> int:
    """Memory the kernel says is available for new work (``MemAvailable``)."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def drop_cache(matrices: list[np.ndarray], page_cache: bool = True) -> None:
    """Unmap the resident pages of memory-mapped matrices from this process (so RSS counts again what
    searches touch next) and, with ``page_cache``, ask the kernel to drop the files' page cache
    (``posix_fadvise(DONTNEED)``), so the next reads go to disk: cold."""
    import mmap

    for m in matrices:
        mapped = getattr(m, "_mmap", None)
        if mapped is not None and hasattr(mmap, "MADV_DONTNEED"):
            mapped.madvise(mmap.MADV_DONTNEED)
        if not page_cache:
            continue
        fd = os.open(m.filename, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def timed(search: Callable[[slice], list], count: int, truth_rows: list[set], batch: int,
          before: Callable[[], None] | None = None) -> dict:
    """Recall@10 and mean per-query time of ``search(slice of queries) -> rows`` over the first ``count``
    queries; ``before`` runs ahead of each timed block, outside the timing."""
    found, times = [], []
    for start in range(0, count, batch):
        if before is not None:
            before()
        t = time.perf_counter()
        rows = search(slice(start, min(start + batch, count)))
        times.append((time.perf_counter() - t) * 1000 / len(rows))
        found += [set(map(int, r[:K])) for r in rows]
    ms = statistics.fmean(times)
    recall = statistics.fmean(len(f & t) / K for f, t in zip(found, truth_rows))
    return {"recall@10": recall, "ms": ms, "qps": 1000 / ms, "queries": count}


def measured(search: Callable[[slice], list], count: int, truth_rows: list[set], ram: float, note: str,
             before: Callable[[], None] | None = None) -> dict:
    return {"single": timed(search, count, truth_rows, 1, before),
            f"batch {BATCH}": timed(search, count, truth_rows, BATCH, before),
            "ram_bytes_per_doc": ram, "note": note}


def fastest(rows: list[dict]) -> dict:
    """The fastest setting reaching the target recall, else the one with the best recall."""
    ok = [r for r in rows if r["single"]["recall@10"] >= TARGET]
    return min(ok, key=lambda r: r["single"]["ms"]) if ok else max(rows, key=lambda r: r["single"]["recall@10"])


def _trim() -> None:
    """Return freed heap memory to the system (glibc ``malloc_trim``); nothing elsewhere."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class Resident:
    """RSS growth across a block (building or loading a system and searching it): what the process holds
    after it, freed memory handed back to the system on both sides."""

    def __enter__(self) -> "Resident":
        gc.collect()
        _trim()  # freed heap goes back to the system first, so the next system's growth is not hidden by reuse
        self.start, self.grown = rss_bytes(), 0
        return self

    def __exit__(self, *exc) -> None:
        gc.collect()
        _trim()  # what the searches freed (their temporaries) does not count; what the system holds does
        self.grown = rss_bytes() - self.start


def with_end_to_end(row: dict, encode_ms: float, build_s: float, rss: int, n: int) -> dict:
    """A measured system with its build time, its RSS growth per document and its end-to-end ms (encoding added)."""
    row.update(build_s=build_s, rss_bytes_per_doc=rss / n, encode_ms=encode_ms,
               end_to_end_ms=row["single"]["ms"] + encode_ms)
    return row


def faiss_system(index, queries: np.ndarray, truth_rows: list[set], n: int, note: str, params=None) -> dict:
    """A FAISS index over full-size vectors, measured at one setting."""
    return measured(lambda sl: index.search(queries[sl], K, params=params)[1], len(truth_rows), truth_rows,
                    baselines.ram_bytes(index) / n, note)


def variant(index: Index, kind: str, binary_sizes: list) -> tuple[Index, float]:
    """``index`` with other shortlist indexes, built in memory: its float shortlist sizes under FAISS
    ``kind`` (``hnsw``, ``ivfpq``), or with ``kind`` ``binary-flat|hnsw|ivf`` the sign bits of
    ``binary_sizes``. The vectors stay shared. Returns it and its build seconds."""
    other = copy.copy(index)
    t = time.perf_counter()
    with building():
        if kind.startswith("binary-"):
            other.binary = {s: binary_index(index.vectors[s], kind[len("binary-"):]) for s in binary_sizes}
        elif kind != "flat":
            other.shortlist = {}
            for s in index.manifest.shortlist:
                built = new_index(kind, s.dim, len(index))
                fill_index(built, index.vectors[s])
                other.shortlist[s] = built
    return other, time.perf_counter() - t


def runner(searcher: Searcher, index: Index, **kw) -> Searcher:
    """A searcher over ``index`` that only runs plans from encoded vectors, with ``searcher``'s model and
    thread count (a Searcher without ``threads`` would take every core)."""
    return Searcher(index, model=searcher.model, encoder=RUN_ONLY, threads=getattr(searcher.encoder, "threads", None),
                    **kw)


def shortlist_bytes(index: Index, plan: Plan) -> int:
    """Bytes of the FAISS index a plan's first stage searches (serialised size)."""
    import faiss

    first = plan[0]
    if first.binary:
        return int(faiss.serialize_index_binary(index.binary[first.size]).nbytes)
    return baselines.ram_bytes(index.shortlist[first.size]) if first.size in index.shortlist else 0


def cascade_search(searcher: Searcher, plan: Plan, vectors: dict) -> Callable[[slice], list]:
    return lambda sl: [[int(d[1:]) for d in r.docids]
                       for r in searcher.run(plan, {s: vectors[s][sl] for s in set(plan.sizes)}, K)]


def rerank_bytes(plan: Plan) -> float:
    """Bytes per document of the float16 vectors a plan rescores (memory-mapped: on disk, paged in as read)."""
    return sum(s.dim * 2 for s in set(plan.sizes[1:]))


def written_type(shortlist_types: list[str]) -> str:
    """The FAISS type the synthetic index's float shortlists are written with: flat when flat shortlists
    are measured (or none are), else the first type measured (so no flat index is built only to be
    replaced: over 10M full-size vectors that is 15 GB)."""
    return "flat" if "flat" in shortlist_types or not shortlist_types else shortlist_types[0]


def cascades(searcher: Searcher, encoded: Encoded, qids: list[str], qrels, truth_rows: list[set],
             kinds: list[str], binary_sizes: list, written_build_s: float,
             written: str = "flat") -> tuple[dict, dict, dict[str, Index], Index]:
    """For each kind of shortlist, the cheapest cascade of its grid reaching the target (else the best):
    timed from query vectors, with its build time and RSS growth. Returns (systems, grids, each kind's
    index variant, the variant of the fastest of them: the one reaching the target, else the one with
    the best recall)."""
    index, n = searcher.index, len(searcher.index)
    out, grids, variants, best = {}, {}, {}, None
    for kind in kinds:
        print(f"   cascades with {kind} shortlists", flush=True)
        drop_cache(list(index.vectors.values()), page_cache=False)  # RSS growth counts the pages its searches map
        with Resident() as resident:
            other, build_s = (index, written_build_s) if kind == written else variant(index, kind, binary_sizes)
            kind_searcher = searcher if kind == written else runner(searcher, other)
            points = grid(kind_searcher, encoded, qids, qrels, binary=kind.startswith("binary-"))
            ok = [p for p in points if p.effectiveness >= TARGET]
            chosen = min(ok, key=lambda p: p.ms) if ok else max(points, key=lambda p: p.effectiveness)
            plan = chosen.plan
            row = measured(cascade_search(kind_searcher, plan, encoded.vectors), len(truth_rows), truth_rows,
                           (shortlist_bytes(other, plan) + 8) / n + rerank_bytes(plan),
                           "shortlist index + docid offsets in RAM; rerank vectors memory-mapped (their bytes "
                           "counted), only candidates read")
        full_scan = kind == "binary-flat" and plan[0].size == index.sizes[-1]
        what = "binary full-size scan + rescore" if full_scan else f"cascade, {kind} shortlist"
        row = with_end_to_end(row, float(np.mean(encoded.encode_ms[plan.layer])), build_s, resident.grown, n)
        out[f"{what}: {plan}"] = {**row, "plan": str(plan), "kind": kind}
        grids[kind] = [p.to_dict() for p in points]
        variants[kind] = other
        if best is None or _better(row, best[0]):
            best = (row, other)
        del other, kind_searcher
    return out, grids, variants, best[1]


def _better(a: dict, b: dict) -> bool:
    """Whether system ``a`` beats ``b``: reaching the target and faster, or closer to it."""
    ra, rb = a["single"]["recall@10"] >= TARGET, b["single"]["recall@10"] >= TARGET
    if ra != rb:
        return ra
    return a["single"]["ms"] < b["single"]["ms"] if ra else a["single"]["recall@10"] > b["single"]["recall@10"]


def tier_names(index: Index, plan: Plan, kinds: tuple[str, ...]) -> list[str]:
    """The tiers of ``kinds`` that apply to ``plan``: a RAM tier holds the sizes it rescores (a shortlist size
    reranked exactly too); a residual tier, the first stage's size when it is an IVF-PQ shortlist that the
    next stage reranks."""
    held = ",".join(map(str, sorted(set(plan.sizes[1:]))))
    first = plan[0]
    residual = plan.reranks_its_shortlist and ivfpq_shortlist(index, first.size) is not None
    return [k if k == "mmap" else f"residual:{first.size}" if k == "residual" else f"{k}:{held}"
            for k in kinds if k == "mmap" or (residual if k == "residual" else held)]


def tiers(searcher: Searcher, index: Index, plan: Plan, encoded: Encoded, truth_rows: list[set],
          kinds: tuple[str, ...] = RERANK_TIERS, with_cold: bool = True) -> dict:
    """One cascade with its rerank tier memory-mapped (warm and, ``with_cold``, cold), in RAM as float16
    and as int8 (a RAM tier holds the rerank sizes the plan rescores: ``int8:6x384``), and as residual codes
    after an IVF-PQ shortlist (``tier_names``). The shortlist index
    exists already: a tier's RSS growth is the tier's own (its arrays, or the pages of the memory map its
    searches touch)."""
    n, out = len(index), {}
    files = [index.vectors[s] for s in set(plan.sizes)]
    encode_ms = float(np.mean(encoded.encode_ms[plan.layer]))
    for tier in tier_names(index, plan, kinds):
        for cold in ((False, True) if tier == "mmap" and with_cold else (False,)):
            drop_cache(files, page_cache=cold)  # warm: only unmapped, so RSS growth counts the pages searches touch
            with Resident() as resident:
                t = time.perf_counter()
                tiered = runner(searcher, index, rerank_tier=tier)
                build_s = time.perf_counter() - t
                # Loading read the memory-mapped files through: unmapped again (clean pages), so what counts is
                # what the tier holds and what its searches touch.
                drop_cache(list(index.vectors.values()), page_cache=False)
                tier_bytes = tiered.tier.nbytes / n if tier != "mmap" else rerank_bytes(plan)
                row = measured(cascade_search(tiered, plan, encoded.vectors), len(truth_rows), truth_rows,
                               (shortlist_bytes(index, plan) + 8) / n + tier_bytes,
                               f"rerank tier {tier}" + (": page cache dropped before each timed block" if cold else ""),
                               (lambda: drop_cache(files)) if cold else None)
            name = f"rerank tier {tier}{' cold' if cold else (' warm' if tier == 'mmap' else '')}: {plan}"
            out[name] = {**with_end_to_end(row, encode_ms, build_s, resident.grown, n), "plan": str(plan),
                         "tier": tier + (" warm" if tier == "mmap" and not cold else "") + (" cold" if cold else "")}
            del tiered
    return out


def too_large(name: str, need: int, note: str) -> dict | None:
    """A skipped system's entry when ``need`` bytes do not fit in the memory available, else None."""
    have = available_bytes()
    if need <= MEMORY_SHARE * have:
        return None
    return {"skipped": f"needs about {need / 1e9:.1f} GB ({note}); {have / 1e9:.1f} GB available", "name": name}


GROWTH = 2  # a FAISS flat storage filled by add() peaks near twice its size while it reallocates


def flat_float32(matrix: np.ndarray, block: int = 65536):
    """FAISS ``IndexFlatIP`` over a (memory-mapped) float16 matrix, its float32 storage allocated once and
    filled block by block (adding blocks would grow it by reallocation, peaking near twice its size)."""
    import faiss

    n, dim = matrix.shape
    index = faiss.IndexFlatIP(dim)
    index.codes.resize(n * dim * 4)
    if n:
        stored = faiss.rev_swig_ptr(index.codes.data(), n * dim * 4).view(np.float32).reshape(n, dim)
        for start in range(0, n, block):
            stored[start : start + block] = matrix[start : start + block]
    index.ntotal = n
    return index


def baseline_systems(index: Index, vectors: dict, truth_rows: list[set], scan_queries: int,
                     graph_baselines: list[str], encode_ms: float) -> dict:
    """Exhaustive full size (FAISS flat float32, the float16 memory-mapped scan), HNSW32 over an efSearch
    sweep and IVF-PQ + refine, each with its build time and RSS growth (and every sweep point)."""
    n, count = len(index), len(truth_rows)
    full = index.sizes[-1]
    matrix = index.vectors[full]
    out = {}
    name = "exhaustive, FAISS flat float32"
    skipped = too_large(name, n * full.dim * 4, "float32 full-size vectors")
    if skipped:
        out[name] = skipped
    else:
        with Resident() as resident:
            t = time.perf_counter()
            with building():
                flat = flat_float32(matrix)
            build_s = time.perf_counter() - t
            row = faiss_system(flat, vectors[full], truth_rows, n, "float32 vectors in RAM")
        out[name] = with_end_to_end(row, encode_ms, build_s, resident.grown, n)
        del flat
    drop_cache([matrix], page_cache=False)  # RSS growth counts the pages the scan maps in again
    with Resident() as resident:
        row = measured(lambda sl: index.scan(full, vectors[full][sl], K)[1], min(count, scan_queries), truth_rows,
                       full.dim * 2, "Index.scan: every stored full-size vector read per query (from the page cache)")
    out["exhaustive, float16 memory-mapped scan"] = with_end_to_end(row, encode_ms, 0.0, resident.grown, n)
    grown = "twice while FAISS adds them, as its storage grows by reallocation"
    needs = {"hnsw": (n * (GROWTH * full.dim * 4 + HNSW_M * 2 * 4 * 1.1), f"float32 vectors ({grown}) and graph links"),
             "ivfpq_refine": (n * (GROWTH * full.dim * 4 + full.dim / 4 + 8),
                              f"float32 vectors for the refine step ({grown}) and codes")}
    for kind in graph_baselines:
        skipped = too_large(kind, int(needs[kind][0]), needs[kind][1])
        if skipped:
            out[kind] = skipped
            continue
        build = getattr(baselines, kind)
        with Resident() as resident:
            t = time.perf_counter()
            with building():
                built = build(matrix)
            build_s = time.perf_counter() - t
            rows = [{"name": name, **faiss_system(built, vectors[full], truth_rows, n, f"built in {build_s:.0f} s",
                                                  params)}
                    for name, params in tqdm(baselines.sweep(built), desc=kind, leave=False)]
        rows = [with_end_to_end(r, encode_ms, build_s, resident.grown, n) for r in rows]
        best = fastest(rows)
        out[best["name"]] = {**best, "sweep": rows}
        del built
    return out


HNSW_LATENCY = 1.5  # the cascade may take this many times HNSW32's latency ...
HNSW_BYTES = 1 / 3  # ... holding at most this share of its resident bytes per document
REFINE = 50  # with the int8 tier, the candidates rescored exactly at the end


def against_hnsw(searcher: Searcher, variants: dict[str, Index], grids: dict, encoded: Encoded,
                 truth_rows: list[set], systems: dict) -> dict | None:
    """HNSW32 over full-size vectors at its best recall (over the efSearch sweep) against, for each kind of
    shortlist, the fastest cascade of its grid at that recall or better, timed with its rerank tier
    memory-mapped (warm), with the sizes it rescores in RAM as int8 codes, as residual codes after an IVF-PQ
    shortlist, and with int8 codes refined (the
    best ``REFINE`` rescored again from the memory map: ``...,6x384:50,6x384:10``). A cascade's resident bytes per document are its
    shortlist index's (serialised size) plus the tier's RSS growth (for the memory map: the pages its
    searches touched). Met when a cascade at HNSW32's recall or better is within ``HNSW_LATENCY`` of its
    latency and holds at most ``HNSW_BYTES`` of its RSS per document. None without an HNSW32 baseline."""
    hnsw = next((s for name, s in systems.items() if name.startswith("HNSW32") and "sweep" in s), None)
    if hnsw is None:
        return None
    point = max(hnsw["sweep"], key=lambda r: (r["single"]["recall@10"], -r["single"]["ms"]))
    recall, n = point["single"]["recall@10"], len(searcher.index)
    reference = {"system": point["name"], "recall@10": recall, "ms": point["single"]["ms"],
                 "rss_bytes_per_doc": point["rss_bytes_per_doc"], "ram_bytes_per_doc": point["ram_bytes_per_doc"]}
    rows = []
    for kind, points in grids.items():
        ok = [p for p in points if p["effectiveness"] >= recall]
        if not ok:
            rows.append({"kind": kind, "reached": False,
                         "best_recall@10": max(p["effectiveness"] for p in points)})
            continue
        plan = Plan.parse(min(ok, key=lambda p: p["ms"])["plan"])
        print(f"   against HNSW32: {kind} {plan}", flush=True)
        shortlist = shortlist_bytes(variants[kind], plan) / n
        timed = tiers(searcher, variants[kind], plan, encoded, truth_rows, ("mmap", "int8", "residual"), False)
        last = plan[-1]
        if len(plan) > 1 and plan[-2].keep > REFINE:
            # int8 codes rescore, then the best REFINE exactly from the memory map (a repeated size refines)
            refined = Plan([*plan[:-1], last._replace(keep=REFINE), last])
            timed.update(tiers(searcher, variants[kind], refined, encoded, truth_rows, ("int8",), False))
        for name, row in timed.items():
            resident = shortlist + row["rss_bytes_per_doc"]
            one = row["single"]
            rows.append({"kind": kind, "reached": True, "plan": row["plan"], "tier": row["tier"],
                         "recall@10": one["recall@10"], "ms": one["ms"],
                         "ram_bytes_per_doc": row["ram_bytes_per_doc"], "resident_bytes_per_doc": resident,
                         "latency_ratio": one["ms"] / reference["ms"],
                         "bytes_ratio": resident / reference["rss_bytes_per_doc"],
                         "met": (one["recall@10"] >= recall and one["ms"] <= HNSW_LATENCY * reference["ms"]
                                 and resident <= HNSW_BYTES * reference["rss_bytes_per_doc"])})
    return {"hnsw32": reference, "latency_bound": HNSW_LATENCY, "bytes_bound": HNSW_BYTES, "cascades": rows,
            "met": any(r.get("met") for r in rows)}


def against_table(found: dict) -> str:
    ref = found["hnsw32"]
    lines = [f"Against {ref['system']} (recall@10 {ref['recall@10']:.3f} at {ref['ms']:.2f} ms, "
             f"{ref['rss_bytes_per_doc']:.0f} RSS bytes/doc): target within {found['latency_bound']}x its latency "
             f"at {found['bytes_bound']:.2f} of its bytes, at its recall or better: "
             f"{'met' if found['met'] else 'not met'}.", "",
             "| shortlist | plan | rerank tier | recall@10 | ms | x HNSW32 ms | resident bytes/doc | x HNSW32 bytes | met |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in found["cascades"]:
        if not r["reached"]:
            lines.append(f"| {r['kind']} | no plan of its grid reaches it (best {r['best_recall@10']:.3f}) | | | | | | | no |")
            continue
        lines.append(f"| {r['kind']} | `{r['plan']}` | {r['tier']} | {r['recall@10']:.3f} | {r['ms']:.2f} | "
                     f"{r['latency_ratio']:.2f} | {r['resident_bytes_per_doc']:.0f} | {r['bytes_ratio']:.2f} | "
                     f"{'yes' if r['met'] else 'no'} |")
    return "\n".join(lines)


def realism(real: Index, generator: Generator, model, topics: dict, scratch: Path, threads: int | None) -> dict:
    """Cascade recall@10 over the real corpus against a synthetic one of the same size, same queries."""
    synthetic = write_index(generator, real, scratch / "check", len(real), real.manifest.shortlist, progress=False)
    out = {}
    for name, folder in (("real", real.path), ("synthetic", synthetic)):
        searcher = Searcher(folder, model=model, threads=threads)
        qids = list(topics)
        encoded = Encoded(searcher, [topics[q] for q in qids], progress=False)
        qrels = truth(searcher.index, encoded.vectors[searcher.index.sizes[-1]], qids)
        out[name] = {str(p.plan): p.effectiveness for p in grid(searcher, encoded, qids, qrels)}
    diffs = [abs(out["real"][p] - out["synthetic"][p]) for p in out["real"]]
    return {"documents": len(real), "recall@10": out, "mean |real - synthetic|": statistics.fmean(diffs),
            "max |real - synthetic|": max(diffs)}


def profile(searcher: Searcher, plan: Plan, encoded: Encoded) -> dict[str, float]:
    """Where one query's time goes in ``plan``: encoding (its deepest layer) and each stage, mean ms."""
    timings = [searcher.run(plan, encoded.query(i, plan), K)[0].timings for i in range(len(encoded))]
    layer = max(s.layer for s in plan.sizes)
    return {"encode": float(np.mean(encoded.encode_ms[layer])),
            **{stage: statistics.fmean(t[stage] for t in timings) for stage in timings[0]}}


def run_size(n: int, generator: Generator, real: Index, model, topics: dict, shortlist, args) -> dict:
    folder = args.scratch / f"synthetic-{n}"
    shutil.rmtree(folder, ignore_errors=True)
    with Resident() as written:
        t = time.perf_counter()
        built, written_kind = {}, written_type(args.shortlist_types)
        with building():  # its shortlist indexes are built with --build-threads too
            write_index(generator, real, folder, n, shortlist, sizes=parse_sizes(args.sizes) if args.sizes else None,
                        index_type=written_kind, timings=built)
        written_s = time.perf_counter() - t
        searcher = Searcher(folder, model=model, threads=args.threads)
    qids = list(topics)
    encoded = Encoded(searcher, [topics[q] for q in qids])
    index = searcher.index
    full = index.sizes[-1]
    qrels = truth(index, encoded.vectors[full], qids)
    truth_rows = [{int(d[1:]) for d in qrels[q]} for q in qids]
    binary_sizes = parse_sizes(args.binary) if args.binary else [full]
    kinds = [*args.shortlist_types, *(f"binary-{k}" for k in args.binary_types)]
    systems, grids, variants, best_index = cascades(searcher, encoded, qids, qrels, truth_rows, kinds, binary_sizes,
                                                    built["shortlist_s"], written_kind)
    best = next(s for s in systems.values() if not any(_better(o, s) for o in systems.values()))
    plan = Plan.parse(best["plan"])
    profiled = profile(runner(searcher, best_index), plan, encoded)
    systems.update(tiers(searcher, best_index, plan, encoded, truth_rows))
    del best_index
    full_encode_ms = float(np.mean(encoded.encode_ms[full.layer]))
    systems.update(baseline_systems(index, encoded.vectors, truth_rows, args.scan_queries, args.baselines,
                                    full_encode_ms))
    against = against_hnsw(searcher, variants, grids, encoded, truth_rows, systems)
    del variants
    result = {
        "documents": n, "written_s": written_s, "written_rss_bytes_per_doc": written.grown / n,
        "disk_bytes_per_doc": sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / n,
        "encode_ms": {str(layer): statistics.fmean(ms) for layer, ms in encoded.encode_ms.items()},
        "cascade_grids": grids, "chosen": str(plan),
        "chosen_profile_ms": profiled,
        "systems": systems,
        "against_hnsw32": against,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if not args.keep:
        shutil.rmtree(folder)
    return result


def plot(result: dict, path: Path) -> Path | None:
    """Latency (one query at a time, from query vectors) against recall@10 for every system and sweep
    point, each labelled with its bytes per document; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot", flush=True)
        return None
    sizes = result["sizes"]
    fig, axes = plt.subplots(1, len(sizes), figsize=(7 * len(sizes), 5.5), squeeze=False)
    for ax, size in zip(axes[0], sizes):
        for name, s in size["systems"].items():
            if "skipped" in s:
                continue
            rows = sorted(s.get("sweep", [s]), key=lambda r: r["single"]["recall@10"])  # a sweep as one line
            xs, ys = [r["single"]["recall@10"] for r in rows], [r["single"]["ms"] for r in rows]
            label = f"{name} (sweep)" if len(rows) > 1 else name
            line = ax.plot(xs, ys, "o-" if len(rows) > 1 else "o", label=label[:70], markersize=4)[0]
            for r, x, y in zip(rows, xs, ys):
                ax.annotate(f"{r['ram_bytes_per_doc']:.0f} B", (x, y), fontsize=6, color=line.get_color(),
                            xytext=(3, 3), textcoords="offset points")
        ax.set_yscale("log")
        ax.set_xlabel("recall@10 against exhaustive full size")
        ax.set_ylabel("ms per query (one at a time, from query vectors)")
        ax.set_title(f"{size['documents']:,} documents (labels: bytes/doc)")
        ax.axvline(TARGET, color="grey", linestyle=":", linewidth=1)
        ax.legend(fontsize=6, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def table(result: dict) -> str:
    lines = ["| documents | system | recall@10 | ms/query (1 at a time) | ms end to end | queries/s (1 at a time) | "
             f"queries/s (batch {BATCH}) | bytes/doc computed | RSS growth bytes/doc | build s | note |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for size in result["sizes"]:
        for name, s in size["systems"].items():
            if "skipped" in s:
                lines.append(f"| {size['documents']:,} | {name} | | | | | | | | | skipped: {s['skipped']} |")
                continue
            one, many = s["single"], s[f"batch {BATCH}"]
            lines.append(f"| {size['documents']:,} | {name} | {one['recall@10']:.4f} | {one['ms']:.2f} | "
                         f"{s['end_to_end_ms']:.2f} | {one['qps']:.1f} | {many['qps']:.1f} | "
                         f"{s['ram_bytes_per_doc']:.0f} | {s['rss_bytes_per_doc']:.0f} | {s['build_s']:.1f} | {s['note']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=runtime.description(__doc__))
    p.add_argument("--fit-index", type=Path, required=True, help="the real index the generator is fitted to")
    p.add_argument("--topics", required=True, help="real queries (their text is encoded by the index's model)")
    p.add_argument("--queries", type=int, default=200, help="how many of the topics to use (default: %(default)s)")
    p.add_argument("--scan-queries", type=int, default=20, help="queries timed for the slow float16 scan (default: %(default)s)")
    p.add_argument("--docs", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--clusters", type=int, nargs="+", default=[64, 256, 1024],
                   help="generator mixture sizes to check; the one whose recall agrees best is used (default: %(default)s)")
    p.add_argument("--shortlist", default="6x32",
                   help="sizes given a FAISS index in the synthetic indexes, or none (default: %(default)s)")
    p.add_argument("--sizes", help="sizes the synthetic indexes store besides the shortlist sizes, e.g. 6x384 "
                                   "(default: every size of --fit-index)")
    p.add_argument("--shortlist-types", nargs="*", default=list(SHORTLIST_TYPES), choices=SHORTLIST_TYPES,
                   help="FAISS index types of the float shortlists the cascades are measured with (default: all)")
    p.add_argument("--binary", help="sizes whose sign bits get binary shortlists (default: the full size)")
    p.add_argument("--binary-types", nargs="*", default=list(BINARY_TYPES), choices=BINARY_TYPES,
                   help="binary shortlist index types measured (default: all; flat is the full-size binary scan)")
    p.add_argument("--baselines", nargs="*", default=["hnsw", "ivfpq_refine"], choices=["hnsw", "ivfpq_refine"],
                   help="FAISS baselines to build over full-size vectors (default: both; building HNSW over 1M "
                        "vectors takes about half an hour on one thread)")
    p.add_argument("--threads", type=int, help="torch and FAISS threads (default: all cores)")
    p.add_argument("--build-threads", type=int,
                   help="FAISS threads while indexes are built (default: --threads); searches are timed with --threads")
    p.add_argument("--scratch", type=Path, default=ROOT / "experiments" / "indexes" / "scale", help="where synthetic indexes go")
    p.add_argument("--keep", action="store_true", help="keep the synthetic indexes")
    p.add_argument("--tag", default="default")
    p.add_argument("--out", type=Path, default=HERE / "results" / "scale")
    args = p.parse_args(argv)
    if args.shortlist == "none" and args.shortlist_types:
        p.error("--shortlist none stores no float shortlist: give --shortlist-types with no types")
    if not args.shortlist_types and not args.binary_types:
        p.error("measure at least one kind of shortlist: --shortlist-types or --binary-types")
    runtime.setup(args.threads)
    global BUILD_THREADS, SEARCH_THREADS
    BUILD_THREADS, SEARCH_THREADS = args.build_threads, args.threads
    args.out.mkdir(parents=True, exist_ok=True)
    args.scratch.mkdir(parents=True, exist_ok=True)
    real = Index(args.fit_index)
    model = Searcher(real, threads=args.threads).model
    topics = dict(list(read_topics(args.topics).items())[: args.queries])
    result = {
        **runtime.record("experiments.scale", args.threads, argv),
        "model": real.manifest.model_name, "fit_index": str(args.fit_index), "fit_documents": len(real),
        "queries": len(topics), "target_recall@10": TARGET,
    }
    checks = {}
    for clusters in args.clusters:
        print(f"checking a {clusters}-component generator on the real corpus", flush=True)
        shutil.rmtree(args.scratch / "check", ignore_errors=True)
        generator = Generator.fit(real, clusters=clusters)
        checks[len(generator.weights)] = (generator, realism(real, generator, model, topics, args.scratch, args.threads))
        shutil.rmtree(args.scratch / "check")
    best = min(checks, key=lambda c: checks[c][1]["mean |real - synthetic|"])
    generator = checks[best][0]
    result["realism"] = {"chosen_components": best, **checks[best][1],
                         "by_components": {c: check for c, (_, check) in checks.items()}}
    result["sizes"] = []
    for n in args.docs:
        print(f"== {n:,} documents", flush=True)
        shortlist = [] if args.shortlist == "none" else parse_sizes(args.shortlist)
        result["sizes"].append(run_size(n, generator, real, model, topics, shortlist, args))
        result["load_average_after"] = runtime.machine(args.threads)["load_average"]
        (args.out / f"{args.tag}.json").write_text(json.dumps(result, indent=2) + "\n")
        plotted = plot(result, args.out / f"{args.tag}.png")
        text = table(result)
        print(text, flush=True)
        (args.out / f"{args.tag}.md").write_text("\n".join([
            f"# Scale: {args.tag}", "", f"`{result['command']}`", "", f"Machine: {result['machine']}", "",
            f"Generator ({result['realism']['chosen_components']} components) check on {len(real):,} real documents: "
            f"mean |real - synthetic| cascade recall@10 "
            f"{result['realism']['mean |real - synthetic|']:.4f} (max {result['realism']['max |real - synthetic|']:.4f}) "
            f"over {len(result['realism']['recall@10']['real'])} cascades.", "", text, "",
            *([f"![latency against recall]({plotted.name})", ""] if plotted else []),
            *(f"Where the time of {size['chosen']} goes at {size['documents']:,} documents (ms/query): "
              f"{json.dumps({k: round(v, 2) for k, v in size['chosen_profile_ms'].items()})}; "
              f"encoding a query: {json.dumps(size['encode_ms'])} ms." for size in result["sizes"]), "",
            *(f"{size['documents']:,} documents. {against_table(size['against_hnsw32'])}\n"
              for size in result["sizes"] if size.get("against_hnsw32"))]))


if __name__ == "__main__":
    main()
