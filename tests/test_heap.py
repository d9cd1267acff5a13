"""What a loaded searcher leaves to the cycle collector and the page tables: frozen objects, no
reference cycles of its own, BM25 postings mapped before the first search, and the benchmark's
record of the collector's passes inside timed searches."""
import gc
import resource
import weakref

import numpy as np
import pytest

from experiments.query_path import CollectorPasses, timed
from indexes.sparse import PAGE, resident
from retrieval import Plan, Searcher
from starbucks.heap import settle


@pytest.fixture
def unfrozen():
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_a_searcher_freezes_what_is_alive_out_of_the_collectors_passes(built_index, tiny_model, unfrozen):
    Searcher(built_index, model=tiny_model, freeze_heap=False)
    assert gc.get_freeze_count() == 0
    Searcher(built_index, model=tiny_model)
    assert gc.get_freeze_count() > 10_000  # the imported libraries' objects, far more than the searcher's


def test_settle_collects_garbage_before_freezing(unfrozen):
    class Node:
        pass

    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle, garbage once the names go
    dead = weakref.ref(a)
    del a, b
    settle()
    assert dead() is None


def test_a_dropped_searcher_is_freed_without_the_collector(built_index, tiny_model):
    """Frozen objects in a reference cycle are never collected: a searcher, its planner (once a budget made
    one) and its named encoders must be freed by reference counting alone."""
    gc.disable()
    try:
        s = Searcher(built_index, model=tiny_model, encoder="onnx", threads=1)
        s.search("coffee roasting", k=5, budget=Plan.parse("1x8:20,4x48:5"))
        s.planner  # the planner refers back to its searcher
        s.search("coffee roasting", k=5, budget=Plan.parse("1x8:20,4x48:5,encoder=onnx-int8"))
        gone = weakref.ref(s)
        planner = weakref.ref(s.planner)
        del s
        assert gone() is None and planner() is None
    finally:
        gc.enable()


def test_a_planner_measures_without_its_searcher(built_index, tiny_model, monkeypatch):
    """It holds what it measures with (index, encoder, tier), not the searcher: it works on when the searcher
    it came from is gone."""
    import retrieval.planner as planner_module

    monkeypatch.setattr(planner_module, "MAX_SPREAD", float("inf"))
    s = Searcher(built_index, model=tiny_model, encoder="onnx", threads=1)
    planner, encoder = s.planner, s.encoder
    del s
    assert planner.path.encoder is encoder
    assert planner.remeasure().encode_ms


def _faults_reading(array: np.ndarray) -> int:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    int(array.view(np.uint8)[::PAGE].max())
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def test_resident_maps_every_page_before_a_search_reads_it(tmp_path):
    np.save(tmp_path / "postings.npy", np.arange(1 << 23, dtype=np.int32))  # 32 MiB, 8,192 pages
    cold = np.load(tmp_path / "postings.npy", mmap_mode="r")
    assert _faults_reading(np.asarray(cold)) > 8  # a fresh map faults its pages in as they are read
    warm = np.asarray(np.load(tmp_path / "postings.npy", mmap_mode="r"))
    resident(warm)
    assert _faults_reading(warm) <= 2
    assert int(warm[12345]) == 12345  # and reads the values as stored


def test_timed_searches_record_the_collector_passes_inside_them():
    topics = {"q1": "a", "q2": "b"}

    class Result:
        docids, plan = ["d"], "p"

    def collecting(_):
        gc.collect()
        return Result()

    out = timed([("budget", "collects", collecting), ("budget", "quiet", lambda _: Result())], topics, 2)
    assert out["collects"]["collector"]["full_passes"] == 2 * 2  # each pass, each query; not the untimed warm-up
    assert out["collects"]["collector"]["ms"] > 0
    assert out["quiet"]["collector"] == {"passes": 0, "full_passes": 0, "ms": 0.0}
    assert not any(isinstance(c, CollectorPasses) for c in gc.callbacks)


def test_budget_blocks_record_the_machines_speed_before_each_pass():
    from experiments.query_path import reference_ms

    class Result:
        docids, plan = ["d"], "p"

    systems = [("budget", "a", lambda _: Result()), ("budget", "b", lambda _: Result())]
    base = reference_ms()
    assert base > 0
    out = timed(systems, {"q1": "x", "q2": "y"}, 3, interleave=False, reference=base)
    for n in "ab":
        assert len(out[n]["machine_x"]) == len(out[n]["machine_x_after"]) == len(out[n]["pass_mean_ms"]) == 3
        assert min(out[n]["machine_x"] + out[n]["machine_x_after"]) > 0
    assert "machine_x" not in timed(systems, {"q1": "x"}, 2, reference=base)["a"]  # in turn: no blocks
    kept = timed(systems, {"q1": "x", "q2": "y"}, 2, interleave=False, keep_rankings=True)["a"]
    assert kept["rankings_per_pass"] == [{"q1": ["d"], "q2": ["d"]}] * 2
    assert "rankings_per_pass" not in out["a"]


def test_each_budgets_mean_is_over_as_many_searches_whatever_the_topic_sets_size():
    from experiments.query_path import block_note, budget_passes

    topics = {str(i): "q" for i in range(43)}
    assert budget_passes(topics, 3, 1000) == 24  # 1,032 searches over DL19's 43 topics
    assert budget_passes({str(i): "q" for i in range(300)}, 3, 1000) == 4
    assert budget_passes({str(i): "q" for i in range(500)}, 3, 1000) == 3  # never fewer than --repeats
    assert block_note([{"pass_mean_ms": [1.0] * 24, "searches": 1032}]) == \
        " each budget's mean over 24 passes, 1,032 searches."
    assert block_note([{"mean_ms": 1.0}]) == ""  # older results did not record it


def test_a_broken_budget_is_also_judged_at_calibrations_machine_speed():
    from experiments.query_path import at_machine_speed, still_broken, budget_row

    # A pass slowed down on both sides counts its slowdown; one side slow, or a faster machine, counts none.
    assert at_machine_speed([1.2, 1.2, 1.2], [1.2, 1.2, 0.8], [1.3, 1.0, 0.9]) == pytest.approx((1.0 + 1.2 + 1.2) / 3)

    class Calibrated:
        def measured(self, plan):
            return 1.0

    def row(pass_means, before, after):
        return {"plans": ["bm25:10"], "every_search_mean_ms": float(np.mean(pass_means)), "mean_ms": 1.0,
                "p95_ms": 1.0, "nDCG@10": 0.5, "pass_mean_ms": pass_means, "machine_x": before,
                "machine_x_after": after}

    spell = budget_row(1.0, row([1.3, 1.3], [1.3, 1.25], [1.3, 1.3]), Calibrated())
    slow_plan = budget_row(1.0, row([1.3, 1.3], [1.0, 1.0], [1.05, 0.95]), Calibrated())
    assert not spell["holds"] and spell["holds_at_calibration_speed"]
    assert not slow_plan["holds"] and not slow_plan["holds_at_calibration_speed"]
    assert still_broken([spell, slow_plan]) == [1.0] and still_broken([spell]) == []
    assert still_broken([{"budget_ms": 1.0, "holds": False}]) is None  # results without the bracket


def test_timed_searches_tell_work_on_the_cpu_from_waiting():
    import time

    class Result:
        docids, plan = ["d"], "p"

    def working(_):
        t = time.thread_time()
        while time.thread_time() - t < 0.004:
            pass
        return Result()

    def waiting(_):
        time.sleep(0.004)
        return Result()

    out = timed([("budget", "works", working), ("budget", "waits", waiting)], {"q1": "a", "q2": "b"}, 2)
    assert out["works"]["cpu_mean_ms"] >= 4 and out["works"]["off_cpu_ms"] < 4 * 2 * 2
    assert out["waits"]["cpu_mean_ms"] < 2 and out["waits"]["off_cpu_ms"] >= 4 * 2 * 2 * 0.9
    slowest = out["waits"]["slowest"]
    assert len(slowest) == 3 and slowest[0]["ms"] >= slowest[-1]["ms"] >= 4
    assert {s["query"] for s in slowest} <= {"q1", "q2"} and {s["pass"] for s in slowest} <= {0, 1}


def test_timed_blocks_profile_each_pass_with_the_steal_time_the_machine_saw(monkeypatch):
    import experiments.query_path as query_path

    class Result:
        docids, plan = ["d"], "p"

    reads = []  # /proc/stat is read around each pass, never between its searches

    def steal():
        reads.append(1)
        return np.array([7 * (len(reads) > 3), 0])  # 7 ticks during the second pass (reads 3 and 4)

    monkeypatch.setattr(query_path, "steal_ticks", steal)
    out = timed([("budget", "a", lambda _: Result())], {"q1": "x", "q2": "y"}, 2, interleave=False)
    assert len(reads) == 2 * 2
    profile = out["a"]["pass_profile"]
    assert [p["stolen_ms"] for p in profile] == [0.0, pytest.approx(7 * query_path.TICK_MS)]
    assert all(p["involuntary_switches"] >= 0 and p["faults"] >= 0 for p in profile)
    assert len(out["a"]["pass_mean_ms"]) == 2 and "machine_x" not in out["a"]  # no reference given
    assert "pass_profile" not in timed([("budget", "a", lambda _: Result())], {"q1": "x"}, 1)["a"]  # in turn


def test_a_broken_budget_is_also_judged_without_the_hypervisors_steal():
    from experiments.query_path import still_broken, budget_row, less_steal

    def profile(stolen, off):
        return {"stolen_ms": stolen, "off_cpu_ms": off, "involuntary_switches": 0, "faults": 0}

    # Two passes of 10 searches: the second lost 70 ms to steal, the thread 72 ms off the CPU.
    assert less_steal([1.0, 8.0], [profile(0, 0.5), profile(70, 72)], 20) == pytest.approx((1.0 + 1.0) / 2)
    # Steal on another CPU while the thread ran on: no more than its own time off the CPU is taken out.
    assert less_steal([1.0, 8.0], [profile(0, 0.5), profile(100, 20)], 20) == pytest.approx((1.0 + 6.0) / 2)
    assert less_steal([1.0], [profile(None, 0.0)], 10) is None  # steal not known

    class Calibrated:
        def measured(self, plan):
            return 1.0

    row = {"plans": ["bm25:10"], "every_search_mean_ms": 4.5, "mean_ms": 1.0, "p95_ms": 1.0, "nDCG@10": 0.5,
           "pass_mean_ms": [1.0, 8.0], "searches": 20, "pass_profile": [profile(0, 0.5), profile(70, 72)]}
    stopped = budget_row(1.0, row, Calibrated())
    assert not stopped["holds"] and stopped["holds_less_steal"]
    assert still_broken([stopped], "holds_less_steal") == []
    ran_over = budget_row(1.0, {**row, "pass_profile": [profile(0, 0.5), profile(0, 72)]}, Calibrated())
    assert still_broken([stopped, ran_over], "holds_less_steal") == [1.0] and not ran_over["holds_less_steal"]


def test_cold_paths_time_each_frontier_plans_first_search(built_index, tiny_model):
    from experiments.cold_paths import first_searches
    from retrieval.frontier import Frontier, Point
    from retrieval.planner import Planner

    searcher = Searcher(built_index, model=tiny_model, encoder="torch", threads=1)
    assert first_searches(searcher, "coffee") == [] or searcher.planner.frontier is not None
    points = [Point(Plan.parse("1x8:50"), 0.4, 0.4), Point(Plan.parse("4x48:50"), 4.0, 0.9)]
    searcher._planner = Planner(searcher.index, None, Frontier("m", "i", "nDCG@10", 10, "t", 9, 2, points), searcher)
    out = first_searches(searcher, "coffee", again=2)
    assert [f["plan"] for f in out] == ["1x8:50", "4x48:50"] and [f["calibrated_ms"] for f in out] == [0.4, 4.0]
    assert all(f["first_ms"] > 0 and f["again_median_ms"] > 0 and f["load_ms"] >= 0 for f in out)
    assert [f["exit_graph_saved"] for f in out] == [None, None]  # torch joins no graph


def test_cold_paths_say_whether_each_plans_exit_graph_was_saved_before_its_first_search(
        built_index, tiny_model, tmp_path, monkeypatch):
    from experiments.cold_paths import first_searches
    from retrieval.frontier import Frontier, Point
    from retrieval.planner import Planner

    monkeypatch.setenv("STARBUCKS_CACHE", str(tmp_path / "cache"))
    points = [Point(Plan.parse("2x16:50,4x48:10"), 2.0, 0.9)]

    def searcher():
        s = Searcher(built_index, model=tiny_model, encoder="onnx", threads=1)
        s._planner = Planner(s.index, None, Frontier("m", "i", "nDCG@10", 10, "t", 9, 2, points), s)
        return s

    assert [f["exit_graph_saved"] for f in first_searches(searcher(), "coffee", again=1)] == [False]  # joined, saved
    assert [f["exit_graph_saved"] for f in first_searches(searcher(), "coffee", again=1)] == [True]


def test_each_budgets_row_counts_the_searches_cut_to_make_up_an_overrun():
    import collections
    import types

    from experiments.query_path import K, made_up, markdown

    planner = types.SimpleNamespace(made_up=collections.Counter({(2.0, K): 5, (1.0, K): 1}))
    searcher = types.SimpleNamespace(planner=planner)

    def run():  # the block: three of the 2 ms budget's searches cut, none of the 1 ms budget's
        planner.made_up[(2.0, K)] += 3
        return {"budget 1 ms": {}, "budget 2 ms": {}}

    assert made_up(searcher, [1.0, 2.0], run) == {"budget 1 ms": {"made_up": 0}, "budget 2 ms": {"made_up": 3}}
    row = {"budget_ms": 2.0, "plan": "bm25:10", "predicted_ms": 1.0, "mean_ms": 1.0, "p95_ms": 1.0,
           "nDCG@10": 0.5, "holds": True, "made_up": 3}
    result = {"collection": "c", "note": "n", "documents": 1, "queries": 1, "default_encoder": "onnx",
              "calibration": {"topics": "t"}, "plans_measured": 1, "systems": {}, "budgets": [row], "summary": {}}
    text = markdown({"result": result, "provenance": {"command": "x", "git_commit": "0" * 40,
                                                       "machine": {"load_average": 0}},
                     "repeats": 3, "load_average_at_end": 0})
    assert "searches cut to make up an overrun |" in text
    assert [line for line in text.splitlines() if line.startswith("| 2 |")][0].endswith("| 3 |")


def test_the_query_path_benchmark_records_what_the_planner_warned_of_in_a_budget_block():
    import collections
    import types
    import warnings

    from experiments.query_path import made_up, markdown

    searcher = types.SimpleNamespace(planner=types.SimpleNamespace(made_up=collections.Counter()))

    def run():
        for _ in range(2):  # a message is recorded once, however often it is said
            warnings.warn("budget 0.2 ms cannot be kept now", UserWarning)
        warnings.warn("searches take 0.6x the calibrated latency", UserWarning)
        return {"budget 0.2 ms": {}}

    said = []
    with pytest.warns(UserWarning):  # and still shown
        made_up(searcher, [0.2], run, said)
    assert said == ["budget 0.2 ms cannot be kept now", "searches take 0.6x the calibrated latency"]
    row = {"budget_ms": 0.2, "plan": "bm25:10", "predicted_ms": 0.2, "mean_ms": 0.1, "p95_ms": 0.1,
           "nDCG@10": 0.5, "holds": True, "made_up": 0}
    result = {"collection": "c", "note": "n", "documents": 1, "queries": 1, "default_encoder": "onnx",
              "calibration": {"topics": "t"}, "plans_measured": 1, "systems": {}, "budgets": [row],
              "budgets_on_calibration_topics": [row], "summary": {},
              "planner_warnings": {"evaluation": said, "calibration": []}}
    result["calibration"]["timed"] = [{"plan": "bm25:100,3x64:10", "effectiveness": 0.345, "grid_ms": 1.01,
                                       "ms": [2.41], "on_frontier": False}]
    text = markdown({"result": result, "provenance": {"command": "x", "git_commit": "0" * 40,
                                                       "machine": {"load_average": 0}},
                     "repeats": 3, "load_average_at_end": 0})
    assert 'The planner warned: "budget 0.2 ms cannot be kept now"; "searches take 0.6x the calibrated latency".' in text
    assert "The planner warned: nothing." in text
    assert "| bm25:100,3x64:10 | 0.3450 | 1.01 | 2.41 | no |" in text  # what calibration timed, and dropped
