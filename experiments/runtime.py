"""What every benchmark does first: limit threads, quiet transformers; and the machine it ran on."""
from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Callable


def setup(threads: int | None) -> None:
    """Limit torch, FAISS and child processes (OMP_NUM_THREADS) to ``threads``; None keeps every core."""
    import faiss
    import torch
    import transformers

    if threads:
        torch.set_num_threads(threads)
        faiss.omp_set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)
    transformers.logging.set_verbosity_error()


def machine(threads: int | None) -> dict:
    """Platform, cores, threads used and the load average now (other work on the machine shows there)."""
    return {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": threads,
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def record(module: str, threads: int | None, argv: list[str] | None = None) -> dict:
    """What every results file starts with: the command (paths relative to the working folder),
    the git commit, package versions and the machine; see starbucks.provenance."""
    from starbucks.provenance import provenance

    found = provenance(["python", "-m", module, *(sys.argv[1:] if argv is None else argv)])
    return {"command": " ".join(found.pop("command")), **found, "machine": machine(threads)}


def write_results(out: Path, stem: str, results: dict, markdown: Callable[[dict], str]) -> None:
    """Record the load average at the end, write ``stem``.json and ``stem``.md into ``out`` and print the
    markdown (a one-thread benchmark's last step)."""
    results["load_average_at_end"] = machine(1)["load_average"]
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    text = markdown(results)
    (out / f"{stem}.md").write_text(text)
    print(text)


def heading(results: dict, title: str, note: str) -> list[str]:
    """A one-thread benchmark's markdown opening: its title, then its command, commit and load, then ``note``."""
    p = results["provenance"]
    return [f"# {title}", "", f"`{p['command']}` at commit {p['git_commit'][:10]}; one thread; load average "
            f"{p['machine']['load_average']} at start, {results['load_average_at_end']} at end. {note}", ""]


def table_source(results: dict, path: str) -> str:
    """A README table's last line: the command, commit and load it comes from, and its results file."""
    p = results["provenance"]
    return (f"`{p['command']}` at {p['git_commit'][:7]}; one thread, load average "
            f"{p['machine']['load_average'][0]} at the start. From `{path}`.\n")


def over_collections(module: str, argv: list[str] | None, names: list[str], run: Callable, out: Path, stem: str,
                     markdown: Callable[[dict], str], **settings) -> None:
    """A one-thread benchmark over collections with the shipped model: the provenance and ``settings``,
    then ``run(name, model)`` for each collection (``results["collections"]``), written by ``write_results``."""
    from starbucks.model import StarbucksModel

    setup(1)
    results = {"provenance": record(module, 1, argv), **settings}
    model = StarbucksModel.load(None, device="cpu")
    results["collections"] = [run(name, model) for name in names]
    write_results(out, stem, results, markdown)


def description(doc: str) -> str:
    """A benchmark's ``--help`` description: its docstring's first paragraph, on one line."""
    return " ".join(doc.split("\n\n")[0].split())


def collections_parser(doc: str, datasets: tuple[str, ...] = ("scifact", "nfcorpus-dev", "dl19-pool")):
    """A benchmark's argument parser: its docstring's first paragraph (``description``), and ``--datasets``."""
    import argparse

    parser = argparse.ArgumentParser(description=description(doc))
    parser.add_argument("--datasets", nargs="+", default=list(datasets))
    return parser


def plan_rows(results: dict, row: Callable[[dict, dict], str]) -> list[str]:
    """``row(collection, plan)`` for every plan of every collection in ``results``, in order."""
    return [row(c, q) for c in results["collections"] for q in c["plans"]]
