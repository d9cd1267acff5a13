"""Scoring with ir-measures on inline TREC data, run files, and the CLI end to end."""
import json

import pytest

from retrieval.cli import main
from retrieval import evaluate
from retrieval.evaluate import depth_for, parse_measures, score, timed_rankings, write_trec
from starbucks.errors import StarbucksError

QRELS = {"q1": {"d1": 1, "d2": 0, "d3": 2}, "q2": {"d9": 1}}


def test_scores_match_hand_computed_values():
    rankings = {"q1": ["d2", "d3", "d1"], "q2": ["d8", "d7", "d6"]}
    got = score(rankings, QRELS, parse_measures(["RR@10", "P@1", "R@2", "RR@1"]))
    assert got == pytest.approx({"RR@10": 0.25, "P@1": 0.0, "R@2": 0.25, "RR@1": 0.0})


def test_measure_names_and_depth():
    assert depth_for(parse_measures(["nDCG@10", "R@1000"])) == 1000
    assert depth_for(parse_measures(["nDCG@10", "RR@20"])) == 20
    assert depth_for(parse_measures(["AP"])) == 1000
    with pytest.raises(StarbucksError, match="unknown measure"):
        parse_measures(["NotAMeasure@10"])


def test_trec_run_file(tmp_path):
    write_trec(tmp_path / "run.trec", {"q1": ["d3", "d1"]}, "tag")
    assert (tmp_path / "run.trec").read_text() == "q1 Q0 d3 1 2 tag\nq1 Q0 d1 2 1 tag\n"


@pytest.mark.parametrize("batch", [1, 2])
def test_timed_rankings_leave_a_plans_first_search_untimed(monkeypatch, batch):
    """The first batch is searched once, untimed, before the timed pass: its one-time set-up (here 0.5 s
    on a clock the fake search moves) is in no query's latency, and its rankings are not kept."""
    clock = [0.0]
    monkeypatch.setattr(evaluate.time, "perf_counter", lambda: clock[0])
    calls = []

    def search(queries):
        calls.append(list(queries))
        clock[0] += 0.5 if len(calls) == 1 else 0.002 * len(queries)
        return [["cold" if len(calls) == 1 else f"d-{q}"] for q in queries]

    topics = {"q1": "a", "q2": "b", "q3": "c"}
    rankings, latencies, wall = timed_rankings(topics, search, batch, "plan", progress=False)
    assert calls[0] == ["a", "b"][:batch] and len(calls) == 1 + -(-3 // batch)
    assert latencies == pytest.approx([2.0] * 3)
    assert rankings == {"q1": ["d-a"], "q2": ["d-b"], "q3": ["d-c"]}
    assert wall == pytest.approx(0.006)


@pytest.fixture
def topics(tmp_path):
    q = tmp_path / "queries.jsonl"
    q.write_text("".join(json.dumps({"_id": str(i), "text": t}) + "\n"
                         for i, t in enumerate(["coffee roasting", "jazz harmony", "volcano eruptions"])))
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\n0\td1\t1\n1\td2\t1\n1\td7\t2\n")
    return q, qrels


def test_cli_index_search_evaluate_and_bm25(tmp_path, corpus, tiny_model_dir, topics, capsys):
    q, qrels = topics
    idx = tmp_path / "idx"
    assert main(["-q", "index", str(corpus), "--out", str(idx), "--model", str(tiny_model_dir),
                 "--shortlist", "1x8", "--rerank", "4x48"]) == 0
    assert main(["search", str(idx), "coffee", "--k", "3", "--plan", "1x8:20,4x48:3", "--json"]) == 0
    hit = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert hit["plan"] == "1x8:20,4x48:3" and len(hit["hits"]) == 3
    out = tmp_path / "results" / "eval.json"
    assert main(["-q", "evaluate", str(idx), "--topics", str(q), "--qrels", str(qrels), "--all-sizes",
                 "--plan", "1x8:20,4x48:10", "--measures", "nDCG@10", "R@20", "--runs", str(tmp_path / "runs"),
                 "--output", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| 1x8:20,4x48:10 |" in table and "| 4x48:20 |" in table
    rows = json.loads(out.read_text())["rows"]
    assert [r["name"] for r in rows] == ["1x8:20", "4x48:20", "1x8:20,4x48:10"]
    assert all(0 <= r["metrics"]["nDCG@10"] <= 1 for r in rows)
    assert out.with_suffix(".md").is_file()
    run = (tmp_path / "runs" / "1x8@20_4x48@10.trec").read_text().splitlines()
    assert len(run) == 2 * 20 and run[0].split()[0] == "0"  # only the two judged topics
    assert main(["-q", "bm25", str(corpus), "--topics", str(q), "--qrels", str(qrels), "--measures", "RR@10"]) == 0
    assert "BM25 (bm25s)" in capsys.readouterr().out


def test_cli_search_warm_up_searches_each_plan_once_before_the_queries(tmp_path, corpus, tiny_model_dir, monkeypatch,
                                                                       capsys):
    from retrieval.searcher import Searcher

    idx = tmp_path / "idx"
    assert main(["-q", "index", str(corpus), "--out", str(idx), "--model", str(tiny_model_dir),
                 "--shortlist", "1x8", "--rerank", "4x48"]) == 0
    searched, warmed = [], []
    search, warm_up = Searcher.search, Searcher.warm_up
    monkeypatch.setattr(Searcher, "search", lambda self, q, **kw: searched.append((q, str(kw.get("budget")))) or
                        search(self, q, **kw))
    monkeypatch.setattr(Searcher, "warm_up", lambda self, **kw: warmed.append(kw) or warm_up(self, **kw))
    assert main(["search", str(idx), "coffee", "jazz", "--k", "3", "--plan", "1x8:20,4x48:3", "--warm-up"]) == 0
    assert searched == [("coffee", "1x8:20,4x48:3")] * 2 + [("jazz", "1x8:20,4x48:3")] and not warmed
    assert capsys.readouterr().out.count("# ") == 2  # the warm-up prints nothing
    searched.clear()
    assert main(["search", str(idx), "coffee", "--k", "3", "--warm-up"]) == 0
    assert warmed == [{"k": 3, "query": "coffee"}] and searched[-1] == ("coffee", "None")


def test_cli_reports_errors_without_a_traceback(tmp_path, capsys):
    assert main(["search", str(tmp_path / "nope"), "coffee"]) == 2
    assert "error:" in capsys.readouterr().err
    assert main(["-q", "index", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "x")]) == 2
    assert "missing.jsonl: no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["search", "--help"])
