"""Batched rescoring: ``Index.rescore_batch`` over a batch of queries against the same queries one at a time.

Synthetic full-size vectors (``experiments.synthetic``, fitted to a real index) at a small and a large
corpus size; each query gets its own random candidates (as shortlists return them). Three ways: the
batch as ``rescore_batch`` does it (the union of the rows read once when the batch asks for at least
as many rows as there are documents, else each query on its own), the batch always through the
union (``indexes.index.UNION_ROWS = 0``: what every batch did before), and the queries one at a time.
One thread, the page cache warm, the three alternating so drift on the machine hits them alike.

    python -m experiments.rescore_batch --fit-index experiments/indexes/scifact-onnx-24d2bb963d63 --threads 1
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

import numpy as np

from experiments import runtime
from experiments.datasets import ROOT
from experiments.synthetic import Generator, write_index
import indexes.index
from indexes import Index

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "rescore_batch"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=runtime.description(__doc__))
    p.add_argument("--fit-index", type=Path, required=True)
    p.add_argument("--docs", type=int, nargs="+", default=[20_000, 1_000_000])
    p.add_argument("--candidates", type=int, nargs="+", default=[1000, 10000])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--scratch", type=Path, default=ROOT / "experiments" / "indexes" / "rescore-batch")
    p.add_argument("--tag", default="default")
    args = p.parse_args(argv)
    runtime.setup(args.threads)
    real = Index(args.fit_index)
    full = real.sizes[-1]
    generator = Generator.fit(real, clusters=256)
    result = {**runtime.record("experiments.rescore_batch", args.threads, argv), "size": str(full), "batch": args.batch,
              "rows": []}
    rng = np.random.default_rng(0)
    union = indexes.index.UNION_ROWS
    for n in args.docs:
        shutil.rmtree(args.scratch, ignore_errors=True)
        index = Index(write_index(generator, real, args.scratch, n, [], sizes=[full]))
        np.asarray(index.vectors[full]).sum()  # warm: the file in the page cache
        queries = rng.standard_normal((args.batch, full.dim)).astype(np.float32)
        for c in (c for c in args.candidates if c < n):
            rows = [np.sort(rng.choice(n, c, replace=False)) for _ in range(args.batch)]
            times = {"batch": [], "batch, union always": [], "one at a time": []}
            for r in range(args.repeats):
                for how in (list(times) if r % 2 == 0 else list(times)[::-1]):
                    t = time.perf_counter()
                    if how.startswith("batch"):
                        indexes.index.UNION_ROWS = 0 if how == "batch, union always" else union
                        index.rescore_batch(full, queries, rows)
                        indexes.index.UNION_ROWS = union
                    else:
                        for q, one in zip(queries, rows):
                            index.rescore(full, q, one)
                    times[how].append((time.perf_counter() - t) * 1000 / args.batch)
            row = {"documents": n, "candidates": c, **{f"{how} ms/query": statistics.median(t) for how, t in times.items()}}
            row["batch / one at a time"] = row["batch ms/query"] / row["one at a time ms/query"]
            row["union always / one at a time"] = row["batch, union always ms/query"] / row["one at a time ms/query"]
            print(row, flush=True)
            result["rows"].append(row)
        del index
    shutil.rmtree(args.scratch, ignore_errors=True)
    result["load_average_after"] = runtime.machine(args.threads)["load_average"]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{args.tag}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# Batched rescoring at {full}, batches of {args.batch}", "", f"`{result['command']}`", "",
             f"Commit {result['git_commit']}; machine: {result['machine']}; load after: {result['load_average_after']}. "
             f"Median of {args.repeats} passes, ms per query.", "",
             "| documents | candidates a query | batch | batch, union always | one at a time | batch / one at a time "
             "| union always / one at a time |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['documents']:,} | {r['candidates']:,} | {r['batch ms/query']:.3f} | "
              f"{r['batch, union always ms/query']:.3f} | {r['one at a time ms/query']:.3f} "
              f"| {r['batch / one at a time']:.2f} | {r['union always / one at a time']:.2f} |" for r in result["rows"]]
    (OUT / f"{args.tag}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
