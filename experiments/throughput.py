"""Indexing throughput: ``starbucks index`` (one pass, every size) against one sentence-transformers pass per size.

Both encode the same passages with the same model, batch size and maximum length. The
baseline is what a user without Starbucks would run: for each size (layer, dim) a
sentence-transformers model cut to ``layer`` transformer layers and ``truncate_dim=dim``,
encoding the whole corpus again. ``starbucks index`` is timed end to end (start-up, reading,
encoding, writing chunks, assembling, FAISS) in a child process, as a user runs it, and its
encoder alone in one pass; the baseline's vectors are checked against the index's.

    python -m experiments.throughput --corpus ../shared/data/scifact --docs 500 --threads 1 --model PATH
"""
from __future__ import annotations

import argparse
import itertools
import json
import shutil
import time
from pathlib import Path

import numpy as np

from experiments import runtime
from experiments.sizes_and_plans import build
from indexes import Index
from starbucks.corpus import iter_corpus
from starbucks.encoder import Encoder
from starbucks.model import StarbucksModel

HERE = Path(__file__).resolve().parent
BATCH = 32


def sentence_transformers_pass(model_path: str, layer: int, dim: int, texts: list[str], max_length: int) -> tuple[float, np.ndarray]:
    """Seconds to encode ``texts`` with a model cut to ``layer`` layers and ``dim`` dimensions, and the vectors."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_path, device="cpu", truncate_dim=dim)
    model.max_seq_length = max_length
    encoder = model[0].auto_model.encoder
    encoder.layer = encoder.layer[:layer]
    model.encode(texts[:BATCH], batch_size=BATCH)  # warm-up
    t = time.perf_counter()
    vectors = model.encode(texts, batch_size=BATCH, normalize_embeddings=True, convert_to_numpy=True)
    return time.perf_counter() - t, vectors


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=runtime.description(__doc__))
    p.add_argument("--corpus", required=True, help="a corpus (as for starbucks index); its first --docs passages are used")
    p.add_argument("--docs", type=int, default=500)
    p.add_argument("--model", required=True, help="a local sentence-transformers model folder")
    p.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    p.add_argument("--scratch", type=Path, default=Path("/tmp/starbucks-throughput"))
    p.add_argument("--tag", default="default")
    p.add_argument("--out", type=Path, default=HERE / "results" / "throughput")
    args = p.parse_args(argv)
    runtime.setup(args.threads)
    args.scratch.mkdir(parents=True, exist_ok=True)
    docs = list(itertools.islice(iter_corpus(args.corpus), args.docs))
    corpus = args.scratch / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": d.docid, "text": d.text}) + "\n" for d in docs))
    out = args.scratch / f"index-{args.tag}"
    shutil.rmtree(out, ignore_errors=True)
    indexing = build("throughput", str(corpus), out, args.model, ["--batch-size", str(BATCH)])
    index = Index(out)
    model = StarbucksModel.load(args.model)
    max_length = model.config.passage_max_length
    texts = [d.text for d in docs]
    encoder = Encoder(model, batch_size=BATCH)
    encoder.encode_passages(texts[:BATCH], index.sizes)  # warm-up
    t = time.perf_counter()
    encoder.encode_passages(texts, index.sizes)
    one_pass = time.perf_counter() - t
    passes, agreement = {}, {}
    for size in index.sizes:
        seconds, vectors = sentence_transformers_pass(args.model, size.layer, size.dim, texts, max_length)
        passes[str(size)] = round(seconds, 2)
        stored = np.asarray(index.vectors[size], dtype=np.float32)
        agreement[str(size)] = float(np.mean(np.sum(stored * vectors, axis=1)))
    total = sum(passes.values())
    result = {
        **runtime.record("experiments.throughput", args.threads, argv),
        "model": args.model, "docs": len(docs), "max_length": max_length, "batch_size": BATCH,
        "sizes": [str(s) for s in index.sizes],
        "starbucks_index": indexing,
        "starbucks_encoder": {"seconds": round(one_pass, 2), "docs_per_s": round(len(docs) / one_pass, 1)},
        "sentence_transformers": {"seconds_per_size": passes, "seconds": round(total, 2),
                                  "docs_per_s": round(len(docs) / total, 1)},
        "mean_cosine_index_vs_sentence_transformers": agreement,
        "speedup_end_to_end": round(indexing["docs_per_s"] / (len(docs) / total), 2),
        "speedup_encoding": round(total / one_pass, 2),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.tag}.json").write_text(json.dumps(result, indent=2) + "\n")
    table = "\n".join([
        f"# Indexing throughput: {args.tag}", "", f"`{result['command']}`", "", f"Machine: {result['machine']}", "",
        f"{len(docs)} passages of {args.corpus}, sizes {', '.join(result['sizes'])}, max length {max_length}, batch {BATCH}.", "",
        "| system | seconds | docs/s |", "|---|---|---|",
        f"| starbucks index (one pass, all sizes, end to end: start-up, model load, chunks, FAISS) | "
        f"{indexing['seconds']} | {indexing['docs_per_s']} |",
        f"| starbucks encoder (one pass, all sizes, encoding only) | {result['starbucks_encoder']['seconds']} | "
        f"{result['starbucks_encoder']['docs_per_s']} |",
        f"| sentence-transformers, one pass per size (encoding only) | {result['sentence_transformers']['seconds']} | "
        f"{result['sentence_transformers']['docs_per_s']} |", "",
        f"Speed-up over sentence-transformers: {result['speedup_encoding']}x encoding only, "
        f"{result['speedup_end_to_end']}x with starbucks index end to end. Mean cosine between the index's vectors and sentence-transformers': "
        f"{json.dumps({k: round(v, 4) for k, v in agreement.items()})}.", ""])
    (args.out / f"{args.tag}.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
