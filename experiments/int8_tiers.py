"""How much of an exact rerank an 8-bit rerank tier keeps at scale, and whether coding the residual helps.

The int8 rerank tier (``indexes.tiers``) codes each dimension's range over the corpus in 255 steps.
Behind an IVF-PQ shortlist of the same size, the vector minus its PQ reconstruction is a smaller
quantity, and its codes are finer for the same byte a dimension; a score is then the shortlist's
own (ADC) score plus the query against the decoded residual. This measures, on synthetic vectors
fitted to a real index (as ``experiments.scale`` draws them), over one IVF-PQ shortlist of the full
size, recall@10 against exhaustive full-size search of the shortlist reranked by:

* the PQ codes alone (the shortlist's order);
* the stored float16 vectors (exact);
* the int8 tier (per-dimension codes of the vectors);
* int8 codes of the residual to the PQ reconstruction, with ranges from the extremes and clipped at
  the 0.1 / 99.9 percentiles;
* symmetric int8 codes with one scale a vector (4 bytes more), of the vectors after a random
  rotation, and of the residual without and with that rotation; and the rotated residual's codes at
  9 and 10 bits a dimension (as bit-packed codes would hold them);

with each score's error against the exact one and the gap between the exact 10th and 11th scores
(a rerank whose score error is larger than that gap swaps them).

    python -m experiments.int8_tiers --fit-index experiments/indexes/scifact-onnx-24d2bb963d63 \\
        --topics ../shared/data/scifact/queries.jsonl --docs 1000000

Writes experiments/results/int8_tiers/TAG.{json,md}.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from experiments import runtime
from indexes.tiers import rotation  # the residual tier's own

OUT = Path(__file__).resolve().parent / "results" / "int8_tiers"
PERCENTILES = (0.1, 99.9)
WIDER = (9, 10)  # bits a dimension of the wider residual codes


def recall(candidates: np.ndarray, scores: np.ndarray, truth: np.ndarray, k: int = 10) -> float:
    top = np.take_along_axis(candidates, np.argsort(-scores, axis=1)[:, :k], 1)
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(top, truth)]))


def codes(matrix: np.ndarray, low: np.ndarray, high: np.ndarray):
    """Per-dimension 8-bit codes of ``matrix`` over [low, high] and their decoding function."""
    step = np.where(high > low, (high - low) / 255, 1).astype(np.float32)
    q = np.clip(np.rint((matrix - low) / step), 0, 255).astype(np.uint8)
    return lambda rows: low + q[rows].astype(np.float32) * step


def row_codes(matrix: np.ndarray, rotation: np.ndarray | None = None, bits: int = 8):
    """Symmetric ``bits``-bit codes with one scale a vector (its largest coordinate maps to the
    largest code, 127 for 8 bits), of the
    vectors turned by ``rotation`` (orthogonal) when given, and their decoding function (rows in the
    turned space: score them with queries turned alike). A rotation spreads a vector's outlying
    coordinates over all of them, so its largest coordinate, and with it the code step, shrinks."""
    turned = matrix if rotation is None else matrix @ rotation
    scale = (np.abs(turned).max(axis=1) / (2 ** (bits - 1) - 1)).astype(np.float32)
    q = np.rint(turned / np.maximum(scale, 1e-30)[:, None]).astype(np.int8 if bits <= 8 else np.int16)
    return lambda rows: q[rows].astype(np.float32) * scale[rows][..., None]


def run(args) -> dict:
    import faiss

    from experiments.synthetic import Generator
    from indexes import Index
    from indexes.faiss_index import fill_index, ivfpq_params, new_index
    from retrieval import Searcher
    from starbucks.topics import read_topics

    real = Index(args.fit_index)
    full = max(real.sizes)
    generator = Generator.fit(real, clusters=args.clusters)
    docs = np.concatenate([b[full] for b in generator.draw(args.docs, seed=args.seed, sizes=[full])])
    docs = docs.astype(np.float32)  # the float16 values the index would store, widened
    texts = list(read_topics(args.topics).values())[: args.queries]
    queries = Searcher(real, encoder="onnx", threads=1).encoder.encode_queries(texts, [full])[full]
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    flat = faiss.IndexFlatIP(full.dim)
    flat.add(docs)
    _, truth = flat.search(queries, 10)
    del flat
    ivf = new_index("ivfpq", full.dim, args.docs)
    fill_index(ivf, docs)
    ivf.nprobe = args.nprobe
    adc, cand = ivf.search(queries, args.candidates)
    ivf.make_direct_map()
    recon = np.concatenate([ivf.reconstruct_n(a, min(65536, args.docs - a)) for a in range(0, args.docs, 65536)])
    residual = docs - recon
    exact = np.einsum("qd,qkd->qk", queries, docs[cand])
    top = -np.sort(-exact, axis=1)
    gap = top[:, 9] - top[:, 10]
    plain = codes(docs, docs.min(axis=0), docs.max(axis=0))
    wide = codes(residual, residual.min(axis=0), residual.max(axis=0))
    lo, hi = (np.percentile(residual, p, axis=0).astype(np.float32) for p in PERCENTILES)
    clipped = codes(residual, lo, hi)
    turn = rotation(full.dim, args.seed)
    turned_queries = queries @ turn
    per_vector = row_codes(residual)
    turned_vectors, turned_residual = row_codes(docs, turn), row_codes(residual, turn)
    systems = [  # (rerank, its scores, the bytes a document its tier holds)
        ("PQ codes alone (shortlist order)", adc, 0),
        ("float16 (exact rerank)", exact, 2 * full.dim),
        ("int8 of the vectors (the int8 tier)", np.einsum("qd,qkd->qk", queries, plain(cand)), full.dim),
        ("int8 of the residual to PQ", adc + np.einsum("qd,qkd->qk", queries, wide(cand)), full.dim),
        (f"int8 of the residual to PQ, clipped at {PERCENTILES[0]}/{PERCENTILES[1]} %",
         adc + np.einsum("qd,qkd->qk", queries, clipped(cand)), full.dim),
        ("int8 of the vectors, rotated, one scale a vector",
         np.einsum("qd,qkd->qk", turned_queries, turned_vectors(cand)), full.dim + 4),
        ("int8 of the residual to PQ, one scale a vector",
         adc + np.einsum("qd,qkd->qk", queries, per_vector(cand)), full.dim + 4),
        ("int8 of the residual to PQ, rotated, one scale a vector",
         adc + np.einsum("qd,qkd->qk", turned_queries, turned_residual(cand)), full.dim + 4),
    ]
    for bits in WIDER:  # codes of more than 8 bits, packed: dim * bits / 8 bytes
        wider = row_codes(residual, turn, bits)
        systems.append((f"{bits}-bit codes of the residual to PQ, rotated, one scale a vector",
                        adc + np.einsum("qd,qkd->qk", turned_queries, wider(cand)), -(-full.dim * bits // 8) + 4))
    p = ivfpq_params(args.docs, full.dim)
    rows = [{"system": name, "recall@10": recall(cand, s, truth), "score_error_std": float((s - exact).std()),
             "bytes_per_doc": nbytes} for name, s, nbytes in systems]
    return {"documents": args.docs, "size": str(full), "queries": len(texts), "candidates": args.candidates,
            "ivfpq": {**p, "nprobe": args.nprobe}, "pq_relative_error": float(np.linalg.norm(residual) / np.linalg.norm(docs)),
            "gap_10_11": {"median": float(np.median(gap)), "p10": float(np.percentile(gap, 10))},
            "rows": rows}


def table(results: dict) -> str:
    """What was measured, in a paragraph, and one row per rerank."""
    r = results["result"]
    lines = [f"{r['size']} at {r['documents']:,} synthetic documents, shortlisted by IVF-PQ (nlist {r['ivfpq']['nlist']}, "
             f"{r['ivfpq']['m']} bytes of PQ codes, nprobe {r['ivfpq']['nprobe']}) to {r['candidates']} candidates, "
             f"reranked; {r['queries']} queries. PQ reconstruction error: {r['pq_relative_error']:.3f} of the vectors' "
             f"norm. Gap between the exact 10th and 11th scores: median {r['gap_10_11']['median']:.5f}, 10th "
             f"percentile {r['gap_10_11']['p10']:.5f}.", "",
             "| rerank by | recall@10 | score error (std) | tier bytes/doc |", "|---|---|---|---|"]
    lines += [f"| {x['system']} | {x['recall@10']:.3f} | {x['score_error_std']:.5f} | {x['bytes_per_doc']} |"
              for x in r["rows"]]
    return "\n".join(lines) + "\n"


def markdown(results: dict) -> str:
    p = results["provenance"]
    return (f"# 8-bit rerank tiers at {results['result']['documents']:,} documents\n\n`{p['command']}` at commit "
            f"{p['git_commit'][:10]}; one thread; load average {p['machine']['load_average']}.\n\n" + table(results))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=runtime.description(__doc__))
    parser.add_argument("--fit-index", required=True, help="a real index the synthetic vectors are fitted to")
    parser.add_argument("--topics", required=True, help="queries (BEIR JSONL) encoded with the index's model")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--clusters", type=int, default=1024, help="Gaussian mixture components")
    parser.add_argument("--nprobe", type=int, default=64)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tag", default=None, help="results file name (default: the document count)")
    args = parser.parse_args(argv)
    runtime.setup(1)
    results = {"provenance": runtime.record("experiments.int8_tiers", 1, argv), "result": run(args)}
    OUT.mkdir(parents=True, exist_ok=True)
    tag = args.tag or f"{args.docs // 1000}k"
    (OUT / f"{tag}.json").write_text(json.dumps(results, indent=2) + "\n")
    (OUT / f"{tag}.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
