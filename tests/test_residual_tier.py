"""The residual rerank tier: packed 10-bit codes, scores that add the IVF-PQ shortlist's own, clear refusals."""
import numpy as np
import pytest

from indexes import build_index
from indexes.tiers import RerankTier, Residual, pack10, rotation, unpack10
from retrieval import Plan, Searcher
from starbucks.errors import StarbucksError
from starbucks.sizes import Size

from conftest import write_corpus

SHORT, FULL = Size(2, 16), Size(4, 48)


def test_ten_bit_codes_round_trip():
    every = np.arange(-511, 512)
    values = np.concatenate([every, every[:1]])[: 1024 // 4 * 4].reshape(-1, 8)
    packed = pack10(values)
    assert packed.dtype == np.uint8 and packed.shape == (len(values), 10)  # 8 codes in 10 bytes
    np.testing.assert_array_equal(unpack10(packed), values)
    random = np.random.default_rng(0).integers(-511, 512, (50, 384))
    assert pack10(random).shape == (50, 480)
    np.testing.assert_array_equal(unpack10(pack10(random)), random)


def test_the_rotation_is_orthogonal_and_fixed():
    turn = rotation(16)
    np.testing.assert_allclose(turn @ turn.T, np.eye(16), atol=1e-5)
    np.testing.assert_array_equal(turn, rotation(16))


@pytest.fixture(scope="module")
def ivfpq_index(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("residual")
    corpus = write_corpus(root / "c.jsonl", 1200)
    return build_index(corpus, root / "idx", model=tiny_model, shortlist=str(SHORT), rerank=str(FULL),
                       index_type="ivfpq", chunk_size=400, progress=False, encoder="torch")


def test_residual_scores_are_the_shortlist_scores_plus_what_its_codes_left_out(ivfpq_index, tiny_model):
    searcher = Searcher(ivfpq_index, model=tiny_model, encoder="torch", threads=1, rerank_tier=f"residual:{SHORT}")
    residual = searcher.tier.residual(SHORT)
    assert isinstance(residual, Residual) and searcher.tier.residual(FULL) is None
    assert residual.codes.shape == (1200, 16 * 10 // 8) and searcher.tier.nbytes == residual.nbytes
    index = searcher.index
    q = searcher.encoder.encode_queries(["coffee roasting", "jazz harmony"], [SHORT])[SHORT]
    adc, rows = index.search(SHORT, q, 100, ("nprobe", 8))
    stored = np.asarray(index.vectors[SHORT], dtype=np.float32)
    for i in range(2):
        exact = stored[rows[i]] @ q[i]
        got = residual.scores(q[i : i + 1], rows[i], adc[i])
        bound = np.linalg.norm(q[i]) * np.sqrt(16) * residual.scale[rows[i]] / 2 + 1e-4
        assert np.all(np.abs(got - exact) <= bound)  # the codes' own error, not the PQ codes' (far larger)
        assert np.abs(adc[i] - exact).max() > 4 * np.abs(got - exact).max()


def test_a_plan_reranking_its_ivfpq_shortlist_uses_the_residual_tier(ivfpq_index, tiny_model):
    plan = Plan.parse(f"{SHORT}~nprobe=8:100,{SHORT}:10")
    exact = Searcher(ivfpq_index, model=tiny_model, encoder="torch", threads=1)
    tiered = Searcher(ivfpq_index, model=tiny_model, encoder="torch", threads=1, rerank_tier=f"residual:{SHORT}")
    for query in ("coffee roasting", "jazz harmony", "protein folding"):
        want, got = exact.search(query, k=10, budget=plan), tiered.search(query, k=10, budget=plan)
        assert got.docids == want.docids
        np.testing.assert_allclose(got.scores, want.scores, atol=2e-3)
        assert not np.array_equal(got.scores, want.scores)  # scored from the codes, not the stored rows
    # Elsewhere the size is read from its memory-mapped rows: exactly the stored vectors' scores.
    q = tiered.encoder.encode_queries(["coffee roasting"], [SHORT])[SHORT]
    rows = [np.arange(0, 1200, 7)]
    np.testing.assert_array_equal(tiered.index.rescore_batch(SHORT, q, rows, tiered.tier)[0],
                                  exact.index.rescore_batch(SHORT, q, rows)[0])


def test_a_residual_tier_needs_an_ivfpq_shortlist(ivfpq_index, tiny_model, tmp_path):
    with pytest.raises(StarbucksError, match=f"residual tier needs an IVF-PQ shortlist index at {FULL}"):
        RerankTier(Searcher(ivfpq_index, model=tiny_model, encoder="torch", threads=1).index, f"residual:{FULL}")
    corpus = write_corpus(tmp_path / "c.jsonl", 300)
    flat = build_index(corpus, tmp_path / "flat", model=tiny_model, shortlist=str(SHORT), rerank=str(FULL),
                       progress=False, encoder="torch")
    with pytest.raises(StarbucksError, match="has IndexFlatIP"):
        Searcher(flat, model=tiny_model, encoder="torch", threads=1, rerank_tier=f"residual:{SHORT}")


def test_the_scale_benchmark_tries_a_residual_tier_only_after_an_ivfpq_shortlist(ivfpq_index, tiny_model):
    from experiments import scale
    from indexes.tiers import RERANK_TIERS

    index = Searcher(ivfpq_index, model=tiny_model, encoder="torch", threads=1).index
    assert scale.tier_names(index, Plan.parse(f"{SHORT}~nprobe=8:100,{SHORT}:10"), RERANK_TIERS) == [
        "mmap", f"float16:{SHORT}", f"int8:{SHORT}", f"residual:{SHORT}"]
    assert scale.tier_names(index, Plan.parse(f"{SHORT}:100,{FULL}:10"), RERANK_TIERS) == [
        "mmap", f"float16:{FULL}", f"int8:{FULL}"]


def test_the_cli_searches_through_a_residual_tier_and_refuses_a_wrong_one_in_one_line(ivfpq_index, capsys):
    from retrieval.cli import main

    plan = f"{SHORT}~nprobe=8:100,{SHORT}:3"
    assert main(["search", str(ivfpq_index), "coffee", "--k", "3", "--plan", plan, "--rerank-tier",
                 f"residual:{SHORT}", "--threads", "1", "--json"]) == 0
    capsys.readouterr()
    code = main(["search", str(ivfpq_index), "coffee", "--rerank-tier", f"residual:{FULL}", "--threads", "1"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err
    assert f"a residual tier needs an IVF-PQ shortlist index at {FULL}" in errors[0]
