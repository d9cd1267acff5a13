"""The 8-bit tier measurement's pieces: codes decode within half a step; recall counts the true top k."""
import numpy as np

from experiments.int8_tiers import codes, recall, rotation, row_codes


def test_codes_decode_within_half_a_step_and_clip_outside_the_range():
    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((500, 8)).astype(np.float32)
    low, high = matrix.min(axis=0), matrix.max(axis=0)
    decode = codes(matrix, low, high)
    rows = np.arange(500)
    assert np.all(np.abs(decode(rows) - matrix) <= (high - low) / 255 / 2 + 1e-6)
    narrow = codes(matrix, low / 2, high / 2)(rows)  # clipped: nothing decodes outside the range
    assert np.all(narrow >= low / 2 - 1e-6) and np.all(narrow <= high / 2 + 1e-6)


def test_per_vector_codes_decode_within_half_their_step_in_the_turned_space():
    rng = np.random.default_rng(1)
    matrix = rng.standard_normal((300, 16)).astype(np.float32) * rng.uniform(0.01, 3, (300, 1)).astype(np.float32)
    turn = rotation(16, seed=2)
    np.testing.assert_allclose(turn @ turn.T, np.eye(16), atol=1e-5)
    rows = np.arange(300)
    for r, bits in ((None, 8), (turn, 8), (turn, 10)):
        turned = matrix if r is None else matrix @ r
        step = np.abs(turned).max(axis=1, keepdims=True) / (2 ** (bits - 1) - 1)
        decoded = row_codes(matrix, r, bits)(rows)
        assert np.all(np.abs(decoded - turned) <= step / 2 + 1e-6)  # each vector's own step, however small
    # A query turned alike scores as unturned, within what the codes' error allows (Cauchy-Schwarz).
    query = rng.standard_normal(16).astype(np.float32)
    error = np.abs(row_codes(matrix, turn)(rows) @ (query @ turn) - matrix @ query)
    assert np.all(error <= np.linalg.norm(query) * 4 * np.abs(matrix @ turn).max(axis=1) / 127 / 2 + 1e-5)


def test_recall_counts_the_true_top_k_among_the_reranked_candidates():
    candidates = np.array([[5, 6, 7, 8]])
    truth = np.array([[8, 7]])
    assert recall(candidates, np.array([[0.1, 0.2, 0.3, 0.4]]), truth, k=2) == 1.0
    assert recall(candidates, np.array([[0.4, 0.3, 0.2, 0.1]]), truth, k=2) == 0.0
    assert recall(candidates, np.array([[0.4, 0.1, 0.2, 0.3]]), truth, k=2) == 0.5
