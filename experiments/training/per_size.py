"""Per-size effectiveness of a model: nDCG@10 by exact search, Spearman on STS.

Every size comes from one encoding pass per collection (``Encoder`` returns all
sizes at once); search is exact dot product with numpy, scored by ir_measures.

    python -m experiments.training.per_size --model runs/starbucks-minilm-l6 \
        --name trained --datasets scifact nfcorpus --out experiments/training/results/trained.json
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import ir_measures
import numpy as np
import torch
from scipy.stats import spearmanr

from experiments.datasets import COLLECTIONS as DATASETS, DATA, Collection
from starbucks.corpus import iter_corpus
from starbucks.encoder import Encoder
from starbucks.model import StarbucksModel
from starbucks.sizes import Size, diagonal
from starbucks.topics import read_qrels, read_topics
from training.losses.sts import read_sts_rows

# Names used in the results files -> collections of experiments.datasets.
COLLECTIONS = {"scifact": "scifact", "nfcorpus": "nfcorpus-dev", "dl19": "dl19-pool"}
STS = {"stsb": "test", "sickr": "test", "stsb-dev": "dev", "sickr-trial": "trial",  # name -> split
       "stsb-train": "train", "sickr-train": "train"}


def eval_sizes(model: StarbucksModel) -> list[Size]:
    """The diagonal plus the last layer at each diagonal width (how MRL-style truncation fares)."""
    diag = diagonal(model.num_layers, model.hidden_size)
    return sorted(set(diag) | {Size(model.num_layers, s.dim) for s in diag})


def retrieval(encoder: Encoder, collection: Collection, sizes: list[Size],
              passage_max_length: int | None) -> dict[str, float]:
    docs = list(iter_corpus(collection.corpus))
    qrels = read_qrels(collection.qrels)
    topics = {q: t for q, t in read_topics(collection.topics).items() if q in qrels}
    ids = [d.docid for d in docs]
    if passage_max_length:
        import dataclasses
        encoder.model.config = dataclasses.replace(encoder.model.config, passage_max_length=passage_max_length)
    d_vecs = encoder.encode_passages([d.text for d in docs], sizes)
    qids = list(topics)
    q_vecs = encoder.encode_queries([topics[q] for q in qids], sizes)
    return ndcg_per_size(q_vecs, d_vecs, qids, ids, qrels, sizes)


def ndcg_per_size(q_vecs: dict, d_vecs: dict, qids: list[str], ids: list[str], qrels, sizes: list[Size]) -> dict[str, float]:
    """nDCG@10 of each size by exact dot-product search of the query vectors over the passage vectors."""
    out = {}
    for size in sizes:
        s = q_vecs[size] @ d_vecs[size].T
        top = np.argsort(-s, axis=1, kind="stable")[:, :10]
        run = {q: {ids[j]: float(s[i, j]) for j in top[i]} for i, q in enumerate(qids)}
        out[str(size)] = float(ir_measures.calc_aggregate([ir_measures.nDCG @ 10], qrels, run)[ir_measures.nDCG @ 10])
    return out


def sts_pairs(name: str) -> tuple[list[str], list[str], list[float]]:
    split = STS[name]
    if name.startswith("stsb"):
        rows = read_sts_rows(DATA / f"sts/stsbenchmark/sts-{split}.csv")
        return rows.columns[0], rows.columns[1], rows.labels
    a, b, y = [], [], []
    for i, line in enumerate(open(DATA / "sts/sick/SICK.txt", encoding="utf-8")):
        parts = line.rstrip("\n").split("\t")
        if i and parts[-1] == split.upper():
            a.append(parts[1]), b.append(parts[2]), y.append(float(parts[4]))
    return a, b, y


def sts(encoder: Encoder, name: str, sizes: list[Size]) -> dict[str, float]:
    a, b, y = sts_pairs(name)
    va, vb = encoder.encode_passages(a, sizes), encoder.encode_passages(b, sizes)
    out = {}
    for size in sizes:
        x, z = va[size], vb[size]
        cos = (x * z).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(z, axis=1) + 1e-12)
        out[str(size)] = float(spearmanr(cos, y).statistic)
    return out


def evaluate(model_path: str | None, datasets: list[str], passage_max_length: int | None = None,
             sizes: list[Size] | None = None, collections: dict[str, Collection] | None = None) -> dict:
    """Per-size scores on each named data set: STS names, ``COLLECTIONS`` names, or keys of ``collections``."""
    collections = {**{name: DATASETS[key] for name, key in COLLECTIONS.items()}, **(collections or {})}
    model = StarbucksModel.load(model_path, device="cpu")
    encoder = Encoder(model, batch_size=32)
    sizes = sizes or eval_sizes(model)
    results = {"model": str(model_path), "sizes": [str(s) for s in sizes], "scores": {}, "seconds": {}}
    for name in datasets:
        start = time.time()
        results["scores"][name] = sts(encoder, name, sizes) if name in STS else retrieval(
            encoder, collections[name], sizes, passage_max_length)
        results["seconds"][name] = round(time.time() - start, 1)
        print(name, json.dumps(results["scores"][name]), flush=True)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", help="model folder (default: the default model)")
    ap.add_argument("--name", required=True)
    ap.add_argument("--datasets", nargs="+", default=["scifact", "nfcorpus"],
                    choices=list(COLLECTIONS) + list(STS))
    ap.add_argument("--passage-max-length", type=int, help="override the model's passage length")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    results = evaluate(args.model, args.datasets, args.passage_max_length)
    results["name"] = args.name
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(out.read_text()) if out.exists() else {}
    previous.setdefault("scores", {}).update(results["scores"])
    previous.setdefault("seconds", {}).update(results["seconds"])
    results.update(scores=previous["scores"], seconds=previous["seconds"])
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
