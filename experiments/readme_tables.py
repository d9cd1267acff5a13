"""Write the README's result tables from the committed results files, never by hand.

A table lives between ``<!-- table:NAME -->`` and ``<!-- /table:NAME -->`` in a markdown
file; this command replaces what is between the markers with the table generated from
``experiments/results``. ``--check`` exits 1 if a table is out of date instead of writing.

    python -m experiments.readme_tables [--check]
"""
from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
from pathlib import Path

from experiments import query_path, runtime

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
DOCUMENTS = [ROOT / "README.md", ROOT / "experiments" / "training" / "README.md"]  # files with tables


def encoder_table() -> str:
    path = RESULTS / "encoders" / "encoders.json"
    if not path.is_file():
        return "(not measured yet: `python -m experiments.encoders`)\n"
    r = json.loads(path.read_text())
    lat = r["latency_ms"]
    layers = list(lat["torch"])
    lines = ["| encoder | ms to encode one query, " + " / ".join(layers) + " layers | passages/s | "
             "largest nDCG@10 difference from torch at any size |", "|---|---|---|---|"]
    for kind in lat:
        lines.append(f"| {kind} | " + " / ".join(f"{lat[kind][l]:.2f}" for l in layers)
                     + f" | {r['passages_per_s'][kind]:.0f} | {r['choice']['largest_ndcg_difference'][kind]:.4f} |")
    load = r["provenance"]["machine"]["load_average"]
    return ("\n".join(lines) + f"\n\nOne thread for queries, {r['provenance']['machine']['threads']} for passages; "
            f"load average {load[0]} at the start. CPU default chosen from these: `{r['choice']['default']}`.\n")


def default_model_table() -> str:
    """Per-size scores of the default model beside the base model and the SRL mix, with the shares kept."""
    path = ROOT / "experiments" / "training" / "results" / "default-adaptors.json"
    if not path.is_file():
        return "(not measured yet: `python -m experiments.training.default_adaptors`)\n"
    r = json.loads(path.read_text())
    sizes = ["1x16", "2x32", "3x64", "4x128", "5x256", "6x384"]
    lines = ["| set | model | " + " | ".join(sizes) + " |", "|---|---|" + "---|" * len(sizes)]
    for name in ("scifact", "nfcorpus", "dl19", "stsb", "sickr"):
        for model, scores in r["scores"].items():
            if name in scores:
                lines.append(f"| {name} | {model} | " + " | ".join(f"{scores[name][s]:.3f}" for s in sizes) + " |")
    kept = "; ".join(f"{n} " + " / ".join(f"{100 * v:.0f}" for v in k.values()) + " %" for n, k in r["kept"].items())
    return ("\n".join(lines) + "\n\nnDCG@10 (SciFact test, NFCorpus dev, DL19 pool) and Spearman (STS-B, SICK-R "
            f"test), exact search. Share of the full size the default model keeps at 2x32 / 3x64 / 4x128 / 5x256: {kept} "
            "(targets 30 / 45 / 60 / 75 %). From `experiments/training/results/default-adaptors.json`.\n")


def compare_adaptors_table() -> str:
    """The comparison's adaptor rows beside the base model, SRL and 2DMSE, per data set (diagonal sizes)."""
    from experiments.training import compare, compare_adaptors

    folder = ROOT / "experiments" / "training" / "results" / "compare"
    methods = ["base", "2dmse", "srl"] + list(compare_adaptors.METHODS)
    results = {m: json.loads((folder / f"{m}.json").read_text()) for m in methods if (folder / f"{m}.json").is_file()}
    if not any(m in results for m in compare_adaptors.METHODS):
        return "(not measured yet: `python -m experiments.training.compare`)\n"
    sizes = ["1x16", "2x32", "3x64", "4x128", "5x256", "6x384"]
    lines = ["| set | method | " + " | ".join(sizes) + " |", "|---|---|" + "---|" * len(sizes)]
    for name in compare.TABLE_DATASETS:
        for m, r in results.items():
            scores = r["scores"].get(name)
            if scores:
                lines.append(f"| {name} | {compare.LABELS[m]} | " + " | ".join(f"{scores[s]:.3f}" for s in sizes) + " |")
    return ("\n".join(lines) + f"\n\nnDCG@10 (SciFact, NFCorpus, DL19 pool) and Spearman (STS-B, SICK-R), passages cut "
            f"to 128 tokens; every row from the same train files, {compare_adaptors.STEPS} steps, seed "
            f"{compare_adaptors.SEED}. From `experiments/training/results/compare/`.\n")


SCALE_RESULTS = ("minilm-l6-adaptors-1m-ivfpq-residual", "minilm-l6-adaptors-1m-hnsw", "minilm-l6-adaptors-10m-ivfpq",
                 "minilm-l6-adaptors-10m")  # the scale runs the README shows


def scale_table() -> str:
    """Every system of each scale run, fastest first, with recall, latency and resident bytes per document,
    and the run's comparison against HNSW32."""
    from experiments.scale import against_table

    found = [RESULTS / "scale" / f"{tag}.json" for tag in SCALE_RESULTS if (RESULTS / "scale" / f"{tag}.json").is_file()]
    if not found:
        return f"(not measured yet: `python -m experiments.scale ... --tag {SCALE_RESULTS[0]}`)\n"
    parts = []
    for path in found:
        r = json.loads(path.read_text())
        lines = ["| documents | system | recall@10 | ms/query from vectors | ms end to end | bytes/doc computed | "
                 "RSS growth bytes/doc | build s |", "|---|---|---|---|---|---|---|---|"]
        for size in r["sizes"]:
            rows = sorted(((n, s) for n, s in size["systems"].items() if "skipped" not in s),
                          key=lambda x: x[1]["single"]["ms"])
            for name, s in rows:
                lines.append(f"| {size['documents']:,} | {name} | {s['single']['recall@10']:.4f} | "
                             f"{s['single']['ms']:.2f} | {s['end_to_end_ms']:.2f} | {s['ram_bytes_per_doc']:.0f} | "
                             f"{s['rss_bytes_per_doc']:.0f} | {s['build_s']:.0f} |")
            lines += [f"| {size['documents']:,} | {n} | | | | | | skipped: {s['skipped']} |"
                      for n, s in size["systems"].items() if "skipped" in s]
        m = r["machine"]
        parts.append("\n".join(lines) + f"\n\n`{r['command']}`; {m['threads']} thread, load average "
                     f"{m['load_average']} at the start, {r.get('load_average_after')} at the end. From "
                     f"`experiments/results/scale/{path.name}` (and `.md`, with each size's profile and plot).\n")
        parts += [f"{size['documents']:,} documents. {against_table(size['against_hnsw32'])}\n"
                  for size in r["sizes"] if size.get("against_hnsw32")]
    return "\n".join(parts)


def int8_tiers_table() -> str:
    """The 8-bit rerank tier measurement at 1M documents."""
    from experiments import int8_tiers

    path = RESULTS / "int8_tiers" / "1000k.json"
    if not path.is_file():
        return "(not measured yet: `python -m experiments.int8_tiers`)\n"
    results = json.loads(path.read_text())
    p = results["provenance"]
    return (int8_tiers.table(results) + f"\n`{p['command']}`; one thread, load average "
            f"{p['machine']['load_average'][0]} at the start. From `experiments/results/int8_tiers/1000k.json`.\n")


def summary_of(name: str):
    """The README table of benchmark ``experiments.NAME``: its ``summary_table`` of its results file
    ``experiments/results/NAME/NAME.json``."""
    def table() -> str:
        path = RESULTS / name / f"{name}.json"
        if not path.is_file():
            return f"(not measured yet: `python -m experiments.{name}`)\n"
        return importlib.import_module(f"experiments.{name}").summary_table(json.loads(path.read_text()))
    return table


TABLES = {
    "scale": scale_table,
    "int8_tiers": int8_tiers_table,
    "compare_adaptors": compare_adaptors_table,
    "default_model": default_model_table,
    "encoders": encoder_table,
    "noise_floor": summary_of("noise_floor"),
    "frontier_choice": summary_of("frontier_choice"),
    "spell_span": summary_of("spell_span"),
    "topic_pace": summary_of("topic_pace"),
    "query_path_history": summary_of("query_path_history"),
    "overrun": summary_of("overrun"),
    "query_path": lambda: query_path.summary_table(RESULTS / "query_path")
    if (RESULTS / "query_path").is_dir() else "(not measured yet: `python -m experiments.query_path`)\n",
}


def render(text: str) -> str:
    for name, make in TABLES.items():
        pattern = re.compile(rf"(<!-- table:{name} -->\n).*?(<!-- /table:{name} -->)", re.S)
        text = pattern.sub(lambda m: m.group(1) + make() + m.group(2), text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=runtime.description(__doc__))
    parser.add_argument("--check", action="store_true", help="exit 1 if a table is out of date; write nothing")
    parser.add_argument("files", nargs="*", type=Path, default=DOCUMENTS)
    args = parser.parse_args(argv)
    stale = []
    for path in args.files:
        old = path.read_text()
        new = render(old)
        if new != old:
            stale.append(path)
            if not args.check:
                path.write_text(new)
    if args.check and stale:
        print("out of date: " + ", ".join(str(p) for p in stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
