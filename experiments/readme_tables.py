"""Write the README's result tables from the committed results files, never by hand.

A table lives between ``<!-- table:NAME -->`` and ``<!-- /table:NAME -->`` in a markdown
file; this command replaces what is between the markers with the table generated from
``experiments/results``. ``--check`` exits 1 if a table is out of date instead of writing.

    python -m experiments.readme_tables [--check]
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from experiments import query_path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"


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


TABLES = {
    "encoders": encoder_table,
    "query_path": lambda: query_path.summary_table(RESULTS / "query_path")
    if (RESULTS / "query_path").is_dir() else "(not measured yet: `python -m experiments.query_path`)\n",
}


def render(text: str) -> str:
    for name, make in TABLES.items():
        pattern = re.compile(rf"(<!-- table:{name} -->\n).*?(<!-- /table:{name} -->)", re.S)
        text = pattern.sub(lambda m: m.group(1) + make() + m.group(2), text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a table is out of date; write nothing")
    parser.add_argument("files", nargs="*", type=Path, default=[ROOT / "README.md"])
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
