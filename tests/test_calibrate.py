"""Calibration: measured plans, the Pareto frontier on disk, and budgets chosen from it."""
import json
import shutil
import warnings

import numpy as np
import pytest

from retrieval import Plan, Searcher
from retrieval.calibrate import calibrate
from retrieval.cli import main
from retrieval.frontier import CALIBRATION, Frontier, Point, at_depth, pareto
from retrieval.planner import index_key, machine_key, sets_pace
from starbucks.sizes import Size

QUERIES = ["coffee roasting", "jazz harmony and chess openings", "volcano eruptions", "deep learning for coral reefs",
           "railway signals", "ancient rome solar flares", "quantum computing", "sourdough bread",
           "medieval castles", "tidal energy", "glacier melting", "vaccine trials"]
FULL = Size(4, 48)


def judged(searcher, n_relevant: int = 3):
    """Topics and qrels that call the full size's top documents relevant, so smaller sizes lose quality."""
    topics = {f"q{i}": q for i, q in enumerate(QUERIES)}
    qrels = {}
    for qid, text in topics.items():
        q = searcher.encoder.encode_queries([text], [FULL])[FULL][0]
        top = np.argsort(-(np.asarray(searcher.index.vectors[FULL], dtype=np.float32) @ q), kind="stable")[:n_relevant]
        qrels[qid] = {searcher.index.docids[int(i)]: 1 for i in top}
    return topics, qrels


@pytest.fixture
def index_copy(built_index, tmp_path):
    """A private copy of the shared index, so a calibration written here does not leak into other tests."""
    folder = tmp_path / "idx"
    shutil.copytree(built_index, folder)
    (folder / CALIBRATION).unlink(missing_ok=True)
    return folder


@pytest.fixture(scope="module")
def calibrated(built_index, tiny_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("cal") / "idx"
    shutil.copytree(built_index, folder)
    searcher = Searcher(folder, model=tiny_model)
    topics, qrels = judged(searcher)
    frontier, points = calibrate(searcher, topics, qrels, "nDCG@10", topics_name="test", progress=False)
    frontier.save(folder)
    return folder, frontier, points, topics, qrels


def test_frontier_is_the_pareto_set_of_the_measured_plans(calibrated):
    folder, frontier, points, _, _ = calibrated
    assert frontier.k == 10 and frontier.queries == len(QUERIES) and frontier.plans_measured == len(points)
    assert {str(p.plan) for p in points} >= {f"{s}:200" for s in ("1x8", "2x16", "3x32", "4x48")}
    assert all(p.ms > 0 and 0 <= p.effectiveness <= 1 for p in points)
    kept = frontier.points
    assert [p.ms for p in kept] == sorted(p.ms for p in kept)
    assert all(a.effectiveness < b.effectiveness for a, b in zip(kept, kept[1:]))
    grid = pareto(points)  # the frontier of the grid's estimates; its plans were then timed end to end
    assert {str(p.plan) for p in kept} <= {str(p.plan) for p in grid}
    for p in points:  # every measured plan is on the grid's frontier or beaten on both counts by one that is
        assert any(g.ms <= p.ms and g.effectiveness >= p.effectiveness for g in grid)
    # The most effective plan measured is the exhaustive full size (it defines relevance here).
    assert kept[-1].effectiveness == max(p.effectiveness for p in points) == 1.0
    saved = json.loads((folder / CALIBRATION).read_text())
    assert saved["machine"] == frontier.machine and "encoder=" in saved["machine"] and Frontier.from_dict(saved) == frontier
    # What calibration timed end to end is kept with it: every plan of the grid's frontier, twice; the
    # frontier's plans are marked, each at the mean of its two latencies.
    timed = {t["plan"]: t for t in frontier.timed}
    assert set(timed) == {str(p.plan) for p in grid}
    assert all(len(t["ms"]) == 2 and all(ms > 0 for ms in t["ms"]) for t in timed.values())
    assert {plan for plan, t in timed.items() if t["on_frontier"]} == {str(p.plan) for p in kept}
    for p in kept:  # at the mean of its two, or the slower where it does not set the pace
        ms = timed[str(p.plan)]["ms"]
        assert p.ms == pytest.approx(sum(ms) / 2 if sets_pace(p.plan, sum(ms) / 2) else max(ms))


def test_budget_picks_the_most_effective_calibrated_plan_within_it(calibrated, tiny_model):
    folder, frontier, *_ = calibrated
    searcher = Searcher(folder, model=tiny_model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # calibrated: no fallback warning
        for point in frontier.points:
            plan = searcher.resolve(point.ms, 10)
            best = max((p for p in frontier.points if p.ms <= point.ms), key=lambda p: p.effectiveness)
            assert plan == at_depth(best.plan, 10)
    assert searcher.planner.source == "calibration"
    with pytest.raises(ValueError, match="below the cheapest calibrated plan"):
        searcher.resolve(frontier.points[0].ms / 2, 10)


def test_choose_from_a_given_frontier():
    plans = ["1x8:100,4x48:10", "1x8:500,4x48:10", "2x16:50,3x32:20,4x48:10", "4x48:200"]
    points = [Point(Plan.parse(p), ms, eff) for p, ms, eff in zip(plans, (1.0, 2.0, 3.0, 9.0), (0.5, 0.6, 0.7, 0.8))]
    frontier = Frontier("m", "i", "nDCG@10", 10, "t", 5, 4, pareto(points + [Point(Plan.parse("2x16:100,4x48:10"), 2.5, 0.55)]))
    assert [str(p.plan) for p in frontier.points] == plans
    assert frontier.choose(2.9, 10) == Plan.parse("1x8:500,4x48:10")
    assert frontier.choose(100, 10) == Plan.parse("4x48:200")
    assert frontier.choose(3.0, 30) == Plan.parse("1x8:500,4x48:30")  # the 50-20 cascade cannot return 30
    with pytest.raises(ValueError, match="4x48:600: 9.00 ms"):  # only the exact scan returns 600
        frontier.choose(8.0, 600)
    assert Frontier("m", "i", "nDCG@10", 10, "t", 5, 1, points[:1]).choose(5.0, 300) is None
    with pytest.raises(ValueError, match="below the cheapest calibrated plan"):
        frontier.choose(0.5, 10)


def test_at_depth():
    assert at_depth(Plan.parse("1x8:100,4x48:10"), 20) == Plan.parse("1x8:100,4x48:20")
    assert at_depth(Plan.parse("1x8:100,2x16:50,4x48:10"), 60) is None
    assert at_depth(Plan.parse("4x48:100"), 10) == Plan.parse("4x48:100")
    assert at_depth(Plan.parse("4x48:100"), 150) == Plan.parse("4x48:150")


def test_without_calibration_the_cost_model_plans_and_says_so_once(index_copy, tiny_model):
    searcher = Searcher(index_copy, model=tiny_model)
    with pytest.warns(UserWarning, match="cost model alone"):
        searcher.search("coffee", k=10, budget=1000.0)
    assert searcher.planner.source == "cost model"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        searcher.search("coffee", k=10, budget=1000.0)


def test_a_calibration_from_elsewhere_is_ignored(calibrated, index_copy, tiny_model):
    folder, frontier, *_ = calibrated
    data = frontier.to_dict()
    data["machine"] = "another machine"
    (index_copy / CALIBRATION).write_text(json.dumps(data))
    with pytest.warns(UserWarning, match="another machine"):
        planner = Searcher(index_copy, model=tiny_model).planner
    assert planner.frontier is None and planner.source == "cost model"
    (index_copy / CALIBRATION).write_text("{not json")
    with pytest.warns(UserWarning, match="unreadable"):
        assert Searcher(index_copy, model=tiny_model).planner.frontier is None
    data["machine"] = machine_key(Searcher(index_copy, model=tiny_model).encoder)
    (index_copy / CALIBRATION).write_text(json.dumps(data))
    assert data["index"] == index_key(Searcher(index_copy, model=tiny_model).index)
    assert Searcher(index_copy, model=tiny_model).planner.frontier == frontier


def test_calibrate_command(index_copy, tiny_model_dir, tiny_model, tmp_path, capsys):
    searcher = Searcher(index_copy, model=tiny_model)
    topics, qrels = judged(searcher)
    (tmp_path / "topics.tsv").write_text("".join(f"{q}\t{t}\n" for q, t in topics.items()))
    (tmp_path / "qrels.txt").write_text("".join(f"{q} 0 {d} {r}\n" for q, ds in qrels.items() for d, r in ds.items()))
    args = ["-q", "calibrate", str(index_copy), "--topics", str(tmp_path / "topics.tsv"),
            "--qrels", str(tmp_path / "qrels.txt"), "--model", str(tiny_model_dir)]
    assert main(args + ["--tolerance", "1.5"]) == 2
    assert "tolerance" in capsys.readouterr().err
    assert main(args + ["--measure", "nDCG@nope"]) == 2
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Calibrated frontier: nDCG@10" in out and (index_copy / CALIBRATION).is_file()
    search = ["search", str(index_copy), "coffee", "--model", str(tiny_model_dir), "--early-stop"]
    assert main(search + ["--budget", "1000"]) == 0  # a frontier plan: its margin, or one stage
    assert main(search + ["--plan", "1x8:77,2x16:33,4x48:10"]) == 2  # not calibrated
    assert "no early-stopping margin" in capsys.readouterr().err


def timed_in_turn(monkeypatch, readings: list[dict]) -> list:
    """``end_to_end`` replaced by ``readings``, one per call, by plan; the plans of each call, in order."""
    import retrieval.calibrate as cal

    calls, readings = [], iter(readings)

    def timed(searcher, points, texts, k, between=None):
        ms = next(readings)
        calls.append([p.plan for p in points])
        return [Point(p.plan, ms[p.plan], p.effectiveness) for p in points]

    monkeypatch.setattr(cal, "end_to_end", timed)
    return calls


def test_every_candidate_is_timed_twice_and_takes_the_mean_of_its_latencies(monkeypatch):
    import retrieval.calibrate as cal

    a, b, c, d = (Plan.parse(p) for p in ("1x8:100", "2x16:100,4x48:10", "3x32:100,4x48:10", "4x48:100"))
    candidates = [Point(a, 0.8, 0.3), Point(b, 1.2, 0.4), Point(c, 1.4, 0.5), Point(d, 2.0, 0.6)]
    # The second timing ran in a slow spell: every plan 1.5x slower; b read slow in the first as well.
    first = {a: 1.0, b: 2.0, c: 1.6, d: 2.4}
    calls = timed_in_turn(monkeypatch, [first, {a: 1.5, b: 3.0, c: 2.4, d: 3.6}])
    frontier, measured = cal.choose_frontier(None, candidates, ["q"], 10)
    assert calls == [[a, b, c, d], [a, b, c, d]]  # every candidate, in both timings
    assert [[p.ms for p in t] for t in measured] == [[1.0, 2.0, 1.6, 2.4], [1.5, 3.0, 2.4, 3.6]]
    # Each takes its mean: the spell moved them all alike and leaves their order; b, slower than the
    # better c in both, is off the frontier.
    assert [(p.plan, p.ms) for p in frontier] == [(a, 1.25), (c, 2.0), (d, 3.0)]
    # A plan one timing caught in a slow spell stays where its mean keeps it: c read 2.9 ms once.
    timed_in_turn(monkeypatch, [first, {a: 1.0, b: 1.9, c: 2.9, d: 2.4}])
    frontier, _ = cal.choose_frontier(None, candidates, ["q"], 10)
    assert [(p.plan, p.ms) for p in frontier] == [(a, 1.0), (b, 1.95), (c, 2.25), (d, 2.4)]
    with pytest.raises(ValueError, match="timings must be 1 or more"):
        cal.choose_frontier(None, candidates, ["q"], 10, timings=0)


def test_a_plan_that_does_not_set_the_pace_keeps_the_slowest_of_its_latencies(monkeypatch):
    import retrieval.calibrate as cal

    plans = [Plan.parse(p) for p in ("bm25:10", "1x8:10", "4x48:100")]
    candidates = [Point(plans[0], 0.3, 0.2), Point(plans[1], 0.4, 0.3), Point(plans[2], 3.0, 0.6)]
    timed_in_turn(monkeypatch, [{plans[0]: 0.3, plans[1]: 0.4, plans[2]: 3.0},
                                {plans[0]: 0.24, plans[1]: 0.45, plans[2]: 2.5}])
    frontier, _ = cal.choose_frontier(None, candidates, ["q"], 10)
    # BM25 alone and a plan under half a millisecond must hold through a slow spell in either timing; a
    # plan that sets the pace takes the mean.
    assert [(str(p.plan), p.ms) for p in frontier] == [("bm25:10", 0.3), ("1x8:10", 0.45), ("4x48:100", 2.75)]
    # Each priced above its mean keeps that mean, as a profile of its price (``Point.typical_ms``).
    assert [p.typical_ms for p in frontier] == [pytest.approx(0.27), pytest.approx(0.425), None]
    # A slower block of BM25 alone met in the calibration (``Spells``, run on to its span after the
    # timings) sets its latency; a plan that sets the pace takes no floor.

    class Spells:  # stands in for calibrate.Spells: its slowest blocks are known once it has run on
        slowest = {}

        def __call__(self):
            pass

        def through(self, progress):
            self.slowest = {plans[0]: 0.38, plans[2]: 9.0}

    spells = Spells()
    timed_in_turn(monkeypatch, [{plans[0]: 0.3, plans[1]: 0.4, plans[2]: 3.0},
                                {plans[0]: 0.24, plans[1]: 0.45, plans[2]: 2.5}])
    frontier, _ = cal.choose_frontier(None, candidates, ["q"], 10, spells=spells)
    assert [(str(p.plan), p.ms) for p in frontier] == [("bm25:10", 0.38), ("1x8:10", 0.45), ("4x48:100", 2.75)]
    assert frontier[0].typical_ms == pytest.approx(0.27)


def test_spells_time_bm25_alone_in_a_budgets_block_every_few_seconds_within_a_share_of_the_time(monkeypatch):
    import retrieval.calibrate as cal

    clock, cost, searches = [0.0], [0.0001], []  # seconds now; seconds a search

    def searched(searcher, pinned, texts, k):
        searches.append((pinned[0], len(texts)))
        clock[0] += cost[0] * len(texts)
        return np.full(len(texts), cost[0] * 1000)

    monkeypatch.setattr(cal.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(cal.Planner, "pinned", classmethod(lambda cls, searcher, point, k: (point.plan, 2.0)))
    monkeypatch.setattr(cal, "searched", searched)
    bm25, dense = Plan.parse("bm25:10"), Plan.parse("4x48:100")
    from types import SimpleNamespace

    searcher = SimpleNamespace(_planner="its own")
    spells = cal.Spells(searcher, [bm25, dense], ["a"] * 500, 10)
    spells()
    assert searches == [] and spells.slowest == {}  # not yet: 5 seconds have not passed
    clock[0] += cal.SPELL_SECONDS
    spells()
    # BM25 alone only (a plan that encodes sets the pace): a warm-up search, then 1,000 in a row.
    assert searches == [(bm25, 1), (bm25, 500), (bm25, 500)]
    assert spells.blocks == {bm25: [pytest.approx(0.1)]} and searcher._planner == "its own"  # put back
    searches.clear()
    clock[0] += cal.SPELL_SECONDS - 1
    spells()
    assert searches == []
    # Where BM25 is slow (20 ms a search: a block takes 20 s), its blocks keep to a tenth of the time.
    cost[0] = 0.02
    clock[0] += 1
    spells()
    assert len(searches) == 3 and spells.slowest == {bm25: pytest.approx(20.0)}
    searches.clear()
    clock[0] += 179
    spells()
    assert searches == []  # 20 s of searching (and its warm-up search) waits 9 times as long
    clock[0] += 2
    spells()
    assert len(searches) == 3 and len(spells.blocks[bm25]) == 3


def test_spells_run_on_to_their_span_a_block_whenever_due(monkeypatch):
    import retrieval.calibrate as cal

    clock, slept, blocks = [0.0], [], []  # seconds now; each wait; when each block ran
    monkeypatch.setattr(cal.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(cal.time, "sleep", lambda s: slept.append(s) or clock.__setitem__(0, clock[0] + s))
    monkeypatch.setattr(cal.Planner, "pinned", classmethod(lambda cls, searcher, point, k: (point.plan, 2.0)))
    monkeypatch.setattr(cal, "searched", lambda searcher, pinned, texts, k: blocks.append(clock[0]) or np.ones(len(texts)))
    from types import SimpleNamespace

    spells = cal.Spells(SimpleNamespace(_planner="its own"), [Plan.parse("bm25:10")], ["a"] * 1000, 10)
    clock[0] = 7.0  # the grid and the timings took 7 s; one block ran at 5 s
    spells.last = 5.0
    spells.through(30.0)
    # Waits for each block as it falls due, every 5 s, until 30 s since the spells began, and no further.
    assert slept == [3.0, 5.0, 5.0, 5.0, 5.0] and clock[0] == 30.0
    assert blocks[::2] == [10.0, 15.0, 20.0, 25.0, 30.0] and len(spells.blocks[Plan.parse("bm25:10")]) == 5
    slept.clear()
    spells.through(20.0)  # a calibration that lasted longer than the span samples nothing more
    dense = cal.Spells(SimpleNamespace(_planner="its own"), [Plan.parse("4x48:100")], ["a"], 10)
    dense.through(60.0)  # nothing to time: BM25 alone only
    assert slept == [] and clock[0] == 30.0
