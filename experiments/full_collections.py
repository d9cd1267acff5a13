"""The full collections: MS MARCO passage dev, TREC DL 2019/2020 over all 8.8M passages, and BEIR.

One command per collection runs the frontier benchmark (``experiments.frontier``) on it through
ir_datasets, which downloads the data on first use. Meant for a machine with the data, a GPU to
encode the corpus (8.8M passages: hours on one GPU, weeks on 2 CPU cores) and RAM for the
full-size baselines (HNSW and IVF-PQ+refine hold 8.8M x 384 float32 vectors, about 14 GB each).
Budgets are calibrated on held-out topics: MS MARCO train for dev, dev (small) for DL 2019/2020,
a BEIR set's train split where it has one.

    python -m experiments.full_collections --list           # every command
    python -m experiments.full_collections dl19 --model M   # one collection
    python -m experiments.full_collections dl19-pool scifact nfcorpus-dev --threads 1   # the local ones

The local collections (``dl19-pool``, ``scifact``, ``nfcorpus-dev``) run the same way here.
"""
from __future__ import annotations

import argparse

from experiments import frontier, runtime
from experiments.datasets import COLLECTIONS

# Indexing settings for a GPU: large encoding batches, large resumable chunks.
GPU_INDEX_ARGS = ["--batch-size", "256", "--chunk-size", "65536"]
FULL = [name for name in COLLECTIONS if name in ("msmarco-dev", "dl19", "dl20") or name.startswith("beir-")]
LOCAL = ["dl19-pool", "scifact", "nfcorpus-dev"]


def command(name: str, model: str | None, threads: int | None, tag: str) -> list[str]:
    """The frontier benchmark's arguments for one collection."""
    argv = ["--datasets", name, "--tag", tag]
    if model:
        argv += ["--model", model]
    if threads:
        argv += ["--threads", str(threads)]
    if name in FULL:
        argv += ["--index-args", *GPU_INDEX_ARGS]
    return argv


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=runtime.description(__doc__))
    p.add_argument("collections", nargs="*", metavar="COLLECTION", help=f"one or more of: {', '.join(FULL + LOCAL)}")
    p.add_argument("--list", action="store_true", help="print the command for every collection and stop")
    p.add_argument("--model", help="model folder or hub id (default: the shipped default)")
    p.add_argument("--threads", type=int, help="torch and FAISS threads (default: all cores)")
    p.add_argument("--tag", default="default", help="names the index folders and the results files")
    args = p.parse_args(argv)
    unknown = [c for c in args.collections if c not in FULL + LOCAL]
    if unknown:
        p.error(f"unknown collection {unknown[0]!r}: choose from {', '.join(FULL + LOCAL)}")
    if args.list or not args.collections:
        for name in FULL + LOCAL:
            print("python -m experiments.frontier " + " ".join(command(name, args.model, args.threads, args.tag)))
        return
    for name in args.collections:
        frontier.main(command(name, args.model, args.threads, args.tag))


if __name__ == "__main__":
    main()
