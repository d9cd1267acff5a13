"""Budgets that keep their promise: measured with the searching encoder, re-measured when stale,
contended or drifting; the default path measures nothing; the contract on a synthetic frontier."""
import json
import random
import shutil
import warnings

import numpy as np
import pytest

import retrieval.planner as planner_module
from indexes import Index
from retrieval import Plan, Searcher
from retrieval.frontier import CALIBRATION, Frontier, Point, pareto
from retrieval.planner import COSTS, DRIFT_WINDOW, CostModel, Planner, machine_key


@pytest.fixture
def index_copy(built_index, tmp_path):
    folder = tmp_path / "idx"
    shutil.copytree(built_index, folder)
    for name in (CALIBRATION, COSTS):
        (folder / name).unlink(missing_ok=True)
    return folder


def test_default_path_measures_nothing_writes_nothing_scans_nothing(index_copy, tiny_model, monkeypatch):
    before = sorted(p.name for p in index_copy.rglob("*"))
    monkeypatch.setattr(planner_module, "measure", lambda s, *a: pytest.fail("measured costs on a query"))
    monkeypatch.setattr(Index, "scan", lambda *a, **k: pytest.fail("scanned every vector"))
    searcher = Searcher(index_copy, model=tiny_model, encoder="torch", threads=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "cost model alone" warning either
        result = searcher.search("coffee roasting", k=5)
    assert len(result.docids) == 5
    assert len(result.plan) == 2 and result.plan[-1].size == max(searcher.index.sizes)
    assert result.plan[0].size in searcher.index.manifest.shortlist
    assert sorted(p.name for p in index_copy.rglob("*")) == before


def test_plan_choice_is_cached_per_budget_and_k(index_copy, tiny_model, monkeypatch):
    searcher = Searcher(index_copy, model=tiny_model, encoder="torch", threads=1)
    planner = Planner(searcher.index, fake_costs(searcher), None, searcher)
    calls = []
    real = planner.candidates
    monkeypatch.setattr(planner, "candidates", lambda k: calls.append(k) or real(k))
    with pytest.warns(UserWarning, match="cost model alone"):
        a = planner.choose(8.0, 10)
    assert planner.choose(8.0, 10) == a and planner.choose(None, 10) and calls == [10]
    planner.choose(8.0, 5)
    assert calls == [10, 5]


def fake_costs(searcher) -> CostModel:
    sizes = searcher.index.sizes
    first = {s: {1: 0.1, 200: 0.2} for s in sizes}
    return CostModel(machine_key(searcher.encoder), planner_module.index_key(searcher.index),
                     {s.layer: float(s.layer) for s in sizes}, first, {s: 2.0 for s in sizes})


def test_costs_from_another_encoder_or_thread_count_are_measured_again(index_copy, tiny_model, monkeypatch):
    monkeypatch.setattr(planner_module, "MAX_SPREAD", float("inf"))
    torch_searcher = Searcher(index_copy, model=tiny_model, encoder="torch", threads=1)
    costs = torch_searcher.planner.costs
    assert json.loads((index_copy / COSTS).read_text())["machine"] == costs.machine
    assert "encoder=torch|threads=1" in costs.machine
    measured = []
    real = planner_module.measure
    monkeypatch.setattr(planner_module, "measure", lambda s, *a: measured.append(s.encoder.kind) or real(s))
    assert Searcher(index_copy, model=tiny_model, encoder="torch", threads=1).planner.costs == costs
    assert measured == []
    onnx = Searcher(index_copy, model=tiny_model, encoder="onnx", threads=1).planner.costs
    assert measured == ["onnx"] and "encoder=onnx|" in onnx.machine


def test_a_contended_measurement_is_retried_and_not_cached(index_copy, tiny_model, monkeypatch):
    rounds = iter(range(1000))

    def disturbed(encoder, sizes, queries):  # every other encoding round 20x slower: another process took the core
        ms = 1.0 if next(rounds) % 2 else 20.0
        return {s.layer: ms for s in sizes}

    monkeypatch.setattr(planner_module, "_encode_table", disturbed)
    searcher = Searcher(index_copy, model=tiny_model, encoder="torch", threads=1)
    with pytest.warns(UserWarning, match="machine was busy"):
        costs = searcher.planner.costs
    assert costs.contended and not (index_copy / COSTS).exists()
    # A contended costs.json left by an older version is not trusted either.
    (index_copy / COSTS).write_text(json.dumps(costs.to_dict()))
    monkeypatch.setattr(planner_module, "_encode_table", lambda enc, sizes, qs: {s.layer: 1.0 for s in sizes})
    fresh = Searcher(index_copy, model=tiny_model, encoder="torch", threads=1).planner.costs
    assert not fresh.contended and json.loads((index_copy / COSTS).read_text())["spread"] == 1.0


def uncalibrated_planner(index_copy, tiny_model, monkeypatch):
    """An uncalibrated planner whose re-measurements are counted, and a plan searched once already;
    (planner, plan, its predicted ms, the list each re-measurement appends to)."""
    searcher = Searcher(index_copy, model=tiny_model, encoder="torch", threads=1)
    planner = Planner(searcher.index, fake_costs(searcher), None, searcher)
    remeasured = []
    monkeypatch.setattr(planner, "remeasure", lambda: remeasured.append(1))
    plan = Plan.parse("1x8:100,4x48:10")
    predicted = planner.costs.predict(plan)
    set_up(planner, plan)
    return planner, plan, predicted, remeasured


def test_drifting_latencies_trigger_a_new_measurement(index_copy, tiny_model, monkeypatch):
    monkeypatch.setattr(planner_module, "DRIFT_SECONDS", 0.0)
    planner, plan, predicted, remeasured = uncalibrated_planner(index_copy, tiny_model, monkeypatch)
    for _ in range(DRIFT_WINDOW):
        planner.observe(plan, predicted * 1.1)  # within bounds
    assert remeasured == []
    for _ in range(DRIFT_WINDOW):
        planner.observe(plan, predicted * 4)  # the machine got slower
    assert remeasured == [1]


def test_a_drift_counts_only_once_it_has_lasted(index_copy, tiny_model, monkeypatch):
    import time

    planner, plan, predicted, remeasured = uncalibrated_planner(index_copy, tiny_model, monkeypatch)

    def window(ratio):
        for _ in range(DRIFT_WINDOW):
            planner.observe(plan, predicted * ratio)

    monkeypatch.setattr(planner_module, "DRIFT_SECONDS", 3600.0)
    for _ in range(8):
        window(4)  # a spell of the machine, however slow: the pace follows it
    assert remeasured == []
    monkeypatch.setattr(planner_module, "DRIFT_SECONDS", 0.05)
    window(1)  # back within bounds: a drift after this starts its clock afresh
    window(4)
    time.sleep(0.06)
    window(1)
    window(4)  # its clock started again
    assert remeasured == []
    window(0.2)  # and again on the other side
    time.sleep(0.06)
    window(0.2)  # lasted
    assert remeasured == [1]


def test_calibrate_remeasure_forces_a_fresh_cost_model(index_copy, tiny_model, monkeypatch):
    from retrieval.calibrate import calibrate

    monkeypatch.setattr(planner_module, "MAX_SPREAD", float("inf"))
    searcher = Searcher(index_copy, model=tiny_model, encoder="torch", threads=1)
    searcher.planner.costs
    measured = []
    real = planner_module.measure
    monkeypatch.setattr(planner_module, "measure", lambda s, *a: measured.append(1) or real(s))
    topics = {"q1": "coffee roasting", "q2": "jazz harmony"}
    qrels = {"q1": {searcher.index.docids[0]: 1}, "q2": {searcher.index.docids[1]: 1}}
    calibrate(searcher, topics, qrels, progress=False, remeasure=True)
    assert measured == [1]


def synthetic_frontier(seed: int) -> Frontier:
    rng = random.Random(seed)
    plans = [f"1x8:{keep},4x48:10" for keep in (50, 100, 200, 500, 1000)] + ["2x16:200,4x48:10", "4x48:1000"]
    points = [Point(Plan.parse(p), rng.uniform(1, 30), rng.uniform(0.1, 0.9)) for p in plans]
    return Frontier("m", "i", "nDCG@10", 10, "t", 50, len(points), pareto(points))


@pytest.mark.parametrize("seed", range(20))
def test_budget_contract_on_a_synthetic_frontier(seed):
    frontier = synthetic_frontier(seed)
    budgets = sorted({p.ms for p in frontier.points} | {p.ms * f for p in frontier.points for f in (0.99, 1.01, 1.1)})
    chosen = {}
    for budget in budgets:
        try:
            plan = frontier.choose(budget, 10)
        except ValueError:
            assert budget < frontier.points[0].ms
            continue
        chosen.setdefault(str(plan), budget)  # the smallest budget that selects it
        point = next(p for p in frontier.points if p.plan == plan)
        assert point.ms <= budget
        # never less effective than a frontier plan that is no slower
        assert all(q.effectiveness <= point.effectiveness for q in frontier.points if q.ms <= point.ms)
        assert all(q.effectiveness <= point.effectiveness for q in frontier.points if q.ms <= budget)
    for point in frontier.points:  # every frontier plan is selectable, within 1.1x of its smallest budget
        assert point.ms <= 1.1 * chosen[str(point.plan)]


@pytest.mark.parametrize("seed", range(10))
def test_a_paced_budget_fits_its_plan_at_the_pace(seed):
    """While the machine runs ``pace`` times slower than calibrated, a budget takes the most effective
    plan whose latency times the pace fits (the cheapest when none does); feasibility ignores the pace."""
    frontier = synthetic_frontier(seed)
    cheapest = frontier.points[0]
    for pace in (0.7, 1.3, 2.0):
        for budget in sorted({p.ms * f for p in frontier.points for f in (1.0, 1.05, 1.5)}):
            plan = frontier.choose(budget, 10, pace)
            point = next(p for p in frontier.points if p.plan == plan)
            fitting = [p for p in frontier.points if p.ms * pace <= budget]
            assert point.ms * pace <= budget if fitting else point is cheapest
            assert all(q.effectiveness <= point.effectiveness for q in fitting)
        with pytest.raises(ValueError, match="below the cheapest calibrated plan"):
            frontier.choose(cheapest.ms * 0.99, 10, pace)


@pytest.mark.parametrize("seed", range(10))
def test_a_paced_budget_blends_its_plan_with_the_next_more_effective_one(seed):
    """While the machine runs slow, a budget shares its searches between the plan that fits at the pace and
    the next more effective frontier plan, at the share whose mean at the pace is the budget; at a pace
    of 1, or with no more effective plan, it runs the one plan."""
    frontier = synthetic_frontier(seed)
    points = frontier.points
    for budget in sorted({p.ms * f for p in points for f in (1.0, 1.05, 1.5)}):
        plan, above, share = frontier.blend(budget, 10, 1.0)
        assert plan == frontier.choose(budget, 10, 1.0) and above is None and share == 0.0
        for pace in (1.2, 2.0):
            plan, above, share = frontier.blend(budget, 10, pace)
            assert plan == frontier.choose(budget, 10, pace)
            low = next(p for p in points if p.plan == plan)
            own = next(p for p in points if p.plan == frontier.choose(budget, 10, 1.0))
            if above is None:  # its own plan still fits at the pace, or even the cheapest runs over
                assert low is own or low.ms * pace >= budget
                continue
            high = next(p for p in points if p.plan == above)
            assert low is not own and high is points[points.index(low) + 1]  # the next point up the frontier
            assert high.effectiveness <= own.effectiveness  # never past the plan it takes at pace 1
            assert 0 < share < 1
            assert (share * high.ms + (1 - share) * low.ms) * pace == pytest.approx(budget)


def test_a_blended_budget_spreads_its_searches_and_keeps_measuring_the_pace(index_copy, tiny_model):
    planner, cheap, slow = bm25_and_dense_planner(index_copy, tiny_model)
    for _ in range(planner_module.PACE_WINDOW):
        planner.observe(slow, 4.0 * 1.25)  # the machine runs 25 % slower than calibrated
    assert planner.pace == pytest.approx(1.25)
    share = (4.2 / 1.25 - 0.3) / (4.0 - 0.3)  # BM25 alone at 0.3 ms, the dense plan at 4 ms
    chosen = [planner.choose(4.2, 10) for _ in range(100)]
    assert {str(p) for p in chosen} == {str(cheap), str(slow)}
    assert sum(p == slow for p in chosen) == int(100 * share)  # evenly: no run of one plan
    assert max(len(run) for run in "".join("s" if p == slow else "c" for p in chosen).split("s")) == 1
    # The dense plan's own searches say the machine recovered: the pace returns without waiting for
    # PACE_EXPIRY searches of BM25 alone, and the budget runs the dense plan only.
    for _ in range(planner_module.PACE_WINDOW):
        planner.observe(slow, 4.0)
    assert planner.pace == 1.0 and all(planner.choose(4.2, 10) == slow for _ in range(5))
    # A budget whose own plan still fits at the pace is not blended upward with a plan it never takes.
    for _ in range(planner_module.PACE_WINDOW):
        planner.observe(slow, 4.0 * 1.25)
    assert planner.pace == pytest.approx(1.25) and all(planner.choose(3.0, 10) == cheap for _ in range(20))


def test_the_pace_follows_observed_latencies_and_moves_cached_choices(index_copy, tiny_model):
    searcher = Searcher(index_copy, model=tiny_model, encoder="torch", threads=1)
    points = [Point(Plan.parse("bm25:100"), 0.3, 0.3), Point(Plan.parse("1x8:100,4x48:10"), 2.0, 0.5),
              Point(Plan.parse("4x48:50"), 4.0, 0.9)]
    planner = Planner(searcher.index, fake_costs(searcher), Frontier("m", "i", "nDCG@10", 10, "t", 9, 3, points),
                      searcher)
    window = planner_module.PACE_WINDOW
    slow, middle, cheap = (p.plan for p in reversed(points))
    assert planner.choose(4.2, 10).sizes == slow.sizes and planner.pace == 1.0
    for _ in range(window):
        planner.observe(slow, 4.0 * 1.08)  # within the contract's tolerance: no pace
    assert planner.pace == 1.0
    for _ in range(window):
        planner.observe(slow, 4.0 * 1.3)  # the machine runs 30 % slower than calibrated
    assert planner.pace == pytest.approx(1.3)
    assert planner.choose(4.2, 10).sizes == middle.sizes  # 4.0 x 1.3 > 4.2: the cheaper plan
    for _ in range(window):
        planner.observe(middle, 2.0 * 1.02)  # the machine recovered
    assert planner.pace == 1.0 and planner.choose(4.2, 10).sizes == slow.sizes
    with pytest.raises(ValueError, match="below the cheapest"):
        planner.choose(0.29, 10)  # feasibility ignores the pace


def bm25_and_dense_planner(index_copy, tiny_model):
    """A calibrated planner of two plans: BM25 alone at 0.3 ms and a dense scan at 4 ms, each searched once
    already; (planner, cheap, slow)."""
    searcher = Searcher(index_copy, model=tiny_model, encoder="torch", threads=1)
    points = [Point(Plan.parse("bm25:100"), 0.3, 0.3), Point(Plan.parse("4x48:50"), 4.0, 0.9)]
    planner = Planner(searcher.index, fake_costs(searcher), Frontier("m", "i", "nDCG@10", 10, "t", 9, 2, points),
                      searcher)
    set_up(planner, points[0].plan, points[1].plan)
    return planner, points[0].plan, points[1].plan


def set_up(planner, *plans):
    """Each plan's first search, which pays its one-time set-up: the planner does not count it."""
    for plan in plans:
        planner.observe(plan, 1000.0)


def test_a_plans_first_search_sets_neither_pace_nor_drift(index_copy, tiny_model):
    searcher = Searcher(index_copy, model=tiny_model, encoder="torch", threads=1)
    points = [Point(Plan.parse("bm25:100"), 0.3, 0.3), Point(Plan.parse("4x48:50"), 4.0, 0.9)]
    planner = Planner(searcher.index, fake_costs(searcher), Frontier("m", "i", "nDCG@10", 10, "t", 9, 2, points),
                      searcher)
    slow = points[1].plan
    window = planner_module.PACE_WINDOW
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        planner.observe(slow, 4.0 * 150)  # its first search: the encoder graph's first run
        for ratio in [1.0] * (window // 2) + [1.3] * (window // 2 - 1):
            planner.observe(slow, 4.0 * ratio)
        # Counted, the first search would fill the window, its median 1.15: a pace.
        assert planner.pace == 1.0
        planner.observe(slow, 4.0)
        assert planner.pace == 1.0  # the window's median: 1.0
        for _ in range(DRIFT_WINDOW):
            planner.observe(slow, 4.0 * 1.2)
    assert planner.pace == pytest.approx(1.2)  # and searches after it count as usual


def test_the_drift_warning_is_said_once(index_copy, tiny_model, monkeypatch):
    monkeypatch.setattr(planner_module, "DRIFT_SECONDS", 0.0)
    planner, cheap, slow = bm25_and_dense_planner(index_copy, tiny_model)
    with pytest.warns(UserWarning, match="2.5x the calibrated latency") as said:
        for i in range(4 * DRIFT_WINDOW):
            planner.observe(slow, 4.0 * (2.5 + i // DRIFT_WINDOW / 10))  # each check's ratio differs a little
    assert len(said) == 1


def test_sub_millisecond_plans_do_not_set_the_pace_and_it_expires(index_copy, tiny_model):
    planner, cheap, slow = bm25_and_dense_planner(index_copy, tiny_model)
    for _ in range(planner_module.PACE_EXPIRY):
        planner.observe(cheap, 0.3 * 1.4)  # sub-millisecond: jitter, not the machine's pace
    assert planner.pace == 1.0
    for _ in range(planner_module.PACE_WINDOW):
        planner.observe(slow, 4.0 * 1.3)
    assert planner.pace == pytest.approx(1.3) and planner.choose(4.2, 10) == cheap
    for _ in range(planner_module.PACE_EXPIRY - 1):
        planner.observe(cheap, 0.3)
    assert planner.pace == pytest.approx(1.3)
    planner.observe(cheap, 0.3)  # nothing has set the pace for PACE_EXPIRY searches: try the plan again
    assert planner.pace == 1.0 and planner.choose(4.2, 10).sizes == slow.sizes


def test_plans_that_encode_set_the_pace_from_half_a_millisecond_and_bm25_alone_never(index_copy, tiny_model):
    searcher = Searcher(index_copy, model=tiny_model, encoder="torch", threads=1)
    points = [Point(Plan.parse("1x8:50"), 0.4, 0.4), Point(Plan.parse("1x8:100,4x48:10"), 0.8, 0.5),
              Point(Plan.parse("bm25:100"), 1.5, 0.6), Point(Plan.parse("4x48:50"), 4.0, 0.9)]
    planner = Planner(searcher.index, fake_costs(searcher), Frontier("m", "i", "nDCG@10", 10, "t", 9, 4, points),
                      searcher)
    tiny, cheap, bm25, _ = (p.plan for p in points)
    set_up(planner, *(p.plan for p in points))
    window = planner_module.PACE_WINDOW
    for _ in range(window):
        planner.observe(bm25, 1.5 * 1.4)  # BM25 alone: its terms' postings, not the machine
        planner.observe(tiny, 0.4 * 1.4)  # under half a millisecond: the timer's jitter
    assert planner.pace == 1.0
    for _ in range(window):
        planner.observe(cheap, 0.8 * 1.3)  # a sub-millisecond plan that encodes its query
    assert planner.pace == pytest.approx(1.3)


def pinned(searcher) -> str:
    """The plan a calibration search is pinned to (``Planner.pinned``)."""
    (point,) = searcher.planner.frontier.points
    return str(point.plan)


def test_frontier_latencies_are_measured_as_searches(index_copy, tiny_model, monkeypatch):
    from retrieval.calibrate import end_to_end

    monkeypatch.setattr(planner_module, "PACE_MIN_MS", 0.0)  # made-up estimates: plans that set the pace
    searcher = Searcher(index_copy, model=tiny_model, encoder="torch", threads=1)
    calls = []
    real = searcher.search
    monkeypatch.setattr(searcher, "search", lambda text, k, budget: calls.append((text, pinned(searcher))) or real(
        text, k=k, budget=budget))
    points = [Point(Plan.parse("1x8:50,4x48:10"), 0.001, 0.5), Point(Plan.parse("4x48:50"), 0.002, 0.9)]
    between = []  # after each plan's pass (``Spells``): the searches run so far
    out = end_to_end(searcher, points, ["coffee", "jazz harmony"], k=10, repeats=2,
                     between=lambda: between.append(len(calls)))
    assert [p.plan for p in out] == [p.plan for p in points] and [p.effectiveness for p in out] == [0.5, 0.9]
    assert all(p.ms > 0.001 for p in out)  # a whole search costs more than the made-up estimate
    assert calls.count(("jazz harmony", "1x8:50,4x48:10")) == 2 and len(calls) == 2 * (1 + 2 * 2)
    assert between == [4, 6, 8, 10]  # after the two warm-up searches, each pass of two searches


def test_frontier_latencies_keep_the_slow_searches_a_mean_counts(index_copy, tiny_model, monkeypatch):
    """One search in six takes 30 ms: the mean latency the budget contract checks counts it (a median would not)."""
    import time

    from retrieval.calibrate import end_to_end

    searcher = Searcher(index_copy, model=tiny_model, encoder="torch", threads=1)
    calls = []
    monkeypatch.setattr(searcher, "search", lambda text, k, budget: calls.append(text) or (
        time.sleep(0.03) if len(calls) == 4 else None))  # calls: warm-up, then 3 passes over 2 queries
    (point,) = end_to_end(searcher, [Point(Plan.parse("4x48:50"), 0.001, 0.9)], ["a", "b"], k=10, repeats=3)
    assert point.ms >= 30 / 6


def test_frontier_latencies_keep_each_plans_slowest_pass(index_copy, tiny_model, monkeypatch):
    """Passes run every plan in turn; a plan keeps its slowest pass's mean, so a slow spell of the machine
    during one pass counts whole (the overall mean would dilute it), and each plan keeps its own."""
    import time

    from retrieval.calibrate import end_to_end

    monkeypatch.setattr(planner_module, "PACE_MIN_MS", 0.0)  # made-up estimates: plans that set the pace
    searcher = Searcher(index_copy, model=tiny_model, encoder="torch", threads=1)
    order = []
    slow = {("4x48:50", 2)}  # (plan, pass) pairs that run slowly

    def search(text, k, budget):
        order.append(pinned(searcher))
        done = order.count(order[-1]) - 1  # this plan's searches before this one (warm-up first)
        if (order[-1], (done - 1) // 2 if done else -1) in slow:
            time.sleep(0.02)

    monkeypatch.setattr(searcher, "search", search)
    points = [Point(Plan.parse("4x48:50"), 0.001, 0.9), Point(Plan.parse("1x8:100,4x48:10"), 0.001, 0.8)]
    fast_plan_ms = end_to_end(searcher, points, ["a", "b"], k=10, repeats=3)
    assert order[2:] == ["4x48:50"] * 2 + ["1x8:100,4x48:10"] * 2 + ["4x48:50"] * 2 + ["1x8:100,4x48:10"] * 2 + \
        ["4x48:50"] * 2 + ["1x8:100,4x48:10"] * 2  # warm-ups, then passes over every plan in turn
    assert fast_plan_ms[0].ms >= 20  # its third pass: 20 ms a search (the overall mean would be under 7)
    assert fast_plan_ms[1].ms < 5


def test_a_plan_that_cannot_set_the_pace_is_timed_through_the_whole_measurement(index_copy, tiny_model, monkeypatch):
    """BM25 alone does not set the pace, so a slow spell never moves its budgets: it also searches after every
    other plan's pass, and keeps its slowest mean over STEADY_WINDOW consecutive searches, here a spell that
    falls between its own passes. A plan that sets the pace keeps its slowest pass, and runs no more."""
    import time

    from retrieval import calibrate as cal

    monkeypatch.setattr(cal, "STEADY_WINDOW", 2)
    searcher = Searcher(index_copy, model=tiny_model, encoder="torch", threads=1)
    order = []

    def search(text, k, budget):
        order.append(pinned(searcher))
        if order[-1] == "bm25:100" and order.count("bm25:100") in (4, 5):  # after the warm-up, its 3rd and 4th
            time.sleep(0.01)  # searches: the sweep after the dense plan's first pass, between BM25's own passes

    monkeypatch.setattr(searcher, "search", search)
    points = [Point(Plan.parse("bm25:100"), 0.2, 0.5), Point(Plan.parse("4x48:50"), 2.0, 0.9)]
    bm25, dense = cal.end_to_end(searcher, points, ["a", "b"], k=10, repeats=2)
    # the warm-ups; then in each pass BM25's own sweep, the dense plan's, and BM25's again after it
    assert order == ["bm25:100", "4x48:50"] + (["bm25:100"] * 2 + ["4x48:50"] * 2 + ["bm25:100"] * 2) * 2
    assert bm25.ms >= 10  # its own passes ran fast: their slowest mean is well under a millisecond
    assert dense.ms < 10


def test_a_budget_the_pace_puts_out_of_reach_warns_once(index_copy, tiny_model):
    searcher = Searcher(index_copy, model=tiny_model, encoder="torch", threads=1)
    points = [Point(Plan.parse("1x8:10"), 1.0, 0.5), Point(Plan.parse("4x48:50"), 4.0, 0.9)]
    planner = Planner(searcher.index, fake_costs(searcher), Frontier("m", "i", "nDCG@10", 10, "t", 9, 2, points),
                      searcher)
    cheap, slow = points[0].plan, points[1].plan
    set_up(planner, cheap, slow)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert planner.choose(1.05, 10) == cheap  # at the measured pace it fits
        for _ in range(planner_module.PACE_WINDOW):
            planner.observe(slow, 4.0 * 1.3)
        assert planner.choose(4.2, 10) == cheap  # at the pace a cheaper plan keeps this one: no warning
    with pytest.warns(UserWarning, match=r"1\.30x slower than measured: budget 1\.05 ms cannot be kept now "
                                         r"\(its cheapest plan, 1x8:10, takes about 1\.30 ms\)"):
        assert planner.choose(1.05, 10) == cheap
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        planner._chosen.clear()  # chosen again (as when the pace moves): said once per budget
        assert planner.choose(1.05, 10) == cheap


def test_a_budget_on_bm25_alone_is_not_told_by_the_pace_of_plans_that_encode(index_copy, tiny_model):
    """BM25 alone does not slow with the plans that set the pace: a budget on it hears of an overrun
    from its own searches (the next test), never from theirs."""
    planner, cheap, slow = bm25_and_dense_planner(index_copy, tiny_model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(planner_module.PACE_WINDOW):
            planner.observe(slow, 4.0 * 1.8)
        assert planner.pace == pytest.approx(1.8)
        assert planner.choose(0.31, 10) == cheap  # 0.3 ms at 1.8x would be 0.54 ms: no warning
        assert planner.choose(4.2, 10) == cheap  # the pace still moves a budget off the plan that encodes


def test_sub_millisecond_plans_never_trigger_the_drift_check(index_copy, tiny_model, monkeypatch):
    monkeypatch.setattr(planner_module, "DRIFT_SECONDS", 0.0)
    planner, cheap, slow = bm25_and_dense_planner(index_copy, tiny_model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(4 * DRIFT_WINDOW):
            planner.observe(cheap, 0.3 * 2.5)  # a BM25 search's latency swings with its terms
    with pytest.warns(UserWarning, match="2.5x the calibrated latency"):
        for _ in range(DRIFT_WINDOW):
            planner.observe(slow, 4.0 * 2.5)


def test_a_long_query_is_not_a_slow_machine(index_copy, tiny_model):
    """A calibrated plan's latency grows with its query's tokens: the pace compares each search with what
    its length leads one to expect, so long queries at their expected latency leave it at 1, while the
    same latencies at the mean length, or every query slower than its length explains, move it."""
    searcher = Searcher(index_copy, model=tiny_model, encoder="torch", threads=1)
    slow = Point(Plan.parse("4x48:50"), 4.0, 0.9, per_token_ms=0.1, tokens=20.0)
    points = [Point(Plan.parse("bm25:100"), 0.3, 0.3), slow]
    planner = Planner(searcher.index, fake_costs(searcher), Frontier("m", "i", "nDCG@10", 10, "t", 9, 2, points),
                      searcher)
    window = planner_module.PACE_WINDOW
    for _ in range(window):
        planner.observe(slow.plan, 6.0, tokens=40)  # 20 tokens over the mean: 4.0 + 20 x 0.1 expected
    assert planner.pace == 1.0
    for _ in range(window):
        planner.observe(slow.plan, 6.0 * 1.3, tokens=40)
    assert planner.pace == pytest.approx(1.3)
    planner._set_pace(1.0)
    for _ in range(window):
        planner.observe(slow.plan, 6.0)  # no token count: the plan's mean is what is expected
    assert planner.pace == pytest.approx(1.5)


def test_expected_latency_of_a_query_by_its_length():
    point = Point(Plan.parse("4x48:50"), 4.0, 0.9, per_token_ms=0.1, tokens=20.0)
    assert point.expected_ms(20) == 4.0 and point.expected_ms(None) == 4.0
    assert point.expected_ms(30) == pytest.approx(5.0) and point.expected_ms(10) == pytest.approx(3.0)
    assert point.expected_ms(0) == pytest.approx(2.0) and point.expected_ms(-1000) == pytest.approx(0.4)  # a floor
    assert Point(Plan.parse("4x48:50"), 4.0, 0.9).expected_ms(60) == 4.0  # not fitted: the mean
    again = Frontier.from_dict(Frontier("m", "i", "nDCG@10", 10, "t", 9, 1, [point]).to_dict())
    assert again.points == [point] and again.point(Plan.parse("4x48:50")) == point
    old = {k: v for k, v in point.to_dict().items() if k not in ("per_token_ms", "tokens")}
    assert Point.from_dict(old).expected_ms(60) == 4.0  # a calibration written before the fit loads


def test_the_per_token_fit():
    from retrieval.calibrate import per_token

    tokens = np.array([10.0, 20.0, 30.0, 40.0])
    fit = per_token(tokens, 1.0 + 0.05 * tokens)
    assert fit["per_token_ms"] == pytest.approx(0.05) and fit["tokens"] == 25.0
    assert per_token(tokens, 3.0 - 0.05 * tokens)["per_token_ms"] == 0.0  # never negative
    assert per_token(np.full(4, 12.0), np.array([1.0, 2.0, 3.0, 4.0]))["per_token_ms"] == 0.0  # one length


def test_a_budgeted_search_tells_the_planner_its_querys_tokens_and_its_budget(index_copy, tiny_model, monkeypatch):
    searcher = Searcher(index_copy, model=tiny_model, encoder="torch", threads=1)
    points = [Point(Plan.parse("1x8:100,4x48:10"), 2.0, 0.5)]
    searcher._planner = planner = Planner(searcher.index, fake_costs(searcher),
                                          Frontier("m", "i", "nDCG@10", 10, "t", 9, 1, points), searcher)
    seen = []
    monkeypatch.setattr(planner, "observe", lambda plan, ms, tokens=None, **kw: seen.append((tokens, kw)))
    query = "coffee roasting and the chemistry of crema"
    searcher.search(query, k=10, budget=3.0)
    searcher.search(query, k=10, budget=Plan.parse("1x8:100,4x48:10"))  # a plan, not a budget: not observed
    assert seen == [(n, {"budget": 3.0, "k": 10}) for n in searcher.encoder.token_counts([query])]


def test_budgets_follow_the_served_queries_mean_length(index_copy, tiny_model):
    """The pace judges each search by its own length, so it cannot see queries that are all longer than
    the calibration topics; the planner follows their mean over the last searches instead, and a budget
    then chooses the plan expected to fit at that length. A short run of long queries does not move it."""
    searcher = Searcher(index_copy, model=tiny_model, encoder="torch", threads=1)
    points = [Point(Plan.parse("1x8:50"), 0.5, 0.3, per_token_ms=0.02, tokens=10.0),
              Point(Plan.parse("1x8:100,4x48:10"), 2.0, 0.5, per_token_ms=0.1, tokens=10.0),
              Point(Plan.parse("4x48:50"), 4.0, 0.9, per_token_ms=0.2, tokens=10.0)]
    planner = Planner(searcher.index, fake_costs(searcher), Frontier("m", "i", "nDCG@10", 10, "t", 9, 3, points),
                      searcher)
    cheap, middle, slow = (p.plan for p in points)
    window = planner_module.LENGTH_WINDOW
    assert planner.choose(2.0, 10) == middle
    for i in range(window):  # a run of eight 30-token queries among 10-token ones
        planner.observe(middle, points[1].expected_ms(30 if i < 8 else 10), tokens=30 if i < 8 else 10)
    assert planner.tokens is None and planner.choose(2.0, 10) == middle and planner.pace == 1.0
    for _ in range(window):  # every query 20 tokens, each at the latency its length leads one to expect
        planner.observe(middle, points[1].expected_ms(20), tokens=20)
    assert planner.pace == 1.0 and 17.5 < planner.tokens <= 20.0  # followed in steps of a quarter
    assert planner.choose(2.0, 10) == cheap  # middle averages 3.0 ms at 20 tokens
    assert planner.choose(5.0, 10) == middle  # slow averages 6.0
    for _ in range(window):
        planner.observe(cheap, points[0].expected_ms(10), tokens=10)
    assert planner.tokens is None and planner.choose(2.0, 10) == middle  # back to the topics: their choices


def test_a_served_length_chooses_by_the_latency_expected_at_it():
    points = [Point(Plan.parse("1x8:50"), 0.5, 0.3, per_token_ms=0.02, tokens=10.0),
              Point(Plan.parse("4x48:50"), 4.0, 0.9, per_token_ms=0.2, tokens=10.0)]
    frontier = Frontier("m", "i", "nDCG@10", 10, "t", 9, 2, points)
    assert frontier.choose(4.0, 10) == points[1].plan and frontier.choose(4.0, 10, tokens=10) == points[1].plan
    assert frontier.choose(4.0, 10, tokens=12) == points[0].plan and frontier.choose(3.2, 10, tokens=6) == points[1].plan
    with pytest.raises(ValueError, match="below the cheapest"):
        frontier.choose(0.45, 10, tokens=1)  # feasibility: the cheapest plan's measured mean


def test_warm_up_runs_each_plan_a_budget_can_choose_once_and_writes_nothing(index_copy, tiny_model, monkeypatch):
    import os

    searcher = Searcher(index_copy, model=tiny_model, encoder="torch", threads=1)
    searched = []
    real = searcher.search
    monkeypatch.setattr(searcher, "search", lambda text, k, budget: searched.append(str(budget)) or real(
        text, k=k, budget=budget))
    files = sorted(os.listdir(index_copy))
    default = str(searcher.planner.default(10))
    assert list(searcher.warm_up()) == [default] and searched == [default]  # uncalibrated: the default plan
    points = [Point(Plan.parse("1x8:100,4x48:10"), 2.0, 0.5), Point(Plan.parse("4x48:50"), 4.0, 0.9)]
    searcher._planner = Planner(searcher.index, None, Frontier("m", "i", "nDCG@10", 10, "t", 9, 2, points), searcher)
    ran = searcher.warm_up()
    assert list(ran) == [str(p.plan) for p in points] and all(ms > 0 for ms in ran.values())
    assert searched[1:] == [str(p.plan) for p in points]
    assert sorted(os.listdir(index_copy)) == files  # nothing measured or cached
    assert searcher.planner.pace == 1.0 and not searcher.planner._predicted  # plans, not budgets: nothing observed


def three_plan_planner(index_copy, tiny_model):
    """A calibrated planner of BM25 alone (0.3 ms), a cascade (2 ms) and a scan (4 ms), each searched once
    already; (planner, cheap, middle, slow)."""
    searcher = Searcher(index_copy, model=tiny_model, encoder="torch", threads=1)
    points = [Point(Plan.parse("bm25:100"), 0.3, 0.3), Point(Plan.parse("1x8:100,4x48:10"), 2.0, 0.5),
              Point(Plan.parse("4x48:50"), 4.0, 0.9)]
    planner = Planner(searcher.index, fake_costs(searcher), Frontier("m", "i", "nDCG@10", 10, "t", 9, 3, points),
                      searcher)
    set_up(planner, *(p.plan for p in points))
    return (planner, *(p.plan for p in points))


def test_a_budget_makes_up_an_overrun_on_cheaper_plans_and_its_mean_holds(index_copy, tiny_model):
    planner, cheap, middle, slow = three_plan_planner(index_copy, tiny_model)
    budget, cost = 4.2, {cheap: 0.3, middle: 2.0, slow: 4.0}
    ran = []

    def search(stall=0.0):
        plan = planner.choose(budget, 10)
        ms = cost[plan] + stall
        planner.observe(plan, ms, budget=budget, k=10)
        ran.append((plan, ms))

    for _ in range(50):
        search()
    search(stall=30.0)  # one slow search: an overrun under OVERRUN_FROM budgets is left to the slack
    search()
    assert {p for p, _ in ran} == {slow} and planner.made_up[(budget, 10)] == 0
    start = len(ran)
    search(stall=300.0)  # the machine stopped: no pace sees one search
    while planner._overrun[(budget, 10)] > 0:
        search()
    made_up = ran[start + 1:]
    assert made_up[0][0] == cheap and middle in {p for p, _ in made_up}  # cheapest first, then less cut
    assert planner.made_up[(budget, 10)] == sum(p != slow for p, _ in made_up) > 0
    assert planner.choose(budget, 10) == slow  # made up: its own plan again
    # Over the stretch from no overrun to no overrun, the mean is within the contract's tolerance.
    stretch = ran[start - 52:]
    assert sum(ms for _, ms in stretch) / len(stretch) <= planner_module.PACE_SLACK * budget
    assert planner.pace == 1.0  # one stop sets no pace


def test_a_budget_on_the_cheapest_plan_overruns_without_an_error_and_says_once_it_cannot_be_kept(index_copy, tiny_model):
    planner, cheap, middle, slow = three_plan_planner(index_copy, tiny_model)
    planner.observe(cheap, 0.35 * (1.1 + 20), budget=0.35, k=10)  # 20 budgets over: its later searches can make it up
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert planner.choose(0.35, 10) == cheap
    for _ in range(3):
        planner.observe(cheap, 100.0, budget=0.35, k=10)
    with pytest.warns(UserWarning, match=r"budget 0.35 ms cannot be kept now: .* already runs the cheapest plan \(bm25:100\)"):
        assert planner.choose(0.35, 10) == cheap and planner.made_up[(0.35, 10)] == 0  # nothing cheaper to run
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once; a budget with cheaper plans makes its overrun up in silence
        assert planner.choose(0.35, 10) == cheap
        for _ in range(3):  # another budget's overrun is its own
            planner.observe(slow, 100.0, budget=4.2, k=10)
        assert planner.choose(4.2, 10) == cheap and planner.choose(4.2, 5) == slow
        assert planner.choose(2.5, 10) == middle
    with pytest.raises(ValueError, match="below the cheapest"):
        planner.choose(0.29, 10)  # a cut budget never is, but a budget below every plan still is


def test_a_plans_first_search_adds_no_overrun(index_copy, tiny_model):
    searcher = Searcher(index_copy, model=tiny_model, encoder="torch", threads=1)
    points = [Point(Plan.parse("bm25:100"), 0.3, 0.3), Point(Plan.parse("4x48:50"), 4.0, 0.9)]
    planner = Planner(searcher.index, fake_costs(searcher), Frontier("m", "i", "nDCG@10", 10, "t", 9, 2, points),
                      searcher)
    planner.observe(points[1].plan, 4.0 * 150, budget=4.2, k=10)  # its encoder graph's first run
    assert planner.choose(4.2, 10) == points[1].plan and not planner.made_up
    planner.observe(points[1].plan, 4.0 * 150, budget=4.2, k=10)
    assert planner.choose(4.2, 10) == points[0].plan


def test_an_uncalibrated_budget_makes_up_an_overrun_from_the_cost_model(index_copy, tiny_model):
    searcher = Searcher(index_copy, model=tiny_model, encoder="torch", threads=1)
    planner = Planner(searcher.index, fake_costs(searcher), None, searcher)
    with pytest.warns(UserWarning, match="cost model alone"):
        own = planner.choose(8.0, 10)
    costs = planner.costs
    planner.observe(own, costs.predict(own))  # its first search
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a cut budget below every plan is no error and says nothing
        planner.observe(own, 1000.0, budget=8.0, k=10)
        cut = planner.choose(8.0, 10)
    cheapest = min(costs.predict(p) for p in planner.candidates(10))
    assert costs.predict(cut) == cheapest < costs.predict(own) and planner.made_up[(8.0, 10)] == 1


def test_making_up_an_overrun_can_be_turned_off(index_copy, tiny_model):
    import math

    planner, cheap, middle, slow = three_plan_planner(index_copy, tiny_model)
    planner.overrun_from = math.inf
    planner.observe(slow, 300.0, budget=4.2, k=10)
    assert planner.choose(4.2, 10) == slow and not planner.made_up


def test_an_overrun_is_kept_up_to_a_limit(index_copy, tiny_model):
    planner, cheap, middle, slow = three_plan_planner(index_copy, tiny_model)
    planner.observe(slow, 60_000.0, budget=4.2, k=10)  # a minute's stop
    searches = 0
    while planner.choose(4.2, 10) != slow:
        plan = planner.choose(4.2, 10)
        planner.observe(plan, {cheap: 0.3, middle: 2.0}[plan], budget=4.2, k=10)
        searches += 1
    limit = planner_module.OVERRUN_MAX * 4.2
    assert limit / (1.1 * 4.2 - 0.3) < searches < limit / (1.1 * 4.2 - 2.0)  # made up from the limit, not a minute


def test_calibration_times_a_plan_as_a_budget_that_chooses_it(index_copy, tiny_model, monkeypatch):
    """A budgeted search costs the planner's choice and observation on top of the plan: calibration searches
    each plan through a planner pinned to it, so its latency counts them, and says nothing of its estimate."""
    import time

    from retrieval.calibrate import end_to_end

    monkeypatch.setattr(planner_module, "PACE_MIN_MS", 0.0)  # made-up estimates: plans that set the pace
    searcher = Searcher(index_copy, model=tiny_model, encoder="torch", threads=1)
    own = searcher.planner
    observed = []
    real = Planner.observe

    def observe(self, plan, ms, tokens=None, **kw):
        observed.append(str(plan))
        time.sleep(0.005)  # the planner's work, made large
        return real(self, plan, ms, tokens, **kw)

    monkeypatch.setattr(Planner, "observe", observe)
    points = [Point(Plan.parse("1x8:50,4x48:10"), 0.001, 0.5), Point(Plan.parse("4x48:50"), 0.002, 0.9)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # searches far over the made-up estimates: no drift warning, no budget warning
        out = end_to_end(searcher, points, ["coffee", "jazz harmony"], k=10, repeats=8)
    assert observed.count("1x8:50,4x48:10") == observed.count("4x48:50") == 1 + 8 * 2
    assert all(p.ms >= 5 for p in out)  # searched by plan, no search would observe: well under 5 ms here
    assert searcher.planner is own
