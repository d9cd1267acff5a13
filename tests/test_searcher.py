"""Cascades against brute force, budgets, bad arguments, and concurrent use."""
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from retrieval import Plan, Searcher
from retrieval.planner import COSTS, CostModel, Planner
from starbucks.errors import InputError, StarbucksError
from starbucks.sizes import Size

QUERIES = ["coffee roasting", "jazz harmony and chess openings", "volcano", "deep learning for coral reefs",
           "railway signals", "ancient rome solar flares", "quantum", "bread"]


@pytest.fixture(scope="module")
def searcher(built_index, tiny_model):
    return Searcher(built_index, model=tiny_model)


def brute(searcher, query, size):
    q = searcher.encoder.encode_queries([query], [size])[size][0]
    scores = np.asarray(searcher.index.vectors[size], dtype=np.float32) @ q
    return scores


def test_exhaustive_plan_is_brute_force(searcher):
    size = Size(4, 48)
    for query in QUERIES[:3]:
        scores = brute(searcher, query, size)
        r = searcher.search(query, k=10, budget=Plan.exhaustive(size, 10))
        expected = [searcher.index.docids[i] for i in np.argsort(-scores, kind="stable")[:10]]
        assert r.docids == expected
        np.testing.assert_allclose(r.scores, np.sort(scores)[::-1][:10], rtol=1e-5)


def test_cascade_reranks_the_shortlist_and_keeps_the_rest_below(searcher):
    plan = Plan.parse("1x8:50,2x16:20,4x48:5")
    query = QUERIES[1]
    s1, s2, s3 = (brute(searcher, query, s) for s in plan.sizes)
    short = np.argsort(-s1, kind="stable")[:50]
    by2 = short[np.argsort(-s2[short], kind="stable")]
    by3 = by2[:20][np.argsort(-s3[by2[:20]], kind="stable")]
    expected = list(by3) + list(by2[20:])
    r = searcher.search(query, k=50, budget=plan)
    assert r.docids == [searcher.index.docids[i] for i in expected]
    assert r.plan == plan
    assert set(r.timings) == {"encode", "shortlist 1x8", "rerank 2x16", "rerank 4x48"}
    assert all(t >= 0 for t in r.timings.values())


def test_batch_and_threads_match_sequential(searcher):
    plans = ["1x8:40,4x48:10", "2x16:100,4x48:10", None]
    single = [searcher.search(q, k=10, budget=p) for p in plans for q in QUERIES]
    sequential = [r.docids for r in single]
    # Batching pads queries together, which moves scores by float rounding only.
    batched = [r.scores for p in plans for r in searcher.search_batch(QUERIES, k=10, budget=p)]
    np.testing.assert_allclose(batched, [r.scores for r in single], atol=1e-4)
    jobs = [(q, p) for p in plans for q in QUERIES] * 3
    with ThreadPoolExecutor(8) as pool:
        threaded = list(pool.map(lambda job: searcher.search(job[0], k=10, budget=job[1]).docids, jobs))
    assert threaded == sequential * 3


def test_bad_arguments_are_clear_errors(searcher):
    for k in (0, -1, 1.5, 10_000):
        with pytest.raises(ValueError, match="k"):
            searcher.search("coffee", k=k)
    with pytest.raises(ValueError, match="more than the 20 candidates"):
        searcher.search("coffee", k=30, budget="1x8:20,4x48:10")
    with pytest.raises(StarbucksError, match="not stored"):
        searcher.search("coffee", budget="1x8:20,3x48:10")
    with pytest.raises(InputError, match="empty"):
        searcher.search("   ")
    with pytest.warns(UserWarning, match="were cut"):  # too long: cut and said, not refused
        searcher.search("word " * 600)
    for budget in (-5, 0, float("nan"), True):
        with pytest.raises(ValueError, match="budget"):
            searcher.search("coffee", budget=budget)
    with pytest.raises(ValueError, match="below the cheapest plan"):
        searcher.search("coffee", budget=1e-6)


def fake_costs():
    """Encoding 1 ms a layer; shortlists nearly free; exhaustive 4x48 10 ms; rescoring 2 us/doc."""
    sizes = [Size(1, 8), Size(2, 16), Size(3, 32), Size(4, 48)]
    first = {s: {1: 0.1, 2000: 0.2} for s in sizes}
    first[Size(4, 48)] = {1: 10.0, 2000: 10.0}
    return CostModel("m", "i", {1: 1.0, 2: 2.0, 3: 3.0, 4: 4.0}, first, {s: 2.0 for s in sizes})


def test_budget_picks_the_most_effective_plan_that_fits(searcher):
    planner = Planner(searcher.index, fake_costs())
    best = Plan.exhaustive(Size(4, 48), 200)
    for budget in (5.0, 6.5, 9.0):
        plan = planner.choose(budget, 10)
        assert planner.costs.predict(plan) <= budget
        assert plan[-1].size == Size(4, 48) and plan[0].size != Size(4, 48)
    assert planner.costs.predict(planner.choose(5.0, 10)) <= planner.costs.predict(planner.choose(9.0, 10))
    assert planner.choose(100.0, 10) == best


def test_cost_model_is_measured_once_and_cached(built_index, tiny_model, monkeypatch):
    import retrieval.planner as planner_module

    monkeypatch.setattr(planner_module, "MAX_SPREAD", float("inf"))  # this test is not about contention
    (built_index / COSTS).unlink(missing_ok=True)
    first = Searcher(built_index, model=tiny_model).planner
    assert not (built_index / COSTS).exists()  # nothing measured until a budget needs it
    first.costs
    assert (built_index / COSTS).is_file()
    assert set(first.costs.rescore_us) == set(first.index.sizes)
    import retrieval.planner as planner

    monkeypatch.setattr(planner, "measure", lambda s: pytest.fail("measured again"))
    again = Searcher(built_index, model=tiny_model).planner
    assert again.costs == first.costs
