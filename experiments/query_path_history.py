"""Every committed run of the query-path benchmark, read from its results files' git history: whether
its budgets held and its 5x target was met, run by run, so that a record is counted, not recalled.

A run is the collection results that share one code commit and command (``experiments.query_path``
writes one file per collection; a commit that only rewrote a file, keeping its provenance, adds no
run).
Each row gives the code commit the run measured, the commit that brought its results in, and per
collection: the budgets broken on the evaluation and on the calibration topics (a mean over 1.1x its
budget, listed with that ratio and whether the plan was BM25 alone), the highest mean over its budget
of any budget, and the fastest plan within 1 % of exhaustive full size's speed-up over today's path
(the 5x target).

    python -m experiments.query_path_history

Writes experiments/results/query_path_history/query_path_history.{json,md}; run it after committing a
query-path run's results.
"""
from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

from experiments import runtime
from retrieval import Plan

ROOT = Path(__file__).resolve().parents[1]
RESULTS = "experiments/results/query_path"  # where query_path writes, relative to the repository
OUT = ROOT / "experiments" / "results" / "query_path_history"
TOPIC_SETS = {"budgets": "evaluation", "budgets_on_calibration_topics": "calibration"}
RECENT = 10  # runs the README lists


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def budgets(rows: list[dict]) -> dict:
    """One topic set's budget rows: those broken (budget, mean over budget, whether BM25 alone) and the
    highest mean over budget; refused budgets (no plan) are left out."""
    ran = [(r, r["mean_ms"] / r["budget_ms"]) for r in rows if r.get("plan")]
    broken = [{"budget_ms": r["budget_ms"], "x": round(x, 3), "bm25_alone": not Plan.parse(r["plan"]).sizes}
              for r, x in ran if not r["holds"]]
    return {"budgets": len(ran), "broken": broken, "worst_x": round(max(x for _, x in ran), 3) if ran else None}


def collection(result: dict) -> dict:
    """What the history keeps of one collection's results."""
    s = result["summary"]
    fastest = s.get("fastest_within_1pct") or {}
    return {"collection": result["collection"], "today_ms": s["today"]["mean_ms"],
            "fastest_within_1pct": fastest.get("system"), "x_today": fastest.get("x_today"),
            "reached": fastest.get("reached"), "hybrid_beats_both": (s.get("hybrid") or {}).get("beats_both"),
            "warnings": (None if "planner_warnings" not in result  # recorded since 76d8c42
                         else sum(len(said) for said in result["planner_warnings"].values())),
            **{topics: budgets(result[key]) for key, topics in TOPIC_SETS.items() if key in result}}


def runs(repo: Path = ROOT) -> list[dict]:
    """The runs in the order their results were committed."""
    found: dict[tuple, dict] = {}
    seen = set()
    for line in git(repo, "log", "--reverse", "--format=%H %cs", "--", RESULTS).splitlines():
        commit, date = line.split()
        changed = git(repo, "diff-tree", "--root", "--no-commit-id", "--name-only", "-r", commit, "--", RESULTS)
        for path in changed.split():
            if not path.endswith(".json"):
                continue
            try:
                data = json.loads(git(repo, "show", f"{commit}:{path}"))
            except subprocess.CalledProcessError:  # the commit deleted it
                continue
            if "summary" not in data.get("result", {}):
                continue
            p = data["provenance"]
            identity = json.dumps([p, data["result"]["collection"]], sort_keys=True)
            if identity in seen:  # rewritten, not rerun
                continue
            seen.add(identity)
            # A run that wrote one collection's file before the next began read its own results as
            # uncommitted changes: the commit, not "-dirty", names the code it measured.
            code = p["git_commit"].removesuffix("-dirty")
            run = found.setdefault((code, p["command"]), {"code_commit": code, "command": p["command"],
                                         "results_commit": commit, "date": date, "collections": []})
            run["collections"].append(collection(data["result"]))
    return [dict(run, number=i + 1, **verdict(run)) for i, run in enumerate(found.values())]


def verdict(run: dict) -> dict:
    """A run's verdicts over its collections: every budget held on every topic set it ran; the 5x target
    met on every collection; the hybrid target met on every collection that reports it."""
    sets = [c[t] for c in run["collections"] for t in TOPIC_SETS.values() if t in c]
    hybrid = [c["hybrid_beats_both"] for c in run["collections"] if c["hybrid_beats_both"] is not None]
    worst = [s["worst_x"] for s in sets if s["worst_x"] is not None]
    said = [c["warnings"] for c in run["collections"] if c.get("warnings") is not None]
    return {"broken": sum(len(s["broken"]) for s in sets), "every_budget_held": not any(s["broken"] for s in sets),
            "worst_x": max(worst) if worst else None,
            "target_5x_met": all(c["reached"] for c in run["collections"]),
            "hybrid_met": all(hybrid) if hybrid else None, "warnings": sum(said) if said else None}


def _broken(run: dict) -> str:
    parts = [f"{c['collection']} ({t} topics) {b['budget_ms']:g} ms: {b['x']:.2f}x"
             f"{' (BM25 alone)' if b['bm25_alone'] else ''}"
             for c in run["collections"] for t in TOPIC_SETS.values() if t in c for b in c[t]["broken"]]
    return "; ".join(parts) or "none"


def _yes(value) -> str:
    return "n/a" if value is None else "yes" if value else "no"


def run_rows(listed: list[dict]) -> list[str]:
    lines = ["| run | code at | results in | date | budgets broken (collection, topic set, budget, mean / budget) | "
             "worst mean / budget | fastest within 1 %, x today | 5x met | hybrid met | planner warnings |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in listed:
        x = " / ".join(f"{c['collection']} {c['x_today']:.2f}x" for c in r["collections"] if c["x_today"] is not None)
        worst = "" if r["worst_x"] is None else f"{r['worst_x']:.3f}"
        lines.append(f"| {r['number']} | {r['code_commit'][:7]} | {r['results_commit'][:7]} | {r['date']} | "
                     f"{_broken(r)} | {worst} | {x} | {_yes(r['target_5x_met'])} | {_yes(r['hybrid_met'])} | "
                     f"{'n/a' if r['warnings'] is None else r['warnings']} |")
    return lines


def counts(listed: list[dict]) -> str:
    held = sum(r["every_budget_held"] for r in listed)
    met = sum(r["target_5x_met"] for r in listed)
    return f"{held} of {len(listed)} held every budget; {met} of {len(listed)} met 5x on every collection they ran"


def markdown(results: dict) -> str:
    listed = results["runs"]
    return "\n".join(["# Query-path runs so far", "",
                      f"`{results['command']}` at {results['git_commit'][:10]}, from the git history of "
                      f"`{RESULTS}`. Of {len(listed)} runs, {counts(listed)}.", ""] + run_rows(listed)) + "\n"


def summary_table(results: dict) -> str:
    """The README's table: the last ``RECENT`` runs, and the counts over them and over every run."""
    listed = results["runs"]
    recent = listed[-RECENT:]
    return ("\n".join(run_rows(recent)) + f"\n\nThe last {len(recent)} runs: {counts(recent)}. All {len(listed)} "
            f"runs: {counts(listed)}. Every run in `experiments/results/query_path_history/query_path_history.md`, "
            f"from `python -m experiments.query_path_history` at {results['git_commit'][:7]}.\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=runtime.description(__doc__))
    parser.parse_args(argv)
    from starbucks.provenance import provenance

    found = provenance(["python", "-m", "experiments.query_path_history", *(argv or [])])
    results = {"command": " ".join(found["command"]), "git_commit": found["git_commit"], "runs": runs()}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "query_path_history.json").write_text(json.dumps(results, indent=2) + "\n")
    (OUT / "query_path_history.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
