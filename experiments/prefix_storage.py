"""Prefix storage: a layer's narrower sizes read from its widest stored vector, against separate files.

The same synthetic vectors (``experiments.synthetic``, fitted to a real index; layer 6 only) are built
twice with ``indexes.build_index(vectors=...)``: with prefixes (the default: ``6x384.npy`` plus a float32
unit-length factor per narrower size) and with ``prefixes=False`` (one file per size). Then, one thread,
the two indexes alternating query by query so drift on the machine hits both alike:

- rescoring: ``Index.rescore_batch`` of one query's candidates (random rows, as a shortlist returns
  them) at each narrower size, warm (the files in the page cache), and cold (``posix_fadvise(DONTNEED)``
  before each query) for the first ``--candidates`` count;
- scanning: ``Index.scan`` of every document at the narrowest size;
- bytes on disk per document.

    python -m experiments.prefix_storage --fit-index experiments/indexes/scifact-onnx-24d2bb963d63 \\
        --docs 1000000 --threads 1
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
from experiments.scale import drop_cache
from experiments.synthetic import Generator
from indexes import Index, build_index
from starbucks.sizes import Size, parse_sizes

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "prefix_storage"


def write_vectors(generator: Generator, folder: Path, n: int, sizes: list[Size]) -> Path:
    """A ``--vectors`` folder of ``n`` synthetic documents at ``sizes``."""
    from numpy.lib.format import open_memmap

    folder.mkdir(parents=True)
    (folder / "docids.txt").write_text("".join(f"s{i}\n" for i in range(n)))
    out = {s: open_memmap(folder / f"{s}.npy", mode="w+", dtype=np.float16, shape=(n, s.dim)) for s in sizes}
    row = 0
    for block in generator.draw(n, sizes=sizes):
        m = len(block[sizes[0]])
        for s in sizes:
            out[s][row : row + m] = block[s]
        row += m
    for m in out.values():
        m.flush()
    return folder


def drop(index: Index) -> None:
    """Every vectors file of ``index`` unmapped from this process and dropped from the page cache
    (``experiments.scale.drop_cache``: a page still mapped would stay cached): the next reads go to disk."""
    maps = {id(m): m for m in (getattr(v, "wide", v) for v in index.vectors.values())}
    drop_cache(list(maps.values()))


def warm(index: Index) -> None:
    for f in (index.path / "vectors").iterdir():
        with open(f, "rb") as fh:
            while fh.read(1 << 24):
                pass


def paired(indexes: dict[str, Index], run, queries: int, cold: bool = False) -> dict:
    """Median ms of ``run(index, i)`` over ``queries`` queries per index, the indexes alternating."""
    times = {name: [] for name in indexes}
    for i in range(queries):
        for name, index in (indexes.items() if i % 2 == 0 else reversed(indexes.items())):
            if cold:
                drop(index)
            t = time.perf_counter()
            run(index, i)
            times[name].append((time.perf_counter() - t) * 1000)
    out = {name: {"median_ms": statistics.median(t), "mean_ms": statistics.fmean(t), "min_ms": min(t)}
           for name, t in times.items()}
    out["prefix / separate"] = out["prefixes"]["median_ms"] / out["separate"]["median_ms"]
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=runtime.description(__doc__))
    p.add_argument("--fit-index", type=Path, required=True, help="a real index the generator is fitted to")
    p.add_argument("--docs", type=int, default=1_000_000)
    p.add_argument("--sizes", default="6x32,6x64,6x128,6x256,6x384", help="layer-6 sizes stored (default: %(default)s)")
    p.add_argument("--candidates", type=int, nargs="+", default=[1000, 10000], help="rows rescored per query")
    p.add_argument("--queries", type=int, default=40, help="queries per measurement and index (default: %(default)s)")
    p.add_argument("--scan-queries", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--scratch", type=Path, default=ROOT / "experiments" / "indexes" / "prefix-storage")
    p.add_argument("--tag", default="default")
    args = p.parse_args(argv)
    runtime.setup(args.threads)
    sizes = parse_sizes(args.sizes)
    full = max(sizes)
    real = Index(args.fit_index)
    result = {**runtime.record("experiments.prefix_storage", args.threads, argv), "fit_index": str(args.fit_index),
              "documents": args.docs, "sizes": [str(s) for s in sizes]}
    shutil.rmtree(args.scratch, ignore_errors=True)
    print("drawing vectors", flush=True)
    vectors = write_vectors(Generator.fit(real, clusters=256), args.scratch / "vectors", args.docs, sizes)
    built, build_s = {}, {}
    for name, prefixes in (("prefixes", True), ("separate", False)):
        t = time.perf_counter()
        built[name] = Index(build_index(None, args.scratch / name, model=real.manifest.model_name, vectors=vectors,
                                        shortlist=str(min(sizes)), rerank=args.sizes, prefixes=prefixes, threads=args.threads))
        build_s[name] = time.perf_counter() - t
    shutil.rmtree(vectors)
    result["build_s"] = build_s
    result["disk_bytes_per_doc"] = {
        name: sum(f.stat().st_size for f in (i.path / "vectors").iterdir()) / len(i) for name, i in built.items()}
    rng = np.random.default_rng(0)
    qs = rng.standard_normal((max(args.queries, args.scan_queries), full.dim)).astype(np.float32)
    rows = {c: [np.sort(rng.choice(args.docs, c, replace=False)) for _ in range(args.queries)]
            for c in args.candidates}
    result["rescore"] = {}
    for state in ("warm", "cold"):
        if state == "warm":
            for i in built.values():
                warm(i)
        for c in (args.candidates if state == "warm" else args.candidates[:1]):  # cold: ~0.1 ms a row
            for s in sizes:
                if s == full:
                    continue
                key = f"{state} {s} x {c}"
                print(" ", key, flush=True)
                result["rescore"][key] = paired(
                    built, lambda index, i, s=s, c=c: index.rescore(s, qs[i, : s.dim], rows[c][i]), args.queries,
                    cold=state == "cold")
    for i in built.values():
        warm(i)
    narrow = min(sizes)
    result["scan"] = {f"warm {narrow}": paired(built, lambda index, i: index.scan(narrow, qs[i : i + 1, : narrow.dim], 10),
                                               args.scan_queries)}
    result["load_average_after"] = runtime.machine(args.threads)["load_average"]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{args.tag}.json").write_text(json.dumps(result, indent=2) + "\n")
    (OUT / f"{args.tag}.md").write_text(table(result))
    print(table(result))
    shutil.rmtree(args.scratch)


def table(result: dict) -> str:
    lines = [f"# Prefix storage: {result['documents']:,} documents", "", f"`{result['command']}`", "",
             f"Commit {result['git_commit']}; machine: {result['machine']}; load after: {result['load_average_after']}.",
             "", "| | prefixes | separate files | prefixes / separate |", "|---|---|---|---|",
             "| disk bytes/doc | {:.0f} | {:.0f} | {:.2f} |".format(
                 result["disk_bytes_per_doc"]["prefixes"], result["disk_bytes_per_doc"]["separate"],
                 result["disk_bytes_per_doc"]["prefixes"] / result["disk_bytes_per_doc"]["separate"])]
    for group in ("rescore", "scan"):
        for key, r in result[group].items():
            lines.append(f"| {group} {key}: median ms | {r['prefixes']['median_ms']:.3f} | "
                         f"{r['separate']['median_ms']:.3f} | {r['prefix / separate']:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
