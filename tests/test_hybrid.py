"""BM25 as a plan stage and its fusion with a dense stage, against reference computations."""
import json

import bm25s
import numpy as np
import pytest
import Stemmer

from indexes import build_index
from retrieval import Plan, Searcher
from retrieval.fusion import fuse
from retrieval.plan import RRF_K
from starbucks.errors import StarbucksError
from starbucks.sizes import Size
from tests.conftest import write_corpus

FULL = Size(4, 48)
QUERIES = ["coffee roasting jazz", "glacier melting and solar flares", "ancient rome railway signals"]


@pytest.fixture(scope="module")
def hybrid_index(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("hybrid")
    corpus = write_corpus(root / "corpus.jsonl", 150, seed=3)
    index = build_index(corpus, root / "idx", model=tiny_model, shortlist="2x16", rerank="4x48",
                        chunk_size=64, progress=False, bm25=True, encoder="torch")
    texts = {}
    for line in corpus.read_text().splitlines():
        d = json.loads(line)
        texts[d["_id"]] = f"{d['title']} {d['text']}"
    return index, texts


def reference_bm25(index_texts: list[str], query: str) -> np.ndarray:
    """Every document's BM25 score with bm25s directly (same tokenisation, k1 0.9, b 0.4)."""
    stemmer = Stemmer.Stemmer("english")
    retriever = bm25s.BM25(k1=0.9, b=0.4)
    retriever.index(bm25s.tokenize(index_texts, stopwords="en", stemmer=stemmer, show_progress=False),
                    show_progress=False)
    tokens = bm25s.tokenize([query], stopwords="en", stemmer=stemmer, return_ids=False, show_progress=False)[0]
    return retriever.get_scores(tokens)


TOKEN_CASES = ["Coffee ROASTING, jazz's   harmonies!", "", "the and of a", "été Café naïve 42 x-ray x 3d",
               "running runs ran runner's", "repeated repeated words words", "ÄÖÜ straße ΣΊΣΥΦΟΣ 東京 tokyo",
               "e-mail: someone@example.com; http://a.b/c?d=1", "it's not the end... isn't it?"]


def test_bm25_query_tokens_equal_bm25s_tokenize(hybrid_index, tiny_model):
    folder, _ = hybrid_index
    sparse = Searcher(folder, model=tiny_model, encoder="torch", threads=1).index.bm25
    reference = bm25s.tokenize(TOKEN_CASES, stopwords="en", stemmer=Stemmer.Stemmer("english"),
                               return_ids=False, show_progress=False)
    assert sparse.tokens(TOKEN_CASES) == [list(t) for t in reference]
    assert sparse.tokens(TOKEN_CASES) == [list(t) for t in reference]  # the same again: nothing kept between
    assert sparse.tokens(["the of and"]) == [[]]
    # Queries' stems are not cached: a search costs the same whatever ran before it.
    assert sparse._stemmer.maxCacheSize == 0


def test_bm25_scores_equal_bm25s_get_scores(hybrid_index, tiny_model):
    folder, _ = hybrid_index
    sparse = Searcher(folder, model=tiny_model, encoder="torch", threads=1).index.bm25
    for query in [*QUERIES, "coffee coffee roasting", "unseenword coffee"]:
        tokens = sparse.tokens([query])[0]
        np.testing.assert_array_equal(sparse.scores(tokens), sparse.retriever.get_scores(tokens))
    assert not sparse.scores([]).any() and len(sparse.scores([])) == len(sparse.retriever.get_scores(["coffe"]))


def test_a_query_of_stop_words_only_searches_bm25_without_error(hybrid_index, tiny_model):
    folder, _ = hybrid_index
    searcher = Searcher(folder, model=tiny_model, encoder="torch", threads=1)
    result = searcher.search("the of and", k=5, budget="bm25:10")
    assert len(result.docids) == 5 and result.scores == [0.0] * 5


def test_plan_text_round_trip():
    for text in ("bm25:1000,6x384:10", "bm25:1000,6x384:10,fuse=rrf", "6x32:200,6x384:10,fuse=linear:0.3", "bm25:50"):
        assert str(Plan.parse(text)) == text and Plan.parse(str(Plan.parse(text))) == Plan.parse(text)
    assert Plan.parse("bm25:100,4x48:10,fuse=rrf") != Plan.parse("bm25:100,4x48:10")
    assert Plan.parse("bm25:100").sizes == [] and Plan.parse("bm25:100").layer == 0


@pytest.mark.parametrize("text, message", [
    ("4x48:100,bm25:10", "BM25 can only be the first stage"),
    ("bm25:100,4x48:10,fuse=max", "bad fusion"),
    ("bm25:100,4x48:10,fuse=linear:1.5", "bad fusion"),
    ("bm25:100,fuse=rrf,4x48:10", "fuse= comes after the stages"),
    ("bm25:100,fuse=rrf", "must be dense"),
])
def test_bad_plans_are_refused(text, message):
    with pytest.raises(ValueError, match=message):
        Plan.parse(text)


def test_bm25_stage_matches_bm25s(hybrid_index, tiny_model):
    folder, texts = hybrid_index
    searcher = Searcher(folder, model=tiny_model, encoder="torch", threads=1)
    docids = [searcher.index.docids[i] for i in range(len(searcher.index))]
    for query in QUERIES:
        ref = reference_bm25([texts[d] for d in docids], query)
        result = searcher.search(query, k=20, budget="bm25:20")
        assert result.timings.keys() == {"shortlist bm25"}  # nothing encoded
        got = np.array([ref[docids.index(d)] for d in result.docids])
        np.testing.assert_allclose(result.scores, got, rtol=1e-5)
        np.testing.assert_allclose(got, np.sort(ref)[::-1][:20], rtol=1e-5)


def test_bm25_alone_ranks_only_its_top_k_as_a_deeper_ranking_would(hybrid_index, tiny_model, monkeypatch):
    folder, _ = hybrid_index
    searcher = Searcher(folder, model=tiny_model, encoder="torch", threads=1)
    sparse = searcher.index.bm25
    for query in [*QUERIES, "coffee", "the of and"]:
        deep_scores, deep_rows, _ = sparse.search([query], 150)
        for k in (1, 5, 20):
            scores, rows, _ = sparse.search([query], k)
            np.testing.assert_array_equal(rows[0], deep_rows[0][:k])  # ties at the cut too: by row
            np.testing.assert_array_equal(scores[0], deep_scores[0][:k])
    scores, rows, _ = sparse.search(["the of and"], 5)  # nothing scores: the first rows, in order
    assert rows[0].tolist() == [0, 1, 2, 3, 4] and not scores.any()
    depths = []
    real = sparse.search
    monkeypatch.setattr(sparse, "search", lambda texts, k: depths.append(k) or real(texts, k))
    alone = searcher.search(QUERIES[0], k=5, budget="bm25:100")
    searcher.search(QUERIES[0], k=5, budget="bm25:100,4x48:10")
    assert depths == [5, 100]  # alone, it searches only as deep as it returns; a shortlist, as deep as it keeps
    assert alone.docids == searcher.search(QUERIES[0], k=5, budget="bm25:5").docids


@pytest.mark.parametrize("how", ["rrf", "linear:0.3"])
def test_fusion_matches_a_reference(hybrid_index, tiny_model, how):
    folder, texts = hybrid_index
    searcher = Searcher(folder, model=tiny_model, encoder="torch", threads=1)
    docids = [searcher.index.docids[i] for i in range(len(searcher.index))]
    vectors = np.asarray(searcher.index.vectors[FULL], dtype=np.float32)
    for query in QUERIES:
        result = searcher.search(query, k=10, budget=f"bm25:40,4x48:10,fuse={how}")
        sparse = reference_bm25([texts[d] for d in docids], query)
        shortlist = sorted(range(len(docids)), key=lambda i: (-sparse[i], i))[:40]
        q = searcher.encoder.encode_queries([query], [FULL])[FULL][0]
        dense = {i: float(vectors[i] @ q) for i in shortlist}
        if how == "rrf":
            d_rank = {i: r for r, i in enumerate(sorted(shortlist, key=lambda i: -dense[i]), 1)}
            s_rank = {i: r for r, i in enumerate(sorted(shortlist, key=lambda i: -sparse[i]), 1)}
            ref = {i: 1 / (RRF_K + d_rank[i]) + 1 / (RRF_K + s_rank[i]) for i in shortlist}
        else:
            lo_d, hi_d = min(dense.values()), max(dense.values())
            lo_s, hi_s = min(sparse[i] for i in shortlist), max(sparse[i] for i in shortlist)
            ref = {i: 0.3 * (dense[i] - lo_d) / (hi_d - lo_d) + 0.7 * (sparse[i] - lo_s) / (hi_s - lo_s)
                   for i in shortlist}
        best = sorted(shortlist, key=lambda i: -ref[i])[:10]
        np.testing.assert_allclose(result.scores, [ref[i] for i in best], atol=1e-3)  # min-max magnifies rounding
        assert set(result.docids[:5]) == {docids[i] for i in best[:5]}


def test_fuse_on_a_dense_cascade_scores_bm25_for_the_candidates(hybrid_index, tiny_model):
    folder, _ = hybrid_index
    searcher = Searcher(folder, model=tiny_model, encoder="torch", threads=1)
    fused = searcher.search(QUERIES[0], k=10, budget="2x16:60,4x48:10,fuse=rrf")
    plain = searcher.search(QUERIES[0], k=10, budget="2x16:60,4x48:10")
    assert len(fused.docids) == 10 and fused.docids != plain.docids


def test_fuse_function():
    dense, sparse = np.array([3.0, 2.0, 1.0]), np.array([0.0, 5.0, 1.0])
    np.testing.assert_allclose(fuse(dense, sparse, "rrf"), [1 / 61 + 1 / 63, 1 / 62 + 1 / 61, 1 / 63 + 1 / 62], rtol=1e-6)
    np.testing.assert_allclose(fuse(dense, sparse, "linear:1"), [1.0, 0.5, 0.0])
    np.testing.assert_allclose(fuse(dense, sparse, "linear:0"), [0.0, 1.0, 0.2])


def test_bm25_plans_need_a_bm25_index(built_index, tiny_model):
    searcher = Searcher(built_index, model=tiny_model, encoder="torch", threads=1)
    with pytest.raises(StarbucksError, match="no BM25 index"):
        searcher.search("coffee", budget="bm25:100,4x48:10")


def test_planner_and_calibration_consider_bm25_plans(hybrid_index, tiny_model, tmp_path, monkeypatch):
    import shutil

    from retrieval.calibrate import calibrate

    folder = tmp_path / "idx"
    shutil.copytree(hybrid_index[0], folder)
    searcher = Searcher(folder, model=tiny_model, encoder="torch", threads=1)
    plans = searcher.planner.candidates(10)
    assert Plan.parse("bm25:100,4x48:10,fuse=rrf") in plans
    # BM25 alone returns its top k: the plan ranks no deeper.
    assert [p for p in plans if p.uses_bm25 and len(p) == 1] == [Plan.parse("bm25:10")]
    # Each earlier layer's exit (its widest stored size) reranks and fuses BM25 shortlists too.
    exits = {str(p[-1].size) for p in plans if p[0].sparse and len(p) == 2 and p[-1].size.layer < 4}
    assert searcher.index.sizes == [Size(2, 16), Size(4, 48)] and exits == {"2x16"}
    assert Plan.parse("bm25:100,2x16:10,fuse=linear:0.7") in plans and Plan.parse("bm25:150,2x16:10") in plans
    topics = {f"q{i}": q for i, q in enumerate(QUERIES)}
    qrels = {f"q{i}": {searcher.index.docids[i]: 1} for i in range(len(QUERIES))}
    import retrieval.calibrate as cal

    # BM25 alone is timed in a budget's block of searches between the grid's plans, and between the plans'
    # passes of the end-to-end timings (every plan and every pass here).
    blocks = []
    real = cal.searched
    monkeypatch.setattr(cal, "SPELL_SECONDS", 0.0)
    monkeypatch.setattr(cal, "SPELL_SHARE", 1.0)  # no wait for the time the blocks take either
    monkeypatch.setattr(cal, "STEADY_WINDOW", 5)  # two passes over the three topics
    monkeypatch.setattr(cal, "SPELL_SPAN", 0.0)  # nothing more once the timings are over
    monkeypatch.setattr(cal, "searched", lambda s, pinned, texts, k: blocks.append(
        (pinned[0].frontier.points[0].plan, len(texts))) or real(s, pinned, texts, k))
    frontier, points = calibrate(searcher, topics, qrels, progress=False)
    assert any(p.plan.uses_bm25 for p in points)
    assert frontier.points and all(p.ms > 0 for p in points)
    grid_blocks = [b for b in blocks if b[0] == Plan.parse("bm25:10")]
    assert len(grid_blocks) >= 3 * len(plans)  # a warm-up and two passes after each plan of the grid
    bm25 = next(t for t in frontier.timed if t["plan"] == "bm25:10")
    assert len(bm25["spells_ms"]) == len(plans) + cal.TIMINGS * 3 * len(frontier.timed)
    on = [p for p in frontier.points if str(p.plan) == "bm25:10"]
    assert all(p.ms >= max(bm25["spells_ms"]) for p in on)  # it holds through the slowest block
    assert not any("spells_ms" in t for t in frontier.timed if t["plan"] != "bm25:10")
    # Each frontier plan that encodes its query has its latency's growth with the query's tokens fitted
    # over these topics; BM25 alone encodes nothing and has none.
    counts = searcher.encoder.token_counts(list(topics.values()))
    for p in frontier.points:
        if p.plan.sizes:
            assert p.tokens == pytest.approx(sum(counts) / len(counts)) and p.per_token_ms >= 0
        else:
            assert p.tokens is None and p.per_token_ms == 0
