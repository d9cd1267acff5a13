"""Results say where they came from; benchmarks are not installed as a package."""
import json
import os
import tomllib
from pathlib import Path

from starbucks.provenance import git_commit, provenance, relative_command

ROOT = Path(__file__).resolve().parents[1]


def test_experiments_are_not_installed():
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert not any(p.startswith("experiments") for p in find["include"])
    assert "experiments" not in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"].get("package-data", {})


def test_commands_hold_relative_paths(tmp_path):
    cmd = relative_command(["starbucks", "index", str(tmp_path / "c.jsonl"), f"--out={tmp_path / 'idx'}", "irds:x"],
                           base=tmp_path)
    assert cmd == ["starbucks", "index", "c.jsonl", "--out=idx", "irds:x"]


def test_provenance_has_commit_and_versions():
    found = provenance(["starbucks", "evaluate"])
    assert found["command"] == ["starbucks", "evaluate"]
    assert {"python", "torch", "numpy", "starbucks-retrieval"} <= set(found["versions"])
    if (ROOT / ".git").exists():
        assert git_commit() and len(git_commit().removesuffix("-dirty")) == 40


def test_benchmarks_record_it_through_the_shared_helper():
    from experiments import runtime

    rec = runtime.record("experiments.frontier", 1, ["--out", os.path.join(os.getcwd(), "results")])
    assert rec["command"] == "python -m experiments.frontier --out results"
    assert {"git_commit", "versions", "machine"} <= set(rec)
    for name in ("frontier", "scale", "sizes_and_plans", "throughput"):
        assert "runtime.record(" in (ROOT / "experiments" / f"{name}.py").read_text(), name


def test_evaluate_output_records_provenance(built_index, tiny_model_dir, tmp_path, monkeypatch):
    from starbucks_cli import main

    q = tmp_path / "q.tsv"
    q.write_text("1\tcoffee\n")
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("1 0 d1 1\n")
    monkeypatch.chdir(tmp_path)
    assert main(["-q", "evaluate", str(built_index), "--topics", str(q), "--qrels", str(qrels), "--plan", "1x8:20",
                 "--measures", "nDCG@10", "--model", str(tiny_model_dir), "--output", str(tmp_path / "r.json")]) == 0
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["versions"]["torch"] and "git_commit" in data
    assert data["command"][:3] == ["starbucks", "-q", "evaluate"]
    assert "q.tsv" in data["command"] and not any(str(tmp_path) in part for part in data["command"])
