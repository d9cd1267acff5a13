"""Encoder comparison: torch fp32 against ONNX Runtime fp32 and int8, on quality and speed.

For each collection and encoder: encode the corpus at every diagonal size (plus the last
layer's 1/12 and 1/6 cuts), encode the judged topics, rank by exact search, and score
nDCG@10 per size. Speed, in the same run: passages encoded per second while doing so, and
the median latency of encoding one query up to each layer (one thread, each encoder in turn
on the same queries, so load from other work falls on all alike). ``starbucks.encoder.CPU_DEFAULT``
is the fastest encoder whose nDCG@10 stays within 0.005 of torch fp32 at every size on every
collection; the results say which that is.

    python -m experiments.encoders --datasets scifact nfcorpus-dev dl19-pool --threads 2

Writes experiments/results/encoders/encoders.{json,md}.
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


def sizes_for(model: StarbucksModel) -> list[Size]:
    full = Size(model.num_layers, model.hidden_size)
    return sorted(set(diagonal(model.num_layers, model.hidden_size))
                  | {Size(full.layer, full.dim // 12), Size(full.layer, full.dim // 6)})


def exact_top(docs: np.ndarray, queries: np.ndarray, k: int = 10) -> np.ndarray:
    scores = torch.from_numpy(queries) @ torch.from_numpy(docs).T
    return torch.topk(scores, k, dim=1).indices.numpy()


def quality(name: str, model: StarbucksModel, threads: int) -> dict:
    """nDCG@10 per size and passages/s, for each encoder, on one collection."""
    c = COLLECTIONS[name]
    qrels = read_qrels(c.qrels)
    topics = judged_topics(read_topics(c.topics), qrels)
    docs = list(iter_corpus(c.corpus))
    texts, docids = [d.text for d in docs], [d.docid for d in docs]
    qids = list(topics)
    sizes = sizes_for(model)
    out = {}
    for kind in KINDS:
        encoder = make_encoder(model, kind, threads=threads)
        t = time.perf_counter()
        passages = encoder.encode_passages(texts, sizes)
        seconds = time.perf_counter() - t
        queries = encoder.encode_queries([topics[q] for q in qids], sizes)
        ndcg = {}
        for s in sizes:
            top = exact_top(passages[s], queries[s])
            rankings = {q: [docids[i] for i in row] for q, row in zip(qids, top)}
            ndcg[str(s)] = score(rankings, qrels, _measures())["nDCG@10"]
        out[kind] = {"nDCG@10": ndcg, "passages_per_s": len(texts) / seconds}
        print(f"{name} {kind}: {len(texts) / seconds:.0f} passages/s, "
              + " ".join(f"{s} {v:.4f}" for s, v in ndcg.items()), flush=True)
    return {"docs": len(texts), "queries": len(qids), "encoders": out}


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
    lines = [f"# Encoders: torch fp32 against ONNX Runtime", "",
             f"`{results['provenance']['command']}` at commit {results['provenance'].get('git_commit', '?')[:10]}, "
             f"model {results['model']}; load average {results['provenance']['machine']['load_average']}", ""]
    for name, r in results["collections"].items():
        sizes = list(r["encoders"]["torch"]["nDCG@10"])
        lines += [f"## {name}: nDCG@10 by size ({r['docs']} passages, {r['queries']} queries)", "",
                  "| encoder | " + " | ".join(sizes) + " | passages/s |", "|---" * (len(sizes) + 2) + "|"]
        for kind, e in r["encoders"].items():
            lines.append(f"| {kind} | " + " | ".join(f"{e['nDCG@10'][s]:.4f}" for s in sizes)
                         + f" | {e['passages_per_s']:.0f} |")
        lines.append("")
    lat = results["latency_ms"]
    layers = list(lat["torch"])
    lines += [f"## One query, one thread: median ms to encode up to each layer ({results['latency_queries']} queries)", "",
              "| encoder | " + " | ".join(f"{l} layers" for l in layers) + " | speed-up at full depth |",
              "|---" * (len(layers) + 2) + "|"]
    for kind, t in lat.items():
        lines.append(f"| {kind} | " + " | ".join(f"{t[l]:.2f}" for l in layers)
                     + f" | {lat['torch'][layers[-1]] / t[layers[-1]]:.1f}x |")
    d = results["choice"]
    lines += ["", f"Largest nDCG@10 difference from torch at any size on any collection: "
              + ", ".join(f"{k} {v:.4f}" for k, v in d["largest_ndcg_difference"].items())
              + f". Default on a CPU (fastest within {d['tolerance']}): **{d['default']}**.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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
    results["latency_queries"] = LATENCY_QUERIES
    results["latency_ms"] = latency(model, list(topics.values())[:LATENCY_QUERIES])
    results["choice"] = choose_default(results)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "encoders.json").write_text(json.dumps(results, indent=2) + "\n")
    (OUT / "encoders.md").write_text(to_markdown(results))
    print(to_markdown(results))


if __name__ == "__main__":
    main()
