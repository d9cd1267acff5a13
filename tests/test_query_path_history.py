"""The query-path run history: read from the results files' git history, each run counted once."""
import json
import subprocess
from pathlib import Path

from experiments import query_path_history

ROOT = Path(__file__).resolve().parents[1]


def _result(name: str, code: str, x_today: float = 7.0, broken_x: float | None = None) -> dict:
    def rows(broken: float | None) -> list[dict]:
        return [{"budget_ms": 0.1, "plan": "bm25:10", "mean_ms": 0.1 * (broken or 0.9), "holds": broken is None},
                {"budget_ms": 2.0, "plan": "bm25:100,6x384:10", "mean_ms": 2.1, "holds": True},
                {"budget_ms": 0.01, "plan": None, "mean_ms": None, "holds": None}]  # refused
    return {"provenance": {"command": "python -m experiments.query_path", "git_commit": code},
            "result": {"collection": name, "budgets": rows(None), "budgets_on_calibration_topics": rows(broken_x),
                       "planner_warnings": {"evaluation": [], "calibration": ["slower"] if broken_x else []},
                       "summary": {"today": {"mean_ms": 14.0},
                                   "fastest_within_1pct": {"system": "bm25:10", "x_today": x_today,
                                                           "reached": x_today >= 5.0},
                                   "hybrid": {"beats_both": True}}}}


def _commit(repo: Path, files: dict[str, dict]) -> None:
    folder = repo / query_path_history.RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / f"{name}.json").write_text(json.dumps(data))
        (folder / f"{name}.md").write_text(name)
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "r"],
                   check=True)


def test_each_run_is_counted_once_with_its_broken_budgets_and_targets(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    _commit(tmp_path, {"scifact": _result("scifact", "a"), "nfcorpus-dev": _result("nfcorpus-dev", "a-dirty", broken_x=1.2)})
    rewritten = _result("scifact", "a")
    rewritten["result"]["note"] = "rewritten, not rerun"
    _commit(tmp_path, {"scifact": rewritten})
    _commit(tmp_path, {"scifact": _result("scifact", "b", x_today=4.0)})

    runs = query_path_history.runs(tmp_path)

    assert [(r["number"], r["code_commit"], len(r["collections"])) for r in runs] == [(1, "a", 2), (2, "b", 1)]
    first, second = runs
    nfcorpus = next(c for c in first["collections"] if c["collection"] == "nfcorpus-dev")
    assert nfcorpus["calibration"] == {"budgets": 2, "broken": [
        {"budget_ms": 0.1, "x": 1.2, "bm25_alone": True}], "worst_x": 1.2}
    assert (first["broken"], first["every_budget_held"], first["target_5x_met"]) == (1, False, True)
    assert (second["broken"], second["every_budget_held"], second["target_5x_met"]) == (0, True, False)
    assert first["worst_x"] == 1.2 and second["worst_x"] == 1.05
    assert (first["warnings"], second["warnings"]) == (1, 0)
    assert query_path_history.counts(runs) == ("1 of 2 held every budget; 1 of 2 met 5x on every collection "
                                               "they ran")
    assert "nfcorpus-dev (calibration topics) 0.1 ms: 1.20x (BM25 alone)" in "\n".join(query_path_history.run_rows(runs))


def test_the_committed_history_ends_with_the_committed_query_path_results():
    history = json.loads((query_path_history.OUT / "query_path_history.json").read_text())
    last = history["runs"][-1]
    for path in (ROOT / query_path_history.RESULTS).glob("*.json"):
        code = json.loads(path.read_text())["provenance"]["git_commit"]
        assert code == last["code_commit"], f"{path.name}: run python -m experiments.query_path_history"
