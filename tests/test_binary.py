"""Binary shortlists: the sign bits of a stored size, searched by Hamming distance."""
import json

import numpy as np
import pytest

from indexes import Index, build_index
from indexes.manifest import MANIFEST
from retrieval import Plan, Searcher
from starbucks.errors import InputError, StarbucksError
from starbucks.sizes import Size

from conftest import write_corpus

BIN, FULL = Size(3, 32), Size(4, 48)
ODD = Size(1, 4)  # fewer bits than a byte: padded with zeros on both sides


@pytest.fixture(scope="module")
def binary_index(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("binary")
    corpus = write_corpus(root / "c.jsonl", 150)
    return build_index(corpus, root / "idx", model=tiny_model, shortlist="1x4,2x16", rerank=f"{BIN},{FULL}",
                       binary=[str(BIN), str(ODD)], chunk_size=64, progress=False, encoder="torch")


def hamming(matrix, queries):
    """NumPy reference: popcount of the xor of packed sign bits."""
    docs = np.packbits(np.asarray(matrix, dtype=np.float32) > 0, axis=1)
    qs = np.packbits(queries > 0, axis=1)
    return np.unpackbits(qs[:, None, :] ^ docs[None, :, :], axis=2).sum(axis=2).astype(np.int64)


def test_build_writes_binary_shortlists_listed_in_the_manifest(binary_index):
    files = json.loads((binary_index / MANIFEST).read_text())["files"]
    assert {"shortlist/b3x32.faiss", "shortlist/b1x4.faiss"} <= set(files)
    index = Index(binary_index, verify=True)
    assert set(index.binary) == {BIN, ODD} and set(index.shortlist) == {Size(1, 4), Size(2, 16)}


@pytest.mark.parametrize("size", [BIN, ODD])
def test_binary_shortlist_equals_numpy_hamming(binary_index, size):
    index = Index(binary_index)
    rng = np.random.default_rng(0)
    queries = rng.standard_normal((5, size.dim)).astype(np.float32)
    distances = hamming(index.vectors[size], queries)
    for k in (1, 10, 150):
        scores, rows = index.search_binary(size, queries, k)
        for s, r, d in zip(scores, rows, distances):
            expected = np.sort(d)[:k]
            np.testing.assert_array_equal(size.dim - 2 * expected, s)  # ranked by distance
            np.testing.assert_array_equal(d[r], expected)  # each row at its own distance (ties in any order)
            assert len(set(r.tolist())) == k


def test_binary_cascade_end_to_end(binary_index, tiny_model):
    searcher = Searcher(binary_index, model=tiny_model, encoder="torch")
    plan = Plan.parse(f"b{BIN}:40,{FULL}:10")
    assert str(plan) == f"b{BIN}:40,{FULL}:10" and plan[0].binary and plan.sizes == [BIN, FULL]
    query = "jazz harmony"
    result = searcher.search(query, k=10, budget=plan)
    q = searcher.encoder.encode_queries([query], [BIN, FULL])
    d = hamming(searcher.index.vectors[BIN], q[BIN])[0]
    _, rows = searcher.index.search_binary(BIN, q[BIN], 40)
    assert set(rows[0]) >= set(np.flatnonzero(d < np.sort(d)[39]))
    full = np.asarray(searcher.index.vectors[FULL], dtype=np.float32)[rows[0]] @ q[FULL][0]
    assert result.docids == searcher.index.docids.lookup(rows[0][np.argsort(-full, kind="stable")][:10])
    assert set(result.timings) == {"encode", f"shortlist b{BIN}", f"rerank {FULL}"}
    # One binary stage alone: scores are dim - 2 * distance.
    alone = searcher.search(query, k=5, budget=f"b{BIN}:5")
    assert alone.scores == [float(BIN.dim - 2 * x) for x in np.sort(d)[:5]]
    plans = searcher.planner.candidates(10)
    assert any(p[0].binary and p[1].size == BIN for p in plans)  # rescoring the same size in float
    assert all(Plan.parse(str(p)) == p for p in plans)


def test_binary_errors(binary_index, built_index, tiny_model, tmp_path, corpus):
    with pytest.raises(StarbucksError, match="no binary shortlist for 4x48"):
        Searcher(binary_index, model=tiny_model, encoder="torch").search("bread", budget="b4x48:50,4x48:10")
    with pytest.raises(StarbucksError, match="no binary shortlist for 1x8"):  # an index built before binary=
        Searcher(built_index, model=tiny_model, encoder="torch").search("bread", budget="b1x8:50,4x48:10")
    with pytest.raises(ValueError, match=f"binary size {BIN} in .* has a flat shortlist index: ef= does not apply"):
        Searcher(binary_index, model=tiny_model, encoder="torch").search("bread", budget=f"b{BIN}~ef=4:50,4x48:10")
    with pytest.raises(ValueError, match="dense first stage only"):
        Plan.parse("1x8:50,b4x48:10")
    with pytest.raises(StarbucksError, match="binary sizes 2x8 are not stored"):
        build_index(corpus, tmp_path / "x", model=tiny_model, shortlist="1x8", rerank="4x48", binary="2x8",
                    progress=False)


def test_a_damaged_binary_shortlist_names_its_file(binary_index, tmp_path):
    import shutil

    copy = tmp_path / "idx"
    shutil.copytree(binary_index, copy)
    file = copy / "shortlist" / f"b{BIN}.faiss"
    size = file.stat().st_size
    file.write_bytes(b"\0" * size)
    with pytest.raises(InputError, match=f"b{BIN}.faiss"):
        Index(copy)
