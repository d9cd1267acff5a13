"""ANN search parameters in a plan stage: text form, per-search FAISS parameters, planner candidates."""
import faiss
import numpy as np
import pytest

from indexes import Index, build_index
from retrieval import Plan, Searcher
from retrieval.plan import Stage
from starbucks.sizes import Size

from conftest import write_corpus

SHORT, FULL = Size(2, 16), Size(4, 48)


@pytest.mark.parametrize("text", [
    "6x64~ef=128:1000", "6x64~nprobe=16:1000,6x384:10", "2x16~ef=8:50,3x32:20,4x48:5",
    "6x32:1000,6x64:200,6x384:10", "bm25:1000,6x384:10,fuse=rrf", "bm25:1000,6x384:10,fuse=linear:0.5",
])
def test_plan_text_round_trips(text):
    plan = Plan.parse(text)
    assert str(plan) == text and Plan.parse(str(plan)) == plan


def test_plan_text_with_search_parameters():
    plan = Plan.parse("6x64~ef=128:1000,6x384:10")
    assert plan[0] == Stage(Size(6, 64), 1000, param=("ef", 128)) and plan.sizes == [Size(6, 64), Size(6, 384)]
    assert Plan.parse("6x64:1000")[0].param is None
    assert Plan.parse("bm25:1000,6x384:10,fuse=rrf")[0] == Stage("bm25", 1000)


@pytest.mark.parametrize("text, error", [
    ("6x64~efsearch=128:1000", "bad search parameter"),
    ("6x64~ef=0:1000", "bad search parameter"),
    ("6x64~ef=x:1000", "bad search parameter"),
    ("6x64~nprobe=:1000", "bad search parameter"),
    ("6x64:1000,6x384~ef=64:10", "dense first stage only"),
    ("bm25~ef=64:1000", "dense first stage only"),
])
def test_bad_search_parameters(text, error):
    with pytest.raises(ValueError, match=error):
        Plan.parse(text)


@pytest.fixture(scope="module", params=["hnsw", "ivfpq"])
def ann_searcher(request, tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp(request.param)
    corpus = write_corpus(root / "c.jsonl", 1200)
    out = build_index(corpus, root / "idx", model=tiny_model, shortlist=str(SHORT), rerank=str(FULL),
                      index_type=request.param, chunk_size=400, progress=False, encoder="torch")
    return Searcher(out, model=tiny_model, encoder="torch")


def _params(ann_searcher):
    return ("ef", 64) if ann_searcher.index.manifest.index_type == "hnsw" else ("nprobe", 8)


def test_search_parameters_go_to_faiss_per_search(ann_searcher):
    index = ann_searcher.index
    name, value = _params(ann_searcher)
    faiss_index = index.shortlist[SHORT]
    q = np.asarray(index.vectors[SHORT][:4], dtype=np.float32)
    params = faiss.SearchParametersHNSW(efSearch=value) if name == "ef" else faiss.SearchParametersIVF(nprobe=value)
    expected = faiss_index.search(q, 30, params=params)
    got = index.search(SHORT, q, 30, (name, value))
    np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_allclose(got[0], expected[0])
    # The stored value is untouched: parameters live with the search, not the index.
    stored = faiss_index.hnsw.efSearch if name == "ef" else faiss_index.nprobe
    assert stored == (128 if name == "ef" else min(16, faiss_index.nlist))

    plan = Plan.parse(f"{SHORT}~{name}={value}:30,{FULL}:10")
    result = ann_searcher.search("coffee roasting", k=10, budget=plan)
    assert result.plan == plan and len(result.docids) == 10
    assert set(result.timings) == {"encode", f"shortlist {SHORT}~{name}={value}", f"rerank {FULL}"}
    vectors = ann_searcher.encoder.encode_queries(["coffee roasting"], [SHORT, FULL])
    _, rows = faiss_index.search(vectors[SHORT], 30, params=params)
    exact = np.asarray(index.vectors[FULL], dtype=np.float32)[rows[0]] @ vectors[FULL][0]
    assert result.docids == index.docids.lookup(rows[0][np.argsort(-exact, kind="stable")][:10])


def test_fewer_results_than_asked_are_dropped(ann_searcher):
    """IVF with nprobe=1 and HNSW with ef=1 find fewer than asked; FAISS pads with -1."""
    index = ann_searcher.index
    name = _params(ann_searcher)[0]
    q = ann_searcher.encoder.encode_queries(["volcano"], [SHORT, FULL])
    if name == "nprobe":  # one list of ~9 documents for 600 asked: padded
        scores, rows = index.search(SHORT, q[SHORT], 600, ("nprobe", 1))
        assert (rows == -1).any()
        found = int((rows[0] >= 0).sum())
        result = ann_searcher.run(Plan.parse(f"{SHORT}~nprobe=1:600,{FULL}:5"), q, 5)[0]
        assert len(result.docids) == min(5, found) and "-1" not in result.docids
    else:  # HNSW searches at least k: no padding below the corpus size; an index smaller than k pads
        scores, rows = index.search(SHORT, q[SHORT], 1200, ("ef", 1))
        assert rows.shape == (1, 1200)
    valid = ann_searcher._valid(scores[0], rows[0])
    assert (valid.rows >= 0).all() and len(valid.rows) == int((rows[0] >= 0).sum())


def test_parameters_that_do_not_fit_the_index_are_errors(ann_searcher, built_index, tiny_model):
    name = _params(ann_searcher)[0]
    other = "nprobe" if name == "ef" else "ef"
    with pytest.raises(ValueError, match=f"{other}= does not apply .*takes {name}="):
        ann_searcher.search("bread", budget=f"{SHORT}~{other}=4:100,{FULL}:10")
    with pytest.raises(ValueError, match="no shortlist index .*ef= does not apply"):
        ann_searcher.search("bread", budget=f"{FULL}~ef=4:100")
    flat = Searcher(built_index, model=tiny_model, encoder="torch")
    with pytest.raises(ValueError, match="flat shortlist index: ef= does not apply"):
        flat.search("bread", budget="1x8~ef=4:100,4x48:10")


def test_planner_enumerates_parameters_only_where_the_index_takes_them(ann_searcher, built_index, tiny_model):
    name = _params(ann_searcher)[0]
    plans = ann_searcher.planner.candidates(10)
    values = {p[0].param[1] for p in plans if p[0].param}
    assert {p[0].param[0] for p in plans if p[0].param} == {name}
    assert len(values) >= 2 and all(p[0].size == SHORT for p in plans if p[0].param)
    assert all(Plan.parse(str(p)) == p for p in plans)
    flat = Searcher(built_index, model=tiny_model, encoder="torch")
    assert not any(p[0].param for p in flat.planner.candidates(10))


def test_cost_model_keeps_first_stages_with_parameters():
    from retrieval.planner import CostModel

    costs = CostModel("m", "i", {2: 1.0, 4: 2.0}, {SHORT: {1: 0.5, 100: 1.5}, f"{SHORT}~ef=32": {1: 0.1, 100: 0.2}},
                      {SHORT: 0.0, FULL: 1.0})
    again = CostModel.from_dict(costs.to_dict())
    assert again == costs
    assert again.predict(Plan.parse(f"{SHORT}~ef=32:100,{FULL}:10")) == pytest.approx(2.0 + 0.2 + 0.1)
    assert again.predict(Plan.parse(f"{SHORT}:100,{FULL}:10")) == pytest.approx(2.0 + 1.5 + 0.1)


def test_an_ivf_index_trains_on_enough_rows_for_its_lists():
    """k-means wants some 39 rows a centroid: at 1M documents IVF-PQ has 4,000 lists, more than 100,000
    rows can train without FAISS warning that the clustering is under-fed."""
    from types import SimpleNamespace

    from indexes.faiss_index import ivfpq_params, training_sample

    n = 1_000_000
    nlist = ivfpq_params(n, 384)["nlist"]
    rows = training_sample(SimpleNamespace(nlist=nlist), n)
    assert nlist == 4000 and len(rows) >= 39 * nlist and (np.diff(rows) > 0).all() and rows[-1] < n
    assert len(training_sample(SimpleNamespace(), n)) == 100_000  # no lists (HNSW, flat): the default
    assert len(training_sample(SimpleNamespace(nlist=64), 5000)) == 5000  # a small corpus: every row
