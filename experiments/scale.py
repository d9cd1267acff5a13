"""Scale benchmark: search cost and memory at 100k-10M documents, on synthetic vectors (``experiments.synthetic``).

Real text cannot be encoded at that scale here, so document vectors are drawn from a generator
fitted to a real index; queries are real topics encoded by the real model. Quality is recall@10
against exhaustive full-size search over the same documents (its own top 10 are the qrels).

1. Check the generator on the real corpus: the recall of every cascade over the real index
   against the same cascades over a synthetic index of the same size, for several mixture
   sizes; the one that agrees best generates the large corpora.
2. For each corpus size: the cheapest cascade (measured over the planner's grid) that keeps
   99 % recall@10, against exhaustive full-size search (FAISS flat float32 in RAM, and the
   index's own float16 memory-mapped scan), HNSW over full-size vectors and IVF-PQ+refine,
   each at its fastest setting reaching 99 % (or its best recall where none does). Search time
   is from query vectors, one query at a time and in batches of 32; encoding a query, the same
   for every system at one layer, is reported beside it. Memory is what each holds in RAM.

    python -m experiments.scale --fit-index experiments/indexes/dl19-pool-minilm-l6-base \\
        --topics ../shared/data/msmarco-passage/dev-small/queries.jsonl --docs 100000 1000000 --threads 1
"""
from __future__ import annotations

import argparse
import json
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
from retrieval import Plan, Searcher, Stage
from retrieval.calibrate import Encoded, measure_plans
from retrieval.evaluate import parse_measures
from retrieval.planner import Planner
from starbucks.sizes import parse_sizes
from starbucks.topics import read_topics

HERE = Path(__file__).resolve().parent
K = 10
TARGET = 0.99
BATCH = 32
DEEP_KEEPS = (5000, 10000, 20000, 50000, 100000, 200000)


def truth(index: Index, vectors: np.ndarray, qids: list[str]) -> dict[str, dict[str, int]]:
    """Exhaustive full-size top 10 per query, as qrels."""
    _, rows = index.scan(index.sizes[-1], vectors, K)
    return {q: {d: 1 for d in index.docids.lookup(r)} for q, r in zip(qids, rows)}


def grid(searcher: Searcher, encoded: Encoded, qids: list[str], qrels) -> list:
    """Recall@10 and ms (encoding included) of every cascade the planner considers, and of deeper
    shortlists (a fixed depth is a smaller share of a larger corpus)."""
    index = searcher.index
    full, n = index.sizes[-1], len(index)
    plans = [p for p in Planner(index, None).candidates(K) if len(p) > 1]
    for first in index.manifest.shortlist:
        for keep in (k for k in DEEP_KEEPS if k < n):
            plans.append(Plan([Stage(first, keep), Stage(full, K)]))
            plans += [Plan([Stage(first, keep), Stage(mid, m), Stage(full, K)]) for mid in index.sizes
                      if first < mid < full and mid.layer >= first.layer and mid.dim >= first.dim for m in (1000, 2000)]
    (recall,) = parse_measures([f"R@{K}"])
    return measure_plans(searcher, plans, encoded, qids, qrels, recall, K)


def timed(search: Callable[[slice], list], count: int, truth_rows: list[set], batch: int) -> dict:
    """Recall@10 and mean per-query time of ``search(slice of queries) -> rows`` over the first ``count`` queries."""
    found, times = [], []
    for start in range(0, count, batch):
        t = time.perf_counter()
        rows = search(slice(start, min(start + batch, count)))
        times.append((time.perf_counter() - t) * 1000 / len(rows))
        found += [set(map(int, r[:K])) for r in rows]
    ms = statistics.fmean(times)
    recall = statistics.fmean(len(f & t) / K for f, t in zip(found, truth_rows))
    return {"recall@10": recall, "ms": ms, "qps": 1000 / ms, "queries": count}


def measured(search: Callable[[slice], list], count: int, truth_rows: list[set], ram: float, note: str) -> dict:
    return {"single": timed(search, count, truth_rows, 1), f"batch {BATCH}": timed(search, count, truth_rows, BATCH),
            "ram_bytes_per_doc": ram, "note": note}


def fastest(rows: list[dict]) -> dict:
    """The fastest setting reaching the target recall, else the one with the best recall."""
    ok = [r for r in rows if r["single"]["recall@10"] >= TARGET]
    return min(ok, key=lambda r: r["single"]["ms"]) if ok else max(rows, key=lambda r: r["single"]["recall@10"])


def faiss_system(index, queries: np.ndarray, truth_rows: list[set], n: int, note: str, params=None) -> dict:
    """A FAISS index over full-size vectors, measured at one setting."""
    return measured(lambda sl: index.search(queries[sl], K, params=params)[1], len(truth_rows), truth_rows,
                    baselines.ram_bytes(index) / n, note)


def systems(searcher: Searcher, plan: Plan, vectors: dict, truth_rows: list[set], scan_queries: int,
            graph_baselines: list[str]) -> dict:
    """Every system timed from query vectors, one at a time and in batches, with the bytes per document it holds in RAM."""
    import faiss

    index, n, count = searcher.index, len(searcher.index), len(truth_rows)
    full = index.sizes[-1]
    full_vectors = np.asarray(index.vectors[full], dtype=np.float32)
    short_bytes = sum(baselines.ram_bytes(index.shortlist[s]) for s in set(plan.sizes) if s in index.shortlist)
    out = {f"cascade {plan}": measured(
        lambda sl: [[int(d[1:]) for d in r.docids] for r in searcher.run(plan, {s: vectors[s][sl] for s in set(plan.sizes)}, K)],
        count, truth_rows, short_bytes / n + 8,
        "shortlist FAISS index + docid offsets in RAM; rerank vectors memory-mapped, only candidates read")}
    flat = faiss.IndexFlatIP(full.dim)
    flat.add(full_vectors)
    out["exhaustive, FAISS flat float32"] = faiss_system(flat, vectors[full], truth_rows, n, "float32 vectors in RAM")
    out["exhaustive, float16 memory-mapped scan"] = measured(
        lambda sl: index.scan(full, vectors[full][sl], K)[1], min(count, scan_queries), truth_rows, full.dim * 2,
        "Index.scan: every stored full-size vector read per query (from the page cache)")
    for build in (getattr(baselines, name) for name in graph_baselines):
        t = time.perf_counter()
        built = build(full_vectors)
        note = f"built in {time.perf_counter() - t:.0f} s"
        rows = [{"name": name, **faiss_system(built, vectors[full], truth_rows, n, note, params)}
                for name, params in tqdm(baselines.sweep(built), desc=build.__name__, leave=False)]
        best = fastest(rows)
        out[best["name"]] = {**best, "sweep": rows}
    return out


def realism(real: Index, generator: Generator, model, topics: dict, scratch: Path) -> dict:
    """Cascade recall@10 over the real corpus against a synthetic one of the same size, same queries."""
    synthetic = write_index(generator, real, scratch / "check", len(real), real.manifest.shortlist, progress=False)
    out = {}
    for name, folder in (("real", real.path), ("synthetic", synthetic)):
        searcher = Searcher(folder, model=model)
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
    t = time.perf_counter()
    write_index(generator, real, folder, n, shortlist)
    written_s = time.perf_counter() - t
    searcher = Searcher(folder, model=model)
    qids = list(topics)
    encoded = Encoded(searcher, [topics[q] for q in qids])
    full = searcher.index.sizes[-1]
    qrels = truth(searcher.index, encoded.vectors[full], qids)
    points = grid(searcher, encoded, qids, qrels)
    ok = [p for p in points if p.effectiveness >= TARGET]
    chosen = min(ok, key=lambda p: p.ms) if ok else max(points, key=lambda p: p.effectiveness)
    truth_rows = [{int(d[1:]) for d in qrels[q]} for q in qids]
    result = {
        "documents": n, "written_s": written_s, "disk_bytes_per_doc": sum(
            f.stat().st_size for f in folder.rglob("*") if f.is_file()) / n,
        "encode_ms": {str(layer): statistics.fmean(ms) for layer, ms in encoded.encode_ms.items()},
        "cascade_grid": [p.to_dict() for p in points], "chosen": str(chosen.plan),
        "chosen_profile_ms": profile(searcher, chosen.plan, encoded),
        "systems": systems(searcher, chosen.plan, encoded.vectors, truth_rows, args.scan_queries, args.baselines),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if not args.keep:
        shutil.rmtree(folder)
    return result


def table(result: dict) -> str:
    lines = ["| documents | system | recall@10 | ms/query (1 at a time) | queries/s (1 at a time) | "
             f"queries/s (batch {BATCH}) | RAM bytes/doc | note |", "|---|---|---|---|---|---|---|---|"]
    for size in result["sizes"]:
        for name, s in size["systems"].items():
            one, many = s["single"], s[f"batch {BATCH}"]
            lines.append(f"| {size['documents']:,} | {name} | {one['recall@10']:.4f} | {one['ms']:.2f} | {one['qps']:.1f} | "
                         f"{many['qps']:.1f} | {s['ram_bytes_per_doc']:.0f} | {s['note']} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fit-index", type=Path, required=True, help="the real index the generator is fitted to")
    p.add_argument("--topics", required=True, help="real queries (their text is encoded by the index's model)")
    p.add_argument("--queries", type=int, default=200, help="how many of the topics to use (default: %(default)s)")
    p.add_argument("--scan-queries", type=int, default=20, help="queries timed for the slow float16 scan (default: %(default)s)")
    p.add_argument("--docs", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--clusters", type=int, nargs="+", default=[64, 256, 1024],
                   help="generator mixture sizes to check; the one whose recall agrees best is used (default: %(default)s)")
    p.add_argument("--shortlist", default="6x32", help="sizes given a FAISS index in the synthetic indexes (default: %(default)s)")
    p.add_argument("--baselines", nargs="*", default=["hnsw", "ivfpq_refine"], choices=["hnsw", "ivfpq_refine"],
                   help="FAISS baselines to build over full-size vectors (default: both; building HNSW over 1M "
                        "vectors takes about half an hour on one thread)")
    p.add_argument("--threads", type=int, help="torch and FAISS threads (default: all cores)")
    p.add_argument("--scratch", type=Path, default=ROOT / "experiments" / "indexes" / "scale", help="where synthetic indexes go")
    p.add_argument("--keep", action="store_true", help="keep the synthetic indexes")
    p.add_argument("--tag", default="default")
    p.add_argument("--out", type=Path, default=HERE / "results" / "scale")
    args = p.parse_args()
    runtime.setup(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    args.scratch.mkdir(parents=True, exist_ok=True)
    real = Index(args.fit_index)
    model = Searcher(real).model
    topics = dict(list(read_topics(args.topics).items())[: args.queries])
    result = {
        **runtime.record("experiments.scale", args.threads),
        "model": real.manifest.model_name, "fit_index": str(args.fit_index), "fit_documents": len(real),
        "queries": len(topics), "target_recall@10": TARGET,
    }
    checks = {}
    for clusters in args.clusters:
        print(f"checking a {clusters}-component generator on the real corpus", flush=True)
        shutil.rmtree(args.scratch / "check", ignore_errors=True)
        generator = Generator.fit(real, clusters=clusters)
        checks[len(generator.weights)] = (generator, realism(real, generator, model, topics, args.scratch))
        shutil.rmtree(args.scratch / "check")
    best = min(checks, key=lambda c: checks[c][1]["mean |real - synthetic|"])
    generator = checks[best][0]
    result["realism"] = {"chosen_components": best, **checks[best][1],
                         "by_components": {c: check for c, (_, check) in checks.items()}}
    result["sizes"] = []
    for n in args.docs:
        print(f"== {n:,} documents", flush=True)
        result["sizes"].append(run_size(n, generator, real, model, topics, parse_sizes(args.shortlist), args))
        result["load_average_after"] = runtime.machine(args.threads)["load_average"]
        (args.out / f"{args.tag}.json").write_text(json.dumps(result, indent=2) + "\n")
        text = table(result)
        print(text, flush=True)
        (args.out / f"{args.tag}.md").write_text("\n".join([
            f"# Scale: {args.tag}", "", f"`{result['command']}`", "", f"Machine: {result['machine']}", "",
            f"Generator ({result['realism']['chosen_components']} components) check on {len(real):,} real documents: "
            f"mean |real - synthetic| cascade recall@10 "
            f"{result['realism']['mean |real - synthetic|']:.4f} (max {result['realism']['max |real - synthetic|']:.4f}) "
            f"over {len(result['realism']['recall@10']['real'])} cascades.", "", text, "",
            *(f"Where the time of {size['chosen']} goes at {size['documents']:,} documents (ms/query): "
              f"{json.dumps({k: round(v, 2) for k, v in size['chosen_profile_ms'].items()})}; "
              f"encoding a query: {json.dumps(size['encode_ms'])} ms." for size in result["sizes"]), ""]))


if __name__ == "__main__":
    main()
