"""The benchmark scripts' own logic: which row a summary picks, baselines that search, full-collection commands."""
import importlib
import json
from pathlib import Path

import numpy as np
import pytest

from experiments import baselines, runtime
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


def candidate(tmp_path, monkeypatch, evaluate, merge=lambda *a, **k: None):
    """A candidate recipe whose selection runs on fake evaluations, with results under tmp_path."""
    from experiments.training import default_model
    from training.config import TrainConfig

    monkeypatch.setattr(default_model, "RESULTS", tmp_path)
    monkeypatch.setattr(default_model, "merge_folders", merge)
    monkeypatch.setattr(default_model, "evaluate", evaluate)
    cfg = TrainConfig(model="all-MiniLM-L6-v2", output=str(tmp_path / "run"), train_files=["x.jsonl"], max_steps=1)
    (tmp_path / "candidate.json").write_text(json.dumps(cfg.to_dict()))
    return default_model.Recipe(tmp_path / "candidate.json")


def test_default_model_selection_keeps_the_most_trained_mix_that_matches_the_base_at_full_size(tmp_path, monkeypatch):
    from experiments.training import default_model

    full = {"base": 0.50, "mix 0": 0.49, "mix 0.25": 0.51, "mix 0.5": 0.52}  # held-out full-size nDCG@10
    mixes = {}

    def merge(run, out, base_weight, dtype):
        (out / "config.json").parent.mkdir(parents=True)
        (out / "config.json").write_text("{}")
        mixes[str(out)] = f"mix {base_weight:g}"

    def evaluate(path, names, collections):
        key = mixes.get(str(path), "base")
        return {"sizes": ["1x16", "6x384"], "scores": {n: {"1x16": 0.1, "6x384": full[key]} for n in names}}

    recipe = candidate(tmp_path, monkeypatch, evaluate, merge)
    assert default_model.stage_select(recipe) == 0.25
    assert set(json.loads((tmp_path / "candidate-selection.json").read_text())["candidates"]) == {"base", "mix 0", "mix 0.25"}
    assert "chosen base share: 0.25" in (tmp_path / "candidate-selection.md").read_text()


def test_a_candidate_recipe_reuses_the_base_models_scores_and_evaluates_only_what_is_missing(tmp_path, monkeypatch):
    from experiments.training import default_model

    base = {"sizes": ["6x384"], "scores": {"scifact-holdout": {"6x384": 0.5}, "nfcorpus-holdout": {"6x384": 0.3}}}
    (tmp_path / "shipped-selection.json").write_text(json.dumps({"candidates": {"base": base}}))
    evaluated = []

    def evaluate(path, names, collections):
        evaluated.append((str(path), list(names)))
        return {"sizes": ["6x384"], "scores": {n: {"6x384": 0.9 if "mix" in str(path) else 0.4} for n in names}}

    recipe = candidate(tmp_path, monkeypatch, evaluate)
    assert default_model.stage_select(recipe) == 0.0
    names = default_model.validation_names()
    assert evaluated == [("all-MiniLM-L6-v2", default_model.OUT_OF_DOMAIN), (str(tmp_path / "run-mix0"), names)]
    assert not recipe.is_shipped()


def test_selection_reports_the_out_of_domain_sets_but_chooses_on_the_held_out_queries(tmp_path, monkeypatch):
    from experiments.training import default_model

    def evaluate(path, names, collections):
        drift = "mix0" in str(path)  # above the base in domain, below it out of domain
        return {"sizes": ["6x384"], "scores": {
            n: {"6x384": 0.5 + (0.1 if "holdout" in n else -0.1) * drift} for n in names}}

    assert default_model.stage_select(candidate(tmp_path, monkeypatch, evaluate)) == 0.0
    table = (tmp_path / "candidate-selection.md").read_text()
    assert "chosen base share: 0" in table and "### sickr-trial" in table and "0.400" in table


def test_pace_ratio_windows_read_as_the_planner_reads_them():
    from experiments.pace_ratios import summary
    from retrieval.planner import PACE_WINDOW

    steady = np.ones(4 * PACE_WINDOW)
    jumpy = np.tile([0.8, 1.2], 2 * PACE_WINDOW)  # swings on every search, its windows at 1
    jumpy[: PACE_WINDOW] = 2.0  # one window of slow searches
    s, j = summary(steady), summary(jumpy)
    assert s["sd"] == 0 and s["windows_over_slack"] == 0 and s["window_median_p50"] == 1.0
    assert j["windows_over_slack"] == 0.25 and j["window_median_p95"] > 1.1 and j["searches"] == 4 * PACE_WINDOW


def test_the_noise_floor_counts_later_blocks_over_the_tolerance_and_paces_them_by_the_reference():
    from experiments.noise_floor import later_over, summary

    assert later_over([1.0, 1.0, 1.0]) == 0.0
    assert later_over([1.0, 1.2]) == 1.0 and later_over([1.2, 1.0]) == 0.0  # only a later block breaks
    assert later_over([1.0, 1.05, 1.15]) == 1 / 3  # of (1, 1.05), (1, 1.15), (1.05, 1.15)
    # the second block ran 1.3x slower, and so did the reference around it: at the reference pace, no break
    blocks = [{"mean_ms": 1.0, "cpu_mean_ms": 1.0, "machine_before": 2.0, "machine_after": 2.0},
              {"mean_ms": 1.3, "cpu_mean_ms": 1.3, "machine_before": 2.6, "machine_after": 2.6}]
    s = summary(blocks, 2.0)
    assert s["later_over_1.1"] == 1.0 and s["later_over_1.1_at_reference_pace"] == 0.0
    assert s["highest_over_lowest"] == 1.3 and abs(s["highest_over_lowest_at_reference_pace"] - 1.0) < 1e-12


def test_the_blend_benchmarks_drop_arm_plans_as_before_the_blend_and_both_arms_search_in_turn():
    from types import SimpleNamespace

    from experiments.blend import arm_row, arm_systems, summarise, without_blend
    from retrieval import Plan
    from retrieval.frontier import Frontier, Point

    def frontier():
        points = [Point(Plan.parse("bm25:100"), 0.25, 0.44), Point(Plan.parse("1x8:100,4x48:10"), 1.0, 0.55)]
        return Frontier("m", "i", "nDCG@10", 10, "t", 9, 2, points)

    blending, dropping = frontier(), frontier()
    without_blend(SimpleNamespace(planner=SimpleNamespace(frontier=dropping)))
    assert blending.blend(1.0, 10, 1.2)[1] == Plan.parse("1x8:100,4x48:10")
    assert dropping.blend(1.0, 10, 1.2) == (Plan.parse("bm25:100"), None, 0.0)
    assert dropping.blend(1.0, 10, 1.0) == blending.blend(1.0, 10, 1.0)
    assert dropping.blend(0.1, 10, 1.0, floor=True) == (Plan.parse("bm25:100"), None, 0.0)  # a cut budget

    class Fake:
        planner = SimpleNamespace(pace=1.2)

        def search(self, q, k, budget):
            return q

    paced = {}
    systems = arm_systems({"blend": Fake(), "drop": Fake()}, [1.0, 2.0], paced)
    assert [name for _, name, _ in systems] == ["blend 1 ms", "drop 1 ms", "drop 2 ms", "blend 2 ms"]
    systems[0][2]("q")
    assert paced["blend", 1.0] == [True] and paced["drop", 1.0] == []

    row = {"plan_share": {"1x8:100,4x48:10": 0.75, "bm25:100": 0.25}, "every_search_mean_ms": 1.05, "searches": 8}
    a = arm_row(1.0, "1x8:100,4x48:10", row, [True, False, False, False], 0.5)
    assert a["own_plan_share"] == 0.75 and a["paced_share"] == 0.25 and a["holds"]
    d = arm_row(1.0, "1x8:100,4x48:10", {**row, "every_search_mean_ms": 1.2}, [True] * 4, 0.4)
    s = summarise([{"budget_ms": 1.0, "blend": a, "drop": d}])
    assert s["blend"]["own_plan_share"] == 0.75 and s["drop"]["budgets_broken"] == [1.0]


def test_write_results_records_the_load_and_writes_json_and_markdown(tmp_path, capsys):
    from experiments.runtime import write_results

    results = {"collections": [1, 2]}
    write_results(tmp_path / "out", "name", results, lambda r: f"# {len(r['collections'])} collections\n")
    assert json.loads((tmp_path / "out" / "name.json").read_text())["load_average_at_end"] == results["load_average_at_end"]
    assert (tmp_path / "out" / "name.md").read_text() == "# 2 collections\n" and "# 2 collections" in capsys.readouterr().out


def test_the_overrun_benchmark_stops_the_same_searches_of_both_stopped_arms_and_none_of_the_calm_ones():
    import time

    from experiments.overrun import ARMS, STOPPED, Stops, arm_row, arm_systems, places, summarise, summary_table

    class Fake:
        def __init__(self):
            self.slept = []

        def run(self, *a, **kw):
            return "ranked"

        def search(self, q, k, budget):
            t = time.perf_counter()
            self.run()
            self.slept.append(time.perf_counter() - t >= 0.005)
            return q

    searchers = {arm: Fake() for arm in ARMS}
    stops = {arm: Stops(searchers[arm]) for arm in STOPPED}
    systems = arm_systems(searchers, stops, [1.0, 2.0], 20, 2, 5.0)
    assert [name for _, name, _ in systems][:5] == [f"{arm} 1 ms" for arm in ARMS] + [f"{ARMS[1]} 2 ms"]
    for _, name, search in systems[:4]:
        for _ in range(21):  # timed()'s untimed warm-up, then the block's 20 searches
            search("q")
    at = places(1.0, 20, 2)
    assert len(at) == 2 and places(1.0, 20, 2) == at
    for arm in STOPPED:
        assert [i for i, s in enumerate(searchers[arm].slept[1:]) if s] == sorted(at)
    assert not any(any(searchers[arm].slept) for arm in ARMS[:2])

    rows = [{"budget_ms": b, **{arm: arm_row(b, {"every_search_mean_ms": m, "searches": 10, "plan_share": {}},
                                             0.5 + b / 10, n) for arm, m, n in zip(ARMS, ms, cut)}}
            for b, ms, cut in ((0.3, (0.3, 0.3, 0.5, 0.5), (0, 0, 0, 0)), (2.0, (1.9, 2.0, 2.1, 2.4), (1, 0, 4, 0)))]
    s = summarise(rows)
    assert s["stops, not made up"]["budgets_broken"] == [0.3, 2.0] and s["stops, made up"]["budgets_broken"] == [0.3]
    assert s["stops, made up"]["made_up_share"] == 0.4 and s["calm, made up"]["nDCG@10"] == pytest.approx(0.7)
    table = summary_table({"collections": [{"collection": "c", "stops": 2, "stop_ms": 100.0, "budgets": rows,
                                            "summary": s}],
                           "provenance": {"command": "x", "git_commit": "0" * 40, "machine": {"load_average": [0.5]}}})
    # the cheapest plan's budget apart: of the one above it, only the arm with stops and no making up broke
    assert "| c | 2 x 100 ms | 0 / 0 / 0 / 1 of 1 | " in table
    assert table.split("\n")[2].endswith("| yes / yes / no / no |")


def test_the_frontier_choice_replays_each_rule_on_recorded_timings_and_judges_it_on_the_others():
    import retrieval.calibrate as cal
    from experiments.frontier_choice import RULES, Replay, at_slowest_speed, judge, replay_all, replaying
    from retrieval import Plan
    from retrieval.frontier import Point

    cost = {"bm25:100": 0.3, "1x8:100": 1.0, "2x16:100,4x48:10": 2.0, "4x48:100": 3.0}
    effectiveness = {"bm25:100": 0.2, "1x8:100": 0.3, "2x16:100,4x48:10": 0.4, "4x48:100": 0.5}
    candidates = [Point(Plan.parse(p), ms, effectiveness[p]) for p, ms in cost.items()]

    def rounds(speeds):
        return [{"ms": {p: ms * s for p, ms in cost.items()}, "passes": {p: [ms * s] * 3 for p, ms in cost.items()}}
                for s in speeds]

    # A spell of the machine moves every plan timed in it alike: two timings, the second 1.4x slower, price
    # every plan that sets the pace at the slower one's speed, and BM25 alone at its slower reading.
    replay = Replay([r["ms"] for r in rounds([1.0, 1.4])], (0, 1))
    with replaying(replay):
        assert cal.end_to_end is not None and cal.end_to_end == replay.end_to_end
        frontier = at_slowest_speed(2)(candidates)
    assert cal.end_to_end is not replay.end_to_end  # the real timing is back
    assert [(str(p.plan), round(p.ms, 6)) for p in frontier] == [(p, round(ms * 1.4, 6)) for p, ms in cost.items()]
    assert replay.calls == 2 and replay.timed == 8

    # Judged against latencies 1.2x its prices, a frontier keeps every plan but breaks every budget.
    truth = {p: ms * 1.2 for p, ms in cost.items()}
    priced = [Point(Plan.parse(p), ms, effectiveness[p]) for p, ms in cost.items()]
    j = judge(priced, truth, effectiveness)
    assert j["kept"] == 1.0 and j["ratio"] == 1.0 and j["holds"] == 0.0 and abs(j["worst"] - 1.2) < 1e-12
    # A frontier that lost its 2-layer plan is slower to the best effectiveness only if that plan was the 1 % one.
    j = judge([q for q in priced if str(q.plan) != "2x16:100,4x48:10"], cost, effectiveness)
    assert j["kept"] == 0.75 and j["ratio"] == 1.0 and j["lost"] > 0

    # On timings that never move, every rule keeps every plan at a price that holds.
    out = replay_all(rounds([1.0] * 5), effectiveness, candidates)
    assert set(out) == set(RULES)
    for rule, r in out.items():
        assert r["kept"] == 1.0 and r["all_hold"] == 1.0 and r["ratio_over_miss"] == 0.0, rule
        assert r["replays"] == 5 * 4 * 3 * 2


def test_the_spell_span_replays_sampling_spans_on_a_recording_and_judges_the_blocks_after_each():
    from experiments.spell_span import replay

    # One block a second for 100 s: 1.0 ms, with a slow spell (1.3 ms) from 40 s to 49 s.
    times = np.arange(1.0, 101.0)
    means = np.where((times >= 40) & (times < 50), 1.3, 1.0)
    one = replay(times, means, span=0, horizon=20, every=5)
    assert one["blocks_sampled"] == 1 and one["starts"] == len(np.arange(1.0, 80.0 + 1e-9, 5))
    # A calibration that samples one block before the spell is priced at 1.0 and breaks inside it.
    assert one["worst_later_over_price"] == pytest.approx(1.3) and one["starts_all_holding"] < 1
    assert one["later_blocks_holding"] < 1 and one["price_over_median"] == pytest.approx(1.0)
    # Sampling 60 s, every start's span meets the spell or its horizon never does.
    long = replay(times, means, span=60, horizon=20, every=5)
    assert long["blocks_sampled"] == 13 and long["worst_later_over_price"] <= 1.0 + 1e-12
    assert long["later_blocks_holding"] == 1.0 and long["starts_all_holding"] == 1.0
    assert long["price_over_median_highest"] == pytest.approx(1.3)
    with pytest.raises(ValueError, match="too short"):
        replay(times, means, span=90, horizon=20)


def test_topic_pace_compares_encoding_with_calibration_topics_of_the_same_length_and_sets_with_each_other():
    from experiments.topic_pace import same_length, summarise

    # Calibration topics of 4 and 8 tokens encoded in (median) 1 and 3 ms: 6 tokens is taken at 2 ms, and
    # counts outside 4-8 at the nearest count's, not extrapolated.
    tokens = np.array([4, 4, 4, 8, 8])
    encode = np.array([1.0, 0.9, 5.0, 3.0, 3.0])
    assert same_length(tokens, encode, np.array([4, 6, 8, 2, 20])).tolist() == [1.0, 2.0, 3.0, 1.0, 3.0]
    assert same_length(np.array([5, 5]), np.array([1.0, 2.0]), np.array([3, 9])).tolist() == [1.5, 1.5]
    keys = ("over_expected", "median_ratio", "encode_ms", "stages_ms", "encode_over_same_length")
    rows = [{"calibration": dict.fromkeys(keys, 1.0), "evaluation": dict.fromkeys(keys, x)} for x in (1.1, 1.3, 1.2)]
    assert summarise(rows) == {f"{key}_evaluation_over_calibration": pytest.approx(1.2) for key in keys}


BENCHMARKS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "experiments").glob("*.py")
                    if "def main(" in p.read_text())


@pytest.mark.parametrize("name", BENCHMARKS)
def test_every_benchmark_says_what_it_measures_in_whole_sentences_in_its_help(name, capsys):
    module = importlib.import_module(f"experiments.{name}")
    with pytest.raises(SystemExit):
        module.main(["--help"])
    said = " ".join(capsys.readouterr().out.split())
    described = runtime.description(module.__doc__)
    assert described.endswith(".") and described in said
