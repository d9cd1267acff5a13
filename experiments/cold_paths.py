"""What a search pays for state it does not own: the cycle collector's full pass, and BM25 postings
not yet mapped into the process.

On the DL19 pool, as the query-path benchmark loads it (the torch, ONNX and int8 searchers, one
thread):

1. a full collection (``gc.collect()``) timed with every object tracked, then after
   ``starbucks.heap.settle()`` froze them (what ``Searcher(..., freeze_heap=True)`` does);
2. BM25 alone over the judged topics, two passes, on a freshly loaded BM25 index, with and without
   ``indexes.sparse.resident`` (every page of the postings read at load): mean ms a query and the
   minor page faults of each pass;
3. each calibrated frontier plan's first search on the ONNX searcher, which has not searched yet (the
   calibration ``experiments.query_path`` left in the index folder), against the same query searched
   five times more: what a process's first search of a plan pays for its set-up (its encoder loaded,
   its exit graph joined or opened, its first run), which ``Planner.observe`` leaves out of the pace.
   Each row says whether the plan's exit graph was saved before its first search
   (``starbucks.onnx_encoder.exit_file``): where not, the search joins it (the first such search in
   a process also imports ``onnx``) and saves it. Then the same on a second, new ONNX searcher,
   whose plans open the graphs saved by then, as a later process's would.

    python -m experiments.cold_paths [--repeats 3]

Writes experiments/results/cold_paths/cold_paths.{json,md}.
"""
from __future__ import annotations

import argparse
import gc
import json
import resource
import statistics
import time
from pathlib import Path

from experiments import runtime
from experiments.datasets import COLLECTIONS
from experiments.encoders import index_for
from retrieval import Searcher
from retrieval.evaluate import judged_topics
from starbucks.heap import settle
from starbucks.model import StarbucksModel
from starbucks.topics import read_qrels, read_topics

OUT = Path(__file__).resolve().parent / "results" / "cold_paths"
NAME = "dl19-pool"
ENCODERS = ("torch", "onnx", "onnx-int8")


def collection_ms(rounds: int = 3) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        gc.collect()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def first_searches(searcher: Searcher, text: str, k: int = 10, again: int = 5) -> list[dict]:
    """Each calibrated frontier plan, cheapest first: loading the encoder it names (where not loaded
    yet), its first search of ``text``, and the median of ``again`` more."""
    from starbucks.onnx_encoder import exit_file, exits_of

    frontier = searcher.planner.frontier
    out = []
    for point in frontier.points if frontier is not None else []:
        plan = point.plan
        t = time.perf_counter()
        encoder = searcher.encoder_named(plan.encoder) if plan.sizes else None
        load = (time.perf_counter() - t) * 1000
        folder = getattr(encoder, "folder", None)
        saved = exit_file(folder, exits_of(plan.sizes)).is_file() if folder else None
        times = []
        for _ in range(1 + again):
            t = time.perf_counter()
            searcher.search(text, k=k, budget=plan)
            times.append((time.perf_counter() - t) * 1000)
        out.append({"plan": str(plan), "calibrated_ms": point.ms, "load_ms": load, "exit_graph_saved": saved,
                    "first_ms": times[0],
                    "again_median_ms": statistics.median(times[1:])})
    return out


def bm25_passes(folder: Path, texts: list[str], mapped: bool) -> list[dict]:
    """Two passes of BM25 alone (1,000 deep) over ``texts`` on a BM25 index loaded now."""
    import indexes.sparse as sparse

    real = sparse.resident
    if not mapped:
        sparse.resident = lambda array: None
    try:
        bm25 = sparse.SparseIndex(folder / sparse.FOLDER)
    finally:
        sparse.resident = real
    out = []
    for _ in range(2):
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t = time.perf_counter()
        for text in texts:
            bm25.search([text], 1000)
        ms = (time.perf_counter() - t) * 1000 / len(texts)
        out.append({"ms_per_query": ms, "minor_faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults})
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=runtime.description(__doc__))
    parser.add_argument("--repeats", type=int, default=3, help="BM25 runs of each kind, alternating")
    args = parser.parse_args(argv)
    runtime.setup(1)
    results = {"provenance": runtime.record("experiments.cold_paths", 1, argv), "collection": NAME}
    model = StarbucksModel.load(None, device="cpu")
    folder, _ = index_for(NAME, "onnx", model, 2)
    searchers = [Searcher(folder, model=model, encoder=kind, threads=1, freeze_heap=False) for kind in ENCODERS]
    gc.unfreeze()
    results["collector"] = {"objects_tracked": len(gc.get_objects()), "full_pass_ms": collection_ms(),
                            "frozen": settle(), "full_pass_ms_after_settle": collection_ms()}
    c = COLLECTIONS[NAME]
    texts = list(judged_topics(read_topics(c.topics), read_qrels(c.qrels)).values())
    results["first_searches"] = first_searches(searchers[ENCODERS.index("onnx")], texts[0])
    results["first_searches_new_searcher"] = first_searches(
        Searcher(folder, model=model, encoder="onnx", threads=1, freeze_heap=False), texts[0])
    results["bm25"] = {"queries": len(texts), "unmapped": [], "resident": []}
    for _ in range(args.repeats):
        results["bm25"]["unmapped"].append(bm25_passes(folder, texts, mapped=False))
        results["bm25"]["resident"].append(bm25_passes(folder, texts, mapped=True))
    results["load_average_at_end"] = runtime.machine(1)["load_average"]
    del searchers
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "cold_paths.json").write_text(json.dumps(results, indent=2) + "\n")
    (OUT / "cold_paths.md").write_text(markdown(results))
    print(markdown(results))


def markdown(results: dict) -> str:
    p, c, b = results["provenance"], results["collector"], results["bm25"]
    lines = [f"# Cold paths: {results['collection']}", "",
             f"`{p['command']}` at commit {p['git_commit'][:10]}; one thread; load average "
             f"{p['machine']['load_average']} at start, {results['load_average_at_end']} at end.", "",
             f"Full collection with the torch, ONNX and int8 searchers loaded: {c['objects_tracked']:,} objects "
             f"tracked, {c['full_pass_ms']:.1f} ms; after `settle()` froze {c['frozen']:,}: "
             f"{c['full_pass_ms_after_settle']:.2f} ms (median of 3).", "",
             f"BM25 alone, 1,000 deep, {b['queries']} topics, a BM25 index loaded before each run:", "",
             "| postings at load | run | pass 1 ms/query | pass 1 minor faults | pass 2 ms/query | pass 2 minor faults |",
             "|---|---|---|---|---|---|"]
    for kind in ("unmapped", "resident"):
        for i, (one, two) in enumerate(b[kind]):
            lines.append(f"| {kind} | {i + 1} | {one['ms_per_query']:.3f} | {one['minor_faults']} | "
                         f"{two['ms_per_query']:.3f} | {two['minor_faults']} |")
    for key, title in (("first_searches", "Each calibrated frontier plan's first search in the process (the ONNX "
                                          "searcher, one query), cheapest plan first:"),
                       ("first_searches_new_searcher", "The same on a second, new ONNX searcher in the same process:")):
        first = results.get(key)
        if not first:
            continue
        lines += ["", title, "",
                  "| plan | calibrated ms | encoder load ms | exit graph saved before | first search ms | "
                  "the same search again, median ms |", "|---|---|---|---|---|---|"]
        lines += [f"| {f['plan']} | {f['calibrated_ms']:.2f} | {f['load_ms']:.1f} | "
                  f"{SAVED.get(f.get('exit_graph_saved', 'unrecorded'), '')} | {f['first_ms']:.2f} | "
                  f"{f['again_median_ms']:.2f} |" for f in first]
    return "\n".join(lines) + "\n"


SAVED = {True: "yes", False: "no: joined and saved", None: "(no exit graph: BM25 alone, or torch)"}


if __name__ == "__main__":
    main()
