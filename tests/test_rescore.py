"""Rescoring a batch of queries, each against its own candidates, in one vectorised pass."""
import numpy as np
import pytest

from indexes import Index
from starbucks.sizes import Size

SIZE = Size(4, 48)


def test_batched_rescoring_equals_numpy(built_index):
    index = Index(built_index)
    rng = np.random.default_rng(0)
    queries = rng.standard_normal((5, SIZE.dim)).astype(np.float32)
    rows = [rng.choice(len(index), size=m, replace=False) for m in (50, 1, 0, 200)]
    rows.append(np.array([7, 7, 3, 199, 0]))  # repeats and both ends
    got = index.rescore_batch(SIZE, queries, rows)
    matrix = np.asarray(index.vectors[SIZE], dtype=np.float32)
    assert [len(g) for g in got] == [len(r) for r in rows]
    for q, r, g in zip(queries, rows, got):
        assert g.dtype == np.float32
        np.testing.assert_allclose(g, matrix[r] @ q, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(index.rescore(SIZE, queries[0], rows[0]), got[0], rtol=1e-6, atol=1e-6)
    assert index.rescore_batch(SIZE, queries[:0], []) == []


@pytest.mark.parametrize("lengths, calls", [((50, 1, 0, 200, 30), 1),  # 281 rows >= 200 documents: the union, once
                                            ((20, 0, 30, 1, 40), 6)])  # 91 rows: each query on its own
def test_a_batch_reads_its_union_on_small_corpora_and_each_query_alone_on_large(built_index, monkeypatch, lengths,
                                                                               calls):
    index = Index(built_index)
    rng = np.random.default_rng(1)
    queries = rng.standard_normal((len(lengths), SIZE.dim)).astype(np.float32)
    rows = [rng.choice(len(index), size=m, replace=True) for m in lengths]  # repeats within a query too
    seen = []
    real = Index.rescore_batch
    monkeypatch.setattr(Index, "rescore_batch", lambda self, *a: seen.append(1) or real(self, *a))
    got = index.rescore_batch(SIZE, queries, rows)
    assert len(seen) == calls
    matrix = np.asarray(index.vectors[SIZE], dtype=np.float32)
    for q, r, g in zip(queries, rows, got):
        np.testing.assert_allclose(g, matrix[r] @ q, rtol=1e-5, atol=1e-5)


def test_bad_rescoring_requests(built_index):
    index = Index(built_index)
    q = np.zeros((2, SIZE.dim), dtype=np.float32)
    with pytest.raises(ValueError, match="2 queries but 1 lists"):
        index.rescore_batch(SIZE, q, [np.array([1])])
    with pytest.raises(ValueError, match="must lie in 0..199"):
        index.rescore_batch(SIZE, q, [np.array([1]), np.array([200])])
    with pytest.raises(ValueError, match="must lie in 0..199"):
        index.rescore_batch(SIZE, q, [np.array([-1]), np.array([2])])
