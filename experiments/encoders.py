"""Encoder comparison: torch fp32 against ONNX Runtime fp32 and int8, on quality and speed.

For each collection and encoder: index the corpus at every diagonal size (plus the last
layer's 1/12 and 1/6 cuts, and BM25) with that encoder, encode the judged topics, rank by
exact search over the stored vectors, and score nDCG@10 per size. Speed, in the same run:
passages encoded per second, and the median latency of encoding one query up to each layer (one thread, each encoder in turn
on the same queries, so load from other work falls on all alike). ``starbucks.encoder.CPU_DEFAULT``
is the fastest encoder whose nDCG@10 stays within 0.005 of torch fp32 at every size on every
collection; the results say which that is.

    python -m experiments.encoders --datasets scifact nfcorpus-dev dl19-pool --threads 2

Writes experiments/results/encoders/encoders.{json,md}; keeps the indexes in experiments/indexes/.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from experiments import runtime
from experiments.datasets import COLLECTIONS
from retrieval.evaluate import judged_topics, score
from starbucks.corpus import iter_corpus
from starbucks.encoder import make_encoder
from starbucks.model import StarbucksModel
from starbucks.sizes import Size, diagonal
from starbucks.topics import read_qrels, read_topics

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "encoders"
KINDS = ("torch", "onnx", "onnx-int8")
TOLERANCE = 0.005
LATENCY_QUERIES = 30
SAMPLE = 200  # passages on which torch and ONNX fp32 vectors are compared
THROUGHPUT = 500  # passages timed per encoder
INDEXES = HERE / "indexes"


def sizes_for(model: StarbucksModel) -> list[Size]:
    full = Size(model.num_layers, model.hidden_size)
    return sorted(set(diagonal(model.num_layers, model.hidden_size))
                  | {Size(full.layer, full.dim // 12), Size(full.layer, full.dim // 6)})


def exact_top(docs: np.ndarray, queries: np.ndarray, k: int = 10) -> np.ndarray:
    scores = torch.from_numpy(queries) @ torch.from_numpy(docs).T
    return torch.topk(scores, k, dim=1).indices.numpy()


def index_for(name: str, kind: str, model: StarbucksModel, threads: int) -> tuple[Path, dict]:
    """The collection indexed with encoder ``kind`` at every size of ``sizes_for`` (plus BM25), built
    once and kept in experiments/indexes; with the build's passages/s when built now."""
    from indexes import build_index

    c = COLLECTIONS[name]
    folder = INDEXES / f"{name}-{kind}-{model.fingerprint()[:12]}"  # one per model: a new default builds anew
    if (folder / "manifest.json").is_file():
        return folder, {}
    sizes = sizes_for(model)
    full = max(sizes)
    shortlist = [s for s in sizes if s.layer == full.layer and s != full] + [s for s in sizes if s.dim == full.dim // 6]
    t = time.perf_counter()
    build_index(c.corpus, folder, model=model, shortlist=sorted(set(shortlist)),
                rerank=[s for s in sizes if s not in shortlist], encoder=kind, threads=threads,
                bm25=True, progress=False)
    seconds = time.perf_counter() - t
    return folder, {"build_seconds": round(seconds, 1)}


def calibrated(name: str, model: StarbucksModel) -> tuple:
    """The query path's index of ``name`` searched as ``experiments.query_path`` calibrated it (the CPU
    default encoder, one thread), its frontier, and the texts of its judged evaluation topics; exits
    where that index has no calibration for this machine's settings."""
    from retrieval import Searcher
    from starbucks.encoder import CPU_DEFAULT

    folder, _ = index_for(name, "onnx", model, 2)
    searcher = Searcher(folder, model=model, encoder=CPU_DEFAULT, threads=1)
    if searcher.planner.frontier is None:
        raise SystemExit(f"{folder}: no calibration for this machine's settings; run experiments.query_path first")
    c = COLLECTIONS[name]
    texts = list(judged_topics(read_topics(c.topics), read_qrels(c.qrels)).values())
    return searcher, searcher.planner.frontier, texts


def quality(name: str, model: StarbucksModel, threads: int) -> dict:
    """nDCG@10 per size for each encoder, through indexes as search uses them (float16 vectors).

    The corpus is encoded by each ONNX variant; torch fp32 is scored with its own query vectors
    against the ONNX fp32 index, whose passage vectors equal torch's to the largest difference
    recorded here (measured on a sample of passages), since encoding the corpus a third time
    with the slowest encoder would say nothing more."""
    from indexes import Index

    c = COLLECTIONS[name]
    qrels = read_qrels(c.qrels)
    topics = judged_topics(read_topics(c.topics), qrels)
    qids = list(topics)
    sizes = sizes_for(model)
    out, builds = {}, {}
    for kind in KINDS:
        folder, build = index_for(name, "onnx" if kind == "torch" else kind, model, threads)
        builds[kind] = build
        index = Index(folder)
        docids = index.docids
        queries = make_encoder(model, kind, threads=threads).encode_queries([topics[q] for q in qids], sizes)
        ndcg = {}
        for s in sizes:
            top = exact_top(np.asarray(index.vectors[s], dtype=np.float32), queries[s])
            rankings = {q: docids.lookup(row) for q, row in zip(qids, top)}
            ndcg[str(s)] = score(rankings, qrels, _measures())["nDCG@10"]
        out[kind] = {"nDCG@10": ndcg, **build}
        print(f"{name} {kind}: " + " ".join(f"{s} {v:.4f}" for s, v in ndcg.items()), flush=True)
    sample = [d.text for _, d in zip(range(SAMPLE), iter_corpus(c.corpus))]
    ref = make_encoder(model, "torch", threads=threads).encode_passages(sample, sizes)
    fp32 = make_encoder(model, "onnx", threads=threads).encode_passages(sample, sizes)
    diff = max(float(np.abs(ref[s] - fp32[s]).max()) for s in sizes)
    return {"docs": len(Index(folder)), "queries": len(qids), "encoders": out,
            "torch_vs_onnx_fp32_max_abs_difference": diff, "sample_passages": len(sample)}


def passage_speed(model: StarbucksModel, name: str, threads: int) -> dict:
    """Passages/s of each encoder over the same passages (the first THROUGHPUT of the collection)."""
    texts = [d.text for _, d in zip(range(THROUGHPUT), iter_corpus(COLLECTIONS[name].corpus))]
    sizes = sizes_for(model)
    out = {}
    for kind in KINDS:
        encoder = make_encoder(model, kind, threads=threads)
        encoder.encode_passages(texts[:32], sizes)  # warm-up
        t = time.perf_counter()
        encoder.encode_passages(texts, sizes)
        out[kind] = len(texts) / (time.perf_counter() - t)
    return out


def _measures():
    import ir_measures

    return [ir_measures.parse_measure("nDCG@10")]


def latency(model: StarbucksModel, queries: list[str], repeats: int = 5) -> dict:
    """Median ms to encode one query up to each layer, one thread; encoders interleaved per query."""
    encoders = {kind: make_encoder(model, kind, threads=1) for kind in KINDS}
    layers = range(1, model.num_layers + 1)
    times = {kind: {layer: [] for layer in layers} for kind in KINDS}
    for kind, e in encoders.items():
        e.encode_queries(queries[:2], [Size(model.num_layers, 8)])  # warm-up
    for q in queries:
        for layer in layers:
            for kind, e in encoders.items():
                best = []
                for _ in range(repeats):
                    t = time.perf_counter()
                    e.encode_queries([q], [Size(layer, 8)])
                    best.append((time.perf_counter() - t) * 1000)
                times[kind][layer].append(statistics.median(best))
    return {kind: {str(layer): statistics.median(v) for layer, v in t.items()} for kind, t in times.items()}


def choose_default(results: dict) -> dict:
    """The fastest encoder within TOLERANCE of torch fp32 at every size on every collection."""
    within = {}
    for kind in KINDS:
        worst = 0.0
        for r in results["collections"].values():
            ref = r["encoders"]["torch"]["nDCG@10"]
            worst = max(worst, *(abs(v - ref[s]) for s, v in r["encoders"][kind]["nDCG@10"].items()))
        within[kind] = worst
    full = str(max(int(layer) for layer in results["latency_ms"]["torch"]))
    ok = [k for k in KINDS if within[k] <= TOLERANCE]
    return {"largest_ndcg_difference": within, "tolerance": TOLERANCE,
            "default": min(ok, key=lambda k: results["latency_ms"][k][full])}


def to_markdown(results: dict) -> str:
    lines = ["# Encoders: torch fp32 against ONNX Runtime", "",
             f"`{results['provenance']['command']}` at commit {results['provenance'].get('git_commit', '?')[:10]}, "
             f"model {results['model']}; load average {results['provenance']['machine']['load_average']}", ""]
    for name, r in results["collections"].items():
        sizes = list(r["encoders"]["torch"]["nDCG@10"])
        lines += [f"## {name}: nDCG@10 by size ({r['docs']} passages, {r['queries']} queries)", "",
                  "| encoder | " + " | ".join(sizes) + " |", "|---" * (len(sizes) + 1) + "|"]
        for kind, e in r["encoders"].items():
            lines.append(f"| {kind} | " + " | ".join(f"{e['nDCG@10'][s]:.4f}" for s in sizes) + " |")
        lines += ["", f"torch and ONNX fp32 passage vectors differ by at most "
                  f"{r['torch_vs_onnx_fp32_max_abs_difference']:.1e} on {r['sample_passages']} passages "
                  f"(torch is scored against the ONNX fp32 index).", ""]
    lines += [f"Passages encoded per second ({results['throughput_passages']} passages of {next(iter(results['collections']))}, "
              f"{results['provenance']['machine']['threads']} threads): "
              + ", ".join(f"{k} {v:.0f}" for k, v in results["passages_per_s"].items()), ""]
    lat = results["latency_ms"]
    layers = list(lat["torch"])
    lines += [f"## One query, one thread: median ms to encode up to each layer ({results['latency_queries']} queries)", "",
              "| encoder | " + " | ".join(f"{l} layers" for l in layers) + " | speed-up at full depth |",
              "|---" * (len(layers) + 2) + "|"]
    for kind, t in lat.items():
        lines.append(f"| {kind} | " + " | ".join(f"{t[l]:.2f}" for l in layers)
                     + f" | {lat['torch'][layers[-1]] / t[layers[-1]]:.1f}x |")
    d = results["choice"]
    lines += ["", "Largest nDCG@10 difference from torch at any size on any collection: "
              + ", ".join(f"{k} {v:.4f}" for k, v in d["largest_ndcg_difference"].items())
              + f". Default on a CPU (fastest within {d['tolerance']}): **{d['default']}**.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=runtime.description(__doc__))
    parser.add_argument("--datasets", nargs="+", default=["scifact", "nfcorpus-dev", "dl19-pool"])
    parser.add_argument("--model", help="model folder (default: the shipped model)")
    parser.add_argument("--threads", type=int, default=2, help="threads for corpus encoding (latency uses one)")
    args = parser.parse_args(argv)
    runtime.setup(args.threads)
    model = StarbucksModel.load(args.model, device="cpu")
    results = {"provenance": runtime.record("experiments.encoders", args.threads, argv),
               "model": Path(model.name).name, "collections": {}}
    for name in args.datasets:
        results["collections"][name] = quality(name, model, args.threads)
    topics = read_topics(COLLECTIONS[args.datasets[0]].topics)
    results["passages_per_s"] = passage_speed(model, args.datasets[0], args.threads)
    results["throughput_passages"] = THROUGHPUT
    results["latency_queries"] = LATENCY_QUERIES
    results["latency_ms"] = latency(model, list(topics.values())[:LATENCY_QUERIES])
    results["choice"] = choose_default(results)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "encoders.json").write_text(json.dumps(results, indent=2) + "\n")
    (OUT / "encoders.md").write_text(to_markdown(results))
    print(to_markdown(results))


if __name__ == "__main__":
    main()
