"""Plans that name their query's encoder (``encoder=onnx-int8``): grammar, search, calibration, budgets."""
import json
import shutil

import pytest

from retrieval import Plan, Searcher
from retrieval.calibrate import Encoded, calibrate, encoded_for
from retrieval.cli import main
from retrieval.frontier import CALIBRATION, Frontier, Point
from retrieval.planner import Planner, index_key, searcher_key
from tests.test_calibrate import judged

INT8 = "onnx-int8"


def test_a_plan_names_its_encoder_after_its_stages():
    plan = Plan.parse("bm25:100,4x48:10,fuse=rrf,encoder=onnx-int8")
    assert plan.encoder == INT8 and plan[-1].fuse == "rrf" and str(plan) == "bm25:100,4x48:10,fuse=rrf,encoder=onnx-int8"
    assert Plan.parse("bm25:100,4x48:10,encoder=onnx-int8,fuse=rrf") == plan  # either order
    assert Plan.parse(str(plan)) == plan
    plain = Plan.parse("bm25:100,4x48:10,fuse=rrf")
    assert plain.encoder is None and plan != plain and plan.with_encoder(None) == plain
    assert plain.with_encoder(INT8) == plan and hash(plain.with_encoder(INT8)) == hash(plan)


@pytest.mark.parametrize("text, message", [
    ("4x48:10,encoder=auto", "unknown encoder 'auto'"),
    ("4x48:10,encoder=int4", "unknown encoder 'int4'"),
    ("bm25:100,encoder=onnx-int8", "encodes no query"),
    ("4x48:10,encoder=onnx,encoder=onnx-int8", "more than one encoder="),
    ("2x16:100,encoder=onnx,4x48:10", "encoder= comes after the stages"),
    ("encoder=onnx", "no stages"),
])
def test_bad_encoder_options_are_refused(text, message):
    with pytest.raises(ValueError, match=message):
        Plan.parse(text)


def test_the_named_encoder_encodes_the_query(built_index, tiny_model):
    own = Searcher(built_index, model=tiny_model, encoder="onnx", threads=1)
    int8 = Searcher(built_index, model=tiny_model, encoder=INT8, threads=1)
    plan = Plan.parse("2x16:100,4x48:10")
    for query in ("coffee roasting", "volcano eruptions"):
        got = own.search(query, k=10, budget=plan.with_encoder(INT8))
        want = int8.search(query, k=10, budget=plan)
        assert got.docids == want.docids and got.scores == pytest.approx(want.scores, abs=1e-6)
        assert got.plan.encoder == INT8
    assert own.encoder_named(INT8).kind == INT8 and own.encoder_named(INT8) is own.encoder_named(INT8)
    assert own.encoder_named(None) is own.encoder and own.encoder_named("onnx") is own.encoder
    # The searcher's own encoder still serves plans that name none.
    base = own.search("coffee roasting", k=10, budget=plan)
    assert base.docids == Searcher(built_index, model=tiny_model, encoder="onnx", threads=1).search(
        "coffee roasting", k=10, budget=plan).docids


@pytest.fixture(scope="module")
def calibrated_onnx(built_index, tiny_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("cal-int8") / "idx"
    shutil.copytree(built_index, folder)
    (folder / CALIBRATION).unlink(missing_ok=True)
    searcher = Searcher(folder, model=tiny_model, encoder="onnx", threads=1)
    topics, qrels = judged(searcher)
    frontier, points = calibrate(searcher, topics, qrels, "nDCG@10", topics_name="test", progress=False)
    return searcher, frontier, points, topics, qrels


def test_calibration_tries_every_encoding_plan_with_int8_queries_too(calibrated_onnx):
    searcher, frontier, points, _, _ = calibrated_onnx
    own = [p.plan for p in points if p.plan.encoder is None]
    int8 = [p.plan for p in points if p.plan.encoder == INT8]
    assert own == searcher.planner.candidates(10)
    assert int8 == [p.with_encoder(INT8) for p in own if p.sizes] and int8
    assert {p.plan.encoder for p in points} == {None, INT8}
    # A frontier holding int8 plans goes to disk and back, and budgets choose among them by measured latency.
    assert Frontier.from_dict(frontier.to_dict()) == frontier
    plan = Plan.parse("2x16:100,4x48:10").with_encoder(INT8)
    given = Frontier(searcher_key(searcher), index_key(searcher.index), "nDCG@10", 10, "t", 1, 2,
                     [Point(Plan.parse("2x16:100,4x48:10").with_encoder(INT8), 1.0, 0.5),
                      Point(Plan.parse("2x16:100,4x48:10"), 3.0, 0.6)])
    assert given.choose(2.0, 10) == plan and given.choose(3.0, 10) == plan.with_encoder(None)
    assert given.measured(plan) == 1.0 and given.measured(plan.with_encoder(None)) == 3.0


def test_calibration_with_the_own_encoder_only(built_index, tiny_model):
    for encoder, query_encoders in (("onnx", ()), ("torch", None)):
        searcher = Searcher(built_index, model=tiny_model, encoder=encoder, threads=1)
        topics, qrels = judged(searcher)
        _, points = calibrate(searcher, topics, qrels, topics_name="test", progress=False,
                              query_encoders=query_encoders)
        assert {p.plan.encoder for p in points} == {None}, encoder


def test_plans_run_only_from_topics_their_encoder_encoded(built_index, tiny_model):
    searcher = Searcher(built_index, model=tiny_model, encoder="onnx", threads=1)
    own = Encoded(searcher, ["coffee roasting"], progress=False, repeats=1)
    int8 = Encoded(searcher, ["coffee roasting"], progress=False, repeats=1, encoder=searcher.encoder_named(INT8))
    plan = Plan.parse("4x48:10")
    assert encoded_for(own, plan) is own and encoded_for({None: own, INT8: int8}, plan.with_encoder(INT8)) is int8
    for encoded in (own, {None: own}):
        with pytest.raises(ValueError, match="not encoded with its encoder"):
            encoded_for(encoded, plan.with_encoder(INT8))


def test_calibrate_command_without_int8_queries(built_index, tiny_model_dir, tiny_model, tmp_path, capsys):
    folder = tmp_path / "idx"
    shutil.copytree(built_index, folder)
    (folder / CALIBRATION).unlink(missing_ok=True)
    topics, qrels = judged(Searcher(folder, model=tiny_model))
    (tmp_path / "topics.tsv").write_text("".join(f"{q}\t{t}\n" for q, t in topics.items()))
    (tmp_path / "qrels.txt").write_text("".join(f"{q} 0 {d} {r}\n" for q, ds in qrels.items() for d, r in ds.items()))
    args = ["-q", "calibrate", str(folder), "--topics", str(tmp_path / "topics.tsv"),
            "--qrels", str(tmp_path / "qrels.txt"), "--model", str(tiny_model_dir), "--encoder", "onnx"]
    assert main(args + ["--no-int8-queries"]) == 0
    measured = json.loads((folder / CALIBRATION).read_text())
    assert measured["plans_measured"] == len(Searcher(folder, model=tiny_model).planner.candidates(10))
    assert not any("encoder=" in p["plan"] for p in measured["points"])
    assert main(args) == 0
    assert json.loads((folder / CALIBRATION).read_text())["plans_measured"] > measured["plans_measured"]
    capsys.readouterr()
    assert main(["search", str(folder), "coffee", "--model", str(tiny_model_dir), "--encoder", "onnx",
                 "--plan", "2x16:100,4x48:10,encoder=onnx-int8"]) == 0
    assert main(["search", str(folder), "coffee", "--model", str(tiny_model_dir),
                 "--plan", "2x16:100,4x48:10,encoder=int4"]) == 2
    err = capsys.readouterr().err
    assert "unknown encoder 'int4'" in err and "Traceback" not in err


def test_loading_a_named_encoder_is_not_counted_as_the_search(built_index, tiny_model, monkeypatch):
    """The first search whose plan names another encoder loads it; neither its encode timing nor the latency
    the planner's pace and drift check observe include that."""
    import time

    import retrieval.searcher as searcher_module

    searcher = Searcher(built_index, model=tiny_model, encoder="onnx", threads=1)
    plan = Plan.parse("2x16:100,4x48:10,encoder=onnx-int8")
    searcher._planner = planner = Planner(searcher.index, None, Frontier(
        searcher_key(searcher), index_key(searcher.index), "nDCG@10", 10, "t", 1, 1, [Point(plan, 50.0, 0.5)]), searcher)
    real = searcher_module.make_encoder
    monkeypatch.setattr(searcher_module, "make_encoder", lambda *a, **kw: time.sleep(0.3) or real(*a, **kw))
    observed = []
    monkeypatch.setattr(planner, "observe", lambda p, ms, tokens=None, **kw: observed.append((p, ms)))
    result = searcher.search("coffee roasting", k=10, budget=60.0)
    assert result.plan == plan and INT8 in searcher._encoders
    assert result.timings["encode"] < 300 and observed[0][0] == plan and observed[0][1] < 300
