"""Per-query early stopping: decisiveness, what a stopped query runs, and the margin calibration learns."""
import shutil

import numpy as np
import pytest

from retrieval import Plan, Searcher
from retrieval.calibrate import Encoded, learn_margin, measure_plans
from retrieval.evaluate import parse_measures
from retrieval.frontier import Frontier
from retrieval.searcher import decisiveness
from starbucks.sizes import Size
from tests.test_calibrate import QUERIES, judged

PLAN = Plan.parse("1x8:100,2x16:50,4x48:10")


@pytest.fixture(scope="module")
def searcher(built_index, tiny_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("adaptive") / "idx"
    shutil.copytree(built_index, folder)
    return Searcher(folder, model=tiny_model)


def test_decisiveness():
    scores = np.array([1.0, 0.9, 0.5, 0.4])
    assert decisiveness(scores, 2) == pytest.approx(0.4 / 0.6)
    assert decisiveness(scores, 4) == decisiveness(scores, 9) == 1.0  # nothing to cut
    assert decisiveness(np.ones(5), 2) == 0.0


def test_a_stopped_query_rescores_only_its_top_k_at_the_last_size(searcher):
    vectors = searcher.encoder.encode_queries(QUERIES, PLAN.sizes)
    full = searcher.run(PLAN, vectors, 10)
    never = searcher.run(PLAN, vectors, 10, margin=float("inf"))
    assert [(r.docids, r.scores, r.stopped_early) for r in never] == [(r.docids, r.scores, False) for r in full]
    stopped = searcher.run(PLAN, vectors, 10, margin=0.0)
    for i, result in enumerate(stopped):
        assert result.stopped_early and not full[i].stopped_early
        q = {s: vectors[s][i] for s in PLAN.sizes}
        short = np.argsort(-(np.asarray(searcher.index.vectors[Size(1, 8)], dtype=np.float32) @ q[Size(1, 8)]),
                           kind="stable")[:10]
        last = np.asarray(searcher.index.vectors[Size(4, 48)][np.sort(short)], dtype=np.float32) @ q[Size(4, 48)]
        expected = np.sort(short)[np.argsort(-last, kind="stable")]
        assert result.docids == searcher.index.docids.lookup(expected)
        assert set(result.timings) == set(full[i].timings)


def test_early_stop_needs_a_learnt_margin(searcher):
    with pytest.raises(ValueError, match="no early-stopping margin"):
        searcher.search("coffee", budget=PLAN, early_stop=True)
    result = searcher.search("coffee", budget="4x48:10", early_stop=True)  # one stage: nothing to skip
    assert not result.stopped_early


@pytest.mark.parametrize("tolerance", [0.0, 0.05, 0.5])
def test_learnt_margin_keeps_the_plan_within_tolerance(searcher, tolerance):
    topics, qrels = judged(searcher)
    qids = list(topics)
    (measure,) = parse_measures(["nDCG@10"])
    encoded = Encoded(searcher, [topics[q] for q in qids], progress=False)
    (point,) = measure_plans(searcher, [PLAN], encoded, qids, qrels, measure, 10, progress=False)
    point.per_token_ms, point.tokens = 0.02, 9.5  # as the end-to-end timings fit them
    learnt = learn_margin(searcher, point, encoded, qids, qrels, measure, 10, tolerance)
    assert learnt.plan == PLAN and learnt.early["tolerance"] == tolerance
    assert (learnt.ms, learnt.per_token_ms, learnt.tokens) == (point.ms, 0.02, 9.5)  # kept
    assert learnt.early["effectiveness"] >= (1 - tolerance) * point.effectiveness - 1e-9
    assert 0 <= learnt.early["stopped"] <= 1
    if learnt.margin is None:
        assert learnt.early["stopped"] == 0
    # Searching with the learnt margin stops exactly the queries at least that decisive.
    searcher.planner.frontier = Frontier("m", "i", "nDCG@10", 10, "t", len(qids), 1, [learnt])
    try:
        results = searcher.search_batch([topics[q] for q in qids], k=10, budget=PLAN, early_stop=True)
        stopped = np.mean([r.stopped_early for r in results])
        assert stopped == pytest.approx(learnt.early["stopped"])
    finally:
        searcher.planner.frontier = None
