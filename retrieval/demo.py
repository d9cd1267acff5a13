"""The demo: one screen for someone who has never heard of 2D Matryoshka embeddings.

It indexes the bundled CACM collection (3,204 computer-science abstracts, 52 judged queries),
measures quality (nDCG@10) against speed (ms per query) for every stored size, a few cascades
and BM25 (and hybrid plans where the planner has them), prints that as a small table, saves
it as a plot, shows one search with titles, and says what to run next.
"""
from __future__ import annotations

import sys
import textwrap
from pathlib import Path

from indexes import Index, build_index
from indexes.manifest import MANIFEST
from retrieval.bm25 import BM25
from retrieval.evaluate import evaluate_searcher, judged_topics, make_row, parse_measures, timed_rankings
from retrieval.plan import Plan, Stage
from retrieval.searcher import Searcher
from starbucks.corpus import iter_json_objects
from starbucks.model import StarbucksModel
from starbucks.topics import read_qrels, read_topics

DEMO_DATA = Path(__file__).resolve().parent.parent / "starbucks" / "data" / "cacm"
DEMO_QUERY = "parallel algorithms for sorting"
HYBRID = "bm25:1000,{full}:10,fuse=rrf"  # a plan form the planner may accept: included only if it parses

INTRO = """\
# Starbucks retrieval in one screen

One model, many embeddings. A Starbucks model is trained so that the output of each of its
layers, cut to its first few dimensions, is a usable embedding of its own. A SIZE names one:
6x384 is layer 6, all 384 dimensions (the full embedding); 6x32 is layer 6 cut to 32
dimensions (12x smaller, faster to search, less accurate); 3x64 stops after 3 layers.

A PLAN chains sizes into a cascade: 6x32:200,6x384:10 finds the 200 best documents with the
cheap 6x32 vectors, then re-scores only those 200 with the full 6x384 vectors and keeps 10.
A cascade aims at the quality of the large size for close to the cost of the small one.
Give `starbucks search` a latency budget (--budget 20, in ms) and it picks the plan."""


def run_demo(out: Path, progress: bool = True, model=None, encoder: str = "auto", threads: int | None = None,
             device: str | None = None) -> str:
    """Build (or reuse) the demo index and return the report (markdown-ish text for a terminal).

    ``progress``: one line per step on stderr (no progress bars).
    """
    def step(text: str) -> None:
        if progress:
            print(text, file=sys.stderr, flush=True)

    out = Path(out)
    model = model if isinstance(model, StarbucksModel) else StarbucksModel.load(model, device=device)
    hybrid = _hybrid_plan(model)
    if (out / MANIFEST).is_file() and Index(out).manifest.model_fingerprint == model.fingerprint():
        step(f"[1/3] reusing the CACM index in {out}")
    else:
        step("[1/3] indexing CACM: 3,204 abstracts, every size in one pass (a minute or two on a laptop CPU)")
        build_index(DEMO_DATA, out, model=model, overwrite=out.exists(), progress=False, encoder=encoder,
                    threads=threads, bm25=hybrid is not None)
    searcher = Searcher(out, model=model, encoder=encoder, threads=threads)
    topics, qrels = read_topics(DEMO_DATA), read_qrels(DEMO_DATA / "qrels" / "test.tsv")
    judged = judged_topics(topics, qrels)
    measures = parse_measures(["nDCG@10"])
    systems = demo_systems(searcher, hybrid)
    step(f"[2/3] timing {len(systems) + 1} systems on {len(judged)} judged queries, one query at a time")
    rows = []
    for label, what, plan in systems:
        try:
            row = evaluate_searcher(searcher, topics, qrels, plan, measures, progress=False)
        except Exception as e:  # a hybrid plan the searcher cannot run yet: leave it out, say why
            step(f"      (left out {plan}: {e})")
            continue
        rows.append((label, what, row))
    bm25 = BM25(DEMO_DATA, progress=False)
    rankings, latencies, wall = timed_rankings(judged, lambda qs: bm25.search_batch(qs, 10), 1, "BM25", False)
    rows.append(("BM25", "word matching (bm25s), no model", make_row("BM25", rankings, latencies, wall, qrels, measures, 1)))
    step("[3/3] one search")
    plot = save_plot(rows, out.with_name(out.name + "-frontier.png"))
    return "\n\n".join([INTRO, frontier_table(rows, len(judged), searcher), verdict(rows), plot,
                        one_search(searcher), next_commands(out)]) + "\n"


def _hybrid_plan(model) -> str | None:
    text = HYBRID.format(full=f"{model.num_layers}x{model.hidden_size}")
    try:
        Plan.parse(text)
    except (ValueError, TypeError):
        return None
    return text


def demo_systems(searcher: Searcher, hybrid: str | None) -> list[tuple[str, str, Plan]]:
    """(label, what it does, plan): every stored size exhaustively, then cascades (and a hybrid)."""
    manifest = searcher.index.manifest
    full = manifest.sizes[-1]
    systems = [(str(s), f"every document at size {s}" + (" (full)" if s == full else ""), Plan.exhaustive(s, 10))
               for s in manifest.sizes]
    for s in manifest.shortlist:
        systems.append((f"{s} -> {full}", f"200 best at {s}, re-scored at {full}", Plan([Stage(s, 200), Stage(full, 10)])))
    smallest, widest = min(manifest.shortlist, key=lambda s: (s.dim, s.layer)), max(manifest.shortlist, key=lambda s: (s.dim, s.layer))
    if smallest != widest:
        systems.append((f"{smallest} -> {widest} -> {full}", f"1000 at {smallest}, 100 at {widest}, 10 at {full}",
                        Plan([Stage(smallest, 1000), Stage(widest, 100), Stage(full, 10)])))
    if hybrid is not None:
        systems.append(("hybrid", "BM25 and the full size, fused (RRF)", Plan.parse(hybrid)))
    return systems


def frontier_table(rows, queries: int, searcher: Searcher) -> str:
    """Rows by speed; a star marks the frontier: nothing faster is as good."""
    ordered = sorted(rows, key=lambda r: r[2].mean_ms)
    best = -1.0
    lines = [f"## Quality against speed on CACM ({queries} queries, model {Path(searcher.index.manifest.model_name).name}, "
             f"this machine)", "",
             "| system | what it does | nDCG@10 | ms/query | frontier |", "|---|---|---|---|---|"]
    for label, what, row in ordered:
        quality = row.metrics["nDCG@10"]
        star = "*" if quality > best else ""
        best = max(best, quality)
        lines.append(f"| {label} | {what} | {quality:.3f} | {row.mean_ms:.1f} | {star} |")
    lines.append("\nnDCG@10: 0 to 1, how well the top 10 are ordered (higher is better). "
                 "* = on the frontier: no faster system in the table is as good.")
    return "\n".join(lines)


def verdict(rows) -> str:
    """What the table says, in words, including when BM25 wins."""
    dense = [(label, row) for label, _, row in rows if label not in ("BM25", "hybrid")]
    bm25 = next(row for label, _, row in rows if label == "BM25")
    best_label, best = max(dense, key=lambda x: x[1].metrics["nDCG@10"])
    cascades = [(label, row) for label, row in dense if "->" in label]
    full = dense[len([r for r in dense if "->" not in r[0]]) - 1]
    text = [f"Best embedding system: {best_label} (nDCG@10 {best.metrics['nDCG@10']:.3f}, {best.mean_ms:.1f} ms/query)."]
    if cascades:
        label, row = max(cascades, key=lambda x: x[1].metrics["nDCG@10"])
        text.append(f"The best cascade, {label}, reaches {row.metrics['nDCG@10']:.3f} against the full size's "
                    f"{full[1].metrics['nDCG@10']:.3f}, at {row.mean_ms:.1f} against {full[1].mean_ms:.1f} ms/query.")
    if bm25.metrics["nDCG@10"] > best.metrics["nDCG@10"]:
        text.append(f"BM25 wins here ({bm25.metrics['nDCG@10']:.3f}): CACM's queries and abstracts share exact technical "
                    f"words, and this small model was not trained on such text. Dense retrieval pays off on "
                    f"paraphrases and on collections like its training data; measure yours with `starbucks evaluate`.")
    return textwrap.fill(" ".join(text), 100)


def save_plot(rows, path: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "(no plot: matplotlib is not installed; pip install matplotlib to get one)"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, _, row in rows:
        kind = "BM25" if label in ("BM25", "hybrid") else ("cascade" if "->" in label else "one size")
        marker = {"BM25": "s", "cascade": "^", "one size": "o"}[kind]
        ax.scatter(row.mean_ms, row.metrics["nDCG@10"], marker=marker)
        ax.annotate(label, (row.mean_ms, row.metrics["nDCG@10"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("ms per query (one at a time, this machine)")
    ax.set_ylabel("nDCG@10")
    ax.set_title("CACM: quality against speed (o one size, ^ cascade, s BM25)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return f"Plot saved to {path}"


def one_search(searcher: Searcher, k: int = 5) -> str:
    """The demo query with titles and a snippet of each hit."""
    manifest = searcher.index.manifest
    full = manifest.sizes[-1]
    widest = max(manifest.shortlist, key=lambda s: (s.dim, s.layer))
    result = searcher.search(DEMO_QUERY, k=k, budget=Plan([Stage(widest, 200), Stage(full, k)]))
    wanted = set(result.docids)
    docs = {}
    for _, obj in iter_json_objects(DEMO_DATA / "corpus.jsonl"):
        if obj["_id"] in wanted:
            docs[obj["_id"]] = (obj.get("title") or "", obj.get("text") or "")
    lines = [f"## One search: {DEMO_QUERY!r} with plan {result.plan} ({result.total_ms:.1f} ms)", ""]
    for rank, (docid, score) in enumerate(zip(result.docids, result.scores), 1):
        title, text = docs.get(docid, ("", ""))
        lines.append(f"{rank}. {docid}  {title}  (score {score:.3f})")
        if text:
            lines.append("   " + textwrap.shorten(text, 110, placeholder=" ..."))
    return "\n".join(lines)


def shown(path: Path) -> Path:
    """``path`` as a command typed here names it: relative to the working folder where it lies inside it."""
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


def next_commands(out: Path) -> str:
    """The commands to run next, with paths that work from the working folder."""
    return "\n".join([
        "## Next",
        f"starbucks search {out} \"your query\" --budget 20           # a plan chosen for 20 ms per query",
        f"starbucks calibrate {out} --topics {shown(DEMO_DATA)} --qrels {shown(DEMO_DATA / 'qrels' / 'test.tsv')}"
        "   # measure plans; budgets then pick from the measured frontier",
        "starbucks index YOUR-CORPUS --out my-index                  # a BEIR folder, .jsonl, .tsv or irds:ID",
        "starbucks evaluate my-index --topics Q --qrels R --all-sizes   # every size against your judgements",
        "starbucks --help                                            # every command",
    ])
