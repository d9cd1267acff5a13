"""The rerank tier: memory-mapped rows, float16 in RAM, or 8-bit codes in RAM scored directly."""
import numpy as np
import pytest

from indexes import Index, build_index
from indexes.tiers import RerankTier, quantize
from retrieval import Searcher
from retrieval.planner import searcher_key
from starbucks.errors import StarbucksError
from starbucks.sizes import Size
from starbucks_cli import main

from conftest import write_random_vectors

SHORT, MID, FULL = Size(1, 8), Size(3, 32), Size(4, 48)
DOCS = 900
QUERIES = ["coffee roasting", "jazz harmony", "tidal energy", "chess openings", "solar flares"]


@pytest.fixture(scope="module")
def index_path(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("tiers")
    vectors = write_random_vectors(root / "vec", (SHORT, MID, FULL), DOCS, seed=3)
    return build_index(None, root / "idx", model=tiny_model, vectors=vectors, shortlist=str(SHORT),
                       rerank=f"{MID},{FULL}", chunk_size=300, progress=False)


@pytest.fixture(scope="module")
def searchers(index_path, tiny_model):
    index = Index(index_path)  # one index shared by every tier
    return {t: Searcher(index, model=tiny_model, encoder="torch", rerank_tier=t) for t in ("mmap", "float16", "int8")}


def random_queries(n=30, seed=5):
    return np.random.default_rng(seed).standard_normal((n, FULL.dim)).astype(np.float32)


def test_tiers_hold_what_they_say(searchers):
    index = searchers["mmap"].index
    assert searchers["mmap"].tier.nbytes == 0 and searchers["mmap"].tier.held == {}
    f16 = searchers["float16"].tier
    assert set(f16.held) == {MID, FULL} and f16.nbytes == DOCS * (MID.dim + FULL.dim) * 2
    assert not isinstance(f16.held[FULL], np.memmap)
    np.testing.assert_array_equal(f16.held[FULL], index.vectors[FULL])
    int8 = searchers["int8"].tier
    assert int8.held[FULL].codes.dtype == np.uint8
    assert int8.nbytes == DOCS * (MID.dim + FULL.dim) + 8 * (MID.dim + FULL.dim)


@pytest.mark.parametrize("plan", [f"{SHORT}:200,{FULL}:10", f"{SHORT}:300,{MID}:50,{FULL}:10", f"{FULL}:10"])
def test_float16_tier_ranks_as_mmap(searchers, plan):
    a = searchers["mmap"].search_batch(QUERIES, k=10, budget=plan)
    b = searchers["float16"].search_batch(QUERIES, k=10, budget=plan)
    for x, y in zip(a, b):
        assert x.docids == y.docids and x.scores == y.scores
    one = searchers["float16"].search(QUERIES[0], k=10, budget=plan)
    assert one.docids == a[0].docids


def test_quantize_round_trips_within_half_a_step(index_path):
    matrix = Index(index_path).vectors[FULL]
    q = quantize(matrix, block=128)  # several blocks
    wide = np.asarray(matrix, dtype=np.float32)
    np.testing.assert_array_equal(q.low, wide.min(axis=0))
    decoded = q.low + q.codes.astype(np.float32) * q.step
    assert np.all(np.abs(decoded - wide) <= q.step / 2 + 1e-6)
    assert q.codes.min() == 0 and q.codes.max() == 255
    assert quantize(matrix, block=128).codes.tobytes() == quantize(matrix).codes.tobytes()


def test_int8_rescoring_equals_numpy_from_the_codes(searchers):
    index, tier = searchers["int8"].index, searchers["int8"].tier
    q = tier.held[FULL]
    queries = random_queries(4)
    rng = np.random.default_rng(0)
    rows = [rng.choice(DOCS, size=n, replace=False) for n in (50, 1, 300, 7)]
    got = index.rescore_batch(FULL, queries, rows, tier)
    for query, r, scores in zip(queries, rows, got):
        expected = (q.low + q.codes[r].astype(np.float32) * q.step) @ query
        np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-3)
    single = index.rescore(FULL, queries[2], rows[2], tier)
    np.testing.assert_allclose(single, got[2], rtol=1e-5, atol=1e-4)


def test_int8_keeps_the_exact_top_10(searchers):
    index, tier = searchers["int8"].index, searchers["int8"].tier
    queries = random_queries()
    everything = [np.arange(DOCS)] * len(queries)
    exact = np.asarray(index.vectors[FULL], dtype=np.float32) @ queries.T
    approx = index.rescore_batch(FULL, queries, everything, tier)
    overlaps = [len(set(np.argsort(-exact[:, i])[:10]) & set(np.argsort(-a)[:10])) / 10
                for i, a in enumerate(approx)]
    assert np.mean(overlaps) >= 0.9 and min(overlaps) >= 0.7, overlaps
    # Through the searcher: the int8 cascade's top 10 against the mmap one's.
    a = searchers["mmap"].search_batch(QUERIES, k=10, budget=f"{SHORT}:300,{FULL}:10")
    b = searchers["int8"].search_batch(QUERIES, k=10, budget=f"{SHORT}:300,{FULL}:10")
    assert np.mean([len(set(x.docids) & set(y.docids)) / 10 for x, y in zip(a, b)]) >= 0.9


def test_a_shortlist_size_is_read_from_the_map_whatever_the_tier(searchers):
    index = searchers["int8"].index
    rows = [np.arange(20)]
    q = random_queries(1)[:, : SHORT.dim]
    np.testing.assert_array_equal(index.rescore_batch(SHORT, q, rows, searchers["int8"].tier)[0],
                                  index.rescore_batch(SHORT, q, rows)[0])


def test_costs_and_calibration_are_kept_per_tier(searchers):
    keys = {t: searcher_key(s) for t, s in searchers.items()}
    assert len(set(keys.values())) == 3 and "rerank_tier" not in keys["mmap"]


def test_a_bad_tier_is_refused_in_one_line(index_path, tiny_model, capsys):
    with pytest.raises(StarbucksError, match="unknown rerank tier 'disk': choose one of mmap, float16, int8") as e:
        Searcher(index_path, model=tiny_model, encoder="torch", rerank_tier="disk")
    assert "\n" not in str(e.value)
    with pytest.raises(StarbucksError, match="unknown rerank tier"):
        RerankTier(Index(index_path), "int4")
    code = main(["search", str(index_path), "coffee", "--rerank-tier", "ram"])
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == ("error: unknown rerank tier 'ram': choose one of mmap, float16, int8, residual, "
                                         "optionally with the sizes to hold, e.g. int8:6x384")
    for bad, message in ((f"mmap:{FULL}", "the mmap tier holds nothing in RAM, so it takes no sizes"),
                         ("int8:", "bad rerank tier 'int8:': no sizes"),
                         ("int8:9xx", "bad rerank tier 'int8:9xx'"),
                         ("int8:2x16", f"2x16 is not stored in .* \\(stored sizes: {SHORT}, {MID}, {FULL}\\)")):
        with pytest.raises(StarbucksError, match=message) as e:
            Searcher(index_path, model=tiny_model, encoder="torch", rerank_tier=bad)
        assert "\n" not in str(e.value)


def test_a_tier_naming_sizes_holds_only_those_and_reads_the_rest_from_the_map(searchers, tiny_model):
    index = searchers["int8"].index
    partial = Searcher(index, model=tiny_model, encoder="torch", rerank_tier=f"int8:{FULL}")
    assert set(partial.tier.held) == {FULL} and partial.tier.nbytes == DOCS * FULL.dim + 8 * FULL.dim
    assert partial.rerank_tier == f"int8:{FULL}" and searcher_key(partial) != searcher_key(searchers["int8"])
    rows, q = [np.arange(0, DOCS, 7)], random_queries(1)
    np.testing.assert_array_equal(index.rescore_batch(FULL, q, rows, partial.tier)[0],
                                  index.rescore_batch(FULL, q, rows, searchers["int8"].tier)[0])
    np.testing.assert_array_equal(index.rescore_batch(MID, q[:, : MID.dim], rows, partial.tier)[0],
                                  index.rescore_batch(MID, q[:, : MID.dim], rows)[0])
    plan = f"{SHORT}:300,{FULL}:10"  # rescored at the held size only: as the tier holding every size
    a, b = (s.search_batch(QUERIES, k=10, budget=plan) for s in (partial, searchers["int8"]))
    assert [x.docids for x in a] == [x.docids for x in b] and [x.scores for x in a] == [x.scores for x in b]
    shared = Searcher(index, model=tiny_model, encoder="torch", rerank_tier=partial.tier)
    assert shared.tier is partial.tier


def test_a_tier_may_hold_a_shortlist_size(searchers, tiny_model):
    """A plan whose first rerank is at its shortlist's own size (a compressed shortlist reranked exactly)
    can have that size in RAM: the tier holds it, scores it like the memory map, and the plan runs from it."""
    index = searchers["int8"].index
    held = Searcher(index, model=tiny_model, encoder="torch", rerank_tier=f"float16:{SHORT}")
    assert set(held.tier.held) == {SHORT} and held.tier.nbytes == DOCS * SHORT.dim * 2
    rows, q = [np.arange(3, DOCS, 5)], random_queries(1)[:, : SHORT.dim]
    np.testing.assert_array_equal(index.rescore_batch(SHORT, q, rows, held.tier)[0], index.rescore_batch(SHORT, q, rows)[0])
    plan = f"{SHORT}:200,{SHORT}:10"
    a, b = (s.search_batch(QUERIES, k=10, budget=plan) for s in (held, searchers["mmap"]))
    assert [x.docids for x in a] == [x.docids for x in b]


def test_cli_search_with_a_tier(index_path, tiny_model_dir, capsys):
    code = main(["search", str(index_path), "coffee", "--model", str(tiny_model_dir), "--encoder", "torch",
                 "--plan", f"{SHORT}:100,{FULL}:5", "--rerank-tier", "float16", "--json"])
    out = capsys.readouterr().out
    assert code == 0 and '"plan": "1x8:100,4x48:5"' in out


def test_a_loaded_tier_is_shared_and_checked(searchers, tiny_model, tmp_path):
    tier = searchers["int8"].tier
    shared = Searcher(searchers["int8"].index, model=tiny_model, encoder="torch", rerank_tier=tier)
    assert shared.tier is tier and shared.rerank_tier == "int8"
    other_vectors = write_random_vectors(tmp_path / "vec", (SHORT, MID, FULL), 50)
    other = build_index(None, tmp_path / "other", model=tiny_model, vectors=other_vectors, shortlist=str(SHORT),
                        rerank=f"{MID},{FULL}", progress=False)
    with pytest.raises(StarbucksError, match="int8 rerank tier holds 900 rows of 3x32, which does not match"):
        Searcher(other, model=tiny_model, encoder="torch", rerank_tier=tier)


def test_the_cli_refuses_a_bad_tier_before_loading_torch(index_path):
    from test_cli import torch_after

    status, torch_loaded, err = torch_after(["evaluate", str(index_path), "--topics", "t", "--qrels", "q",
                                             "--rerank-tier", "disk"])
    assert status == 2 and not torch_loaded
    assert err.strip().startswith("error: unknown rerank tier 'disk': choose one of mmap, float16, int8")


def test_a_repeated_size_refines_from_the_stored_vectors(searchers):
    """``S:300,FULL:50,FULL:10`` under int8: 50 candidates from the codes, then the exact top 10 of those."""
    int8, index = searchers["int8"], searchers["int8"].index
    refined = int8.search_batch(QUERIES, k=10, budget=f"{SHORT}:300,{FULL}:50,{FULL}:10")
    coded = int8.search_batch(QUERIES, k=50, budget=f"{SHORT}:300,{FULL}:50")
    vectors = int8.encoder.encode_queries(QUERIES, [FULL])[FULL]
    for q, r, c in zip(vectors, refined, coded):
        rows = np.array([int(d[1:]) for d in c.docids])  # docids d0.. are row numbers
        exact = index.rescore(FULL, q, rows)
        best = np.argsort(-exact, kind="stable")[:10]
        assert r.docids == [c.docids[i] for i in best]
        np.testing.assert_allclose(r.scores, exact[best], rtol=1e-6)
        assert not np.allclose(exact, c.scores)  # the codes' scores were not exact: the refinement did something
