"""The benchmark scripts' own logic: which row a summary picks, baselines that search, full-collection commands."""
import numpy as np

from experiments import baselines
from experiments.frontier import summary
from experiments.full_collections import FULL, command
from experiments.scale import fastest


def row(name, kind, ndcg, qps, mode="single"):
    return {"name": name, "kind": kind, "metrics": {"nDCG@10": ndcg}, "qps": qps, "mode": mode}


def test_summary_takes_the_fastest_cascade_within_one_percent():
    rows = [row("6x384:10", "exhaustive", 0.60, 10), row("a", "cascade", 0.595, 30), row("b", "cascade", 0.58, 90),
            row("a early stop", "cascade, early stop", 0.5941, 40), row("h16", "HNSW", 0.50, 200),
            row("h64", "HNSW", 0.599, 20), row("6x384:10", "exhaustive", 0.60, 50, "batch 32")]
    s = summary(rows, "6x384:10")
    assert s["single"]["best cascade"] == "a early stop" and s["single"]["x exhaustive"] == 4.0
    assert s["single"]["fastest HNSW at target"] == "h64" and s["single"]["x HNSW"] == 2.0
    assert s["batch 32"]["best cascade"] is None and s["batch 32"]["x HNSW"] is None


def test_fastest_setting_reaching_the_target_else_the_best_recall():
    rows = [{"name": n, "single": {"recall@10": r, "ms": ms}} for n, r, ms in
            [("a", 0.995, 5.0), ("b", 0.999, 3.0), ("c", 0.90, 1.0)]]
    assert fastest(rows)["name"] == "b"
    assert fastest(rows[2:] + [{"name": "d", "single": {"recall@10": 0.95, "ms": 9.0}}])["name"] == "d"


def test_baselines_find_exact_neighbours_at_their_top_settings():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2000, 32)).astype(np.float32)
    exact = np.argsort(-(x[:20] @ x.T), axis=1)[:, :10]
    for index in (baselines.hnsw(x), baselines.ivfpq_refine(x)):
        name, params = baselines.sweep(index)[-1]
        _, rows = index.search(x[:20], 10, params=params)
        assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows, exact)]) > 0.9, name
        assert baselines.ram_bytes(index) > x.nbytes


def test_full_collection_commands():
    assert {"msmarco-dev", "dl19", "dl20", "beir-scifact"} <= set(FULL)
    argv = command("dl19", "some/model", 4, "t")
    assert argv[:2] == ["--datasets", "dl19"] and "--model" in argv and argv[argv.index("--index-args") + 1] == "--batch-size"
    assert "--index-args" not in command("scifact", None, None, "t")
