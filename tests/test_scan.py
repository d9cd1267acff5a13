"""The exact scan merges each block's top k across blocks of ``SCAN_BLOCK`` rows."""
import numpy as np
import pytest

import indexes.index as index_module
from indexes import Index
from starbucks.sizes import Size

SIZE = Size(4, 48)


def reference(matrix: np.ndarray, queries: np.ndarray) -> np.ndarray:
    return queries @ np.asarray(matrix, dtype=np.float32).T


def check_topk(scores, rows, full, k):
    """Top k by score; with ties at the k-th score any of the tied rows may fill the last places."""
    assert scores.shape == rows.shape == (len(full), k)
    for s, r, f in zip(scores, rows, full):
        assert len(set(r.tolist())) == k  # no row twice
        expected = np.sort(f)[::-1][:k]
        np.testing.assert_allclose(s, expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(s, f[r], rtol=1e-5, atol=1e-5)  # each row with its own score
        above = set(np.flatnonzero(f > expected[-1] + 1e-5).tolist())
        assert above <= set(r.tolist())  # everything strictly better than the k-th is there


@pytest.fixture
def index(built_index, monkeypatch):
    monkeypatch.setattr(index_module, "SCAN_BLOCK", 16)  # 200 documents: 13 blocks, the last one short
    return Index(built_index)


@pytest.mark.parametrize("k", [1, 5, 16, 37, 200])
def test_multi_block_scan_equals_numpy_top_k(index, k):
    matrix = index.vectors[SIZE]
    queries = np.asarray(matrix[[0, 57, 199]], dtype=np.float32) + 0.01
    scores, rows = index.scan(SIZE, queries, k)
    check_topk(scores, rows, reference(matrix, queries), k)


def test_multi_block_scan_with_ties_across_blocks(index):
    rng = np.random.default_rng(0)
    base = rng.standard_normal((7, SIZE.dim)).astype(np.float16)
    matrix = base[rng.integers(0, 7, size=len(index))]  # every vector ~28 times, spread over every block
    index.vectors[SIZE] = matrix
    queries = rng.standard_normal((4, SIZE.dim)).astype(np.float32)
    full = reference(matrix, queries)
    for k in (3, 20, 45, 200):  # inside one tie group, across groups, more than a block
        scores, rows = index.scan(SIZE, queries, k)
        check_topk(scores, rows, full, k)
    # Every row once when k is the whole index: ties lose nobody.
    _, rows = index.scan(SIZE, queries, len(index))
    assert all(sorted(r) == list(range(len(index))) for r in rows.tolist())


def test_search_at_a_size_without_shortlist_index_uses_the_scan(index):
    queries = np.asarray(index.vectors[SIZE][:2], dtype=np.float32)
    np.testing.assert_array_equal(index.search(SIZE, queries, 40)[1], index.scan(SIZE, queries, 40)[1])
