"""A layer's narrower sizes stored once, as prefixes of its widest stored vector."""
import json

import numpy as np
import pytest

from indexes import Index, build_index
from indexes.prefixes import PrefixMatrix, prefix_sources
from retrieval import Searcher
from starbucks.errors import StarbucksError
from starbucks.sizes import Size, parse_sizes
from starbucks_cli import main

from conftest import make_tiny_model, write_corpus, write_random_vectors

SIZES = dict(shortlist="4x16", rerank="2x24,4x32,4x48")
QUERIES = ["coffee roasting", "jazz harmony", "tidal energy", "chess openings", "solar flares"]


@pytest.fixture(scope="module")
def cosine_model():
    return make_tiny_model(pooling="mean", similarity="cosine")


@pytest.fixture(scope="module")
def pair(tmp_path_factory, cosine_model):
    """The same corpus indexed with prefixes and with every size in its own file (the default)."""
    root = tmp_path_factory.mktemp("prefixes")
    corpus = write_corpus(root / "corpus.jsonl", 300)
    kw = dict(model=cosine_model, chunk_size=64, progress=False, encoder="torch", binary="4x32", **SIZES)
    return (Index(build_index(corpus, root / "once", prefixes=True, **kw)),
            Index(build_index(corpus, root / "separate", **kw)))


def test_prefix_sources_are_each_layers_widest():
    sizes = parse_sizes("1x16,6x32,6x64,6x384,4x128")
    assert prefix_sources(sizes) == {Size(6, 32): Size(6, 384), Size(6, 64): Size(6, 384)}


def test_narrower_sizes_are_stored_once(pair):
    once, separate = pair
    names = sorted(p.name for p in (once.path / "vectors").iterdir())
    assert names == ["2x24.npy", "4x48.npy"]
    assert once.manifest.prefixes == {Size(4, 16): Size(4, 48), Size(4, 32): Size(4, 48)}
    assert separate.manifest.prefixes == {} and (separate.path / "vectors" / "4x32.npy").is_file()
    on_disk = [sum(f.stat().st_size for f in (i.path / "vectors").iterdir()) for i in pair]
    assert abs(on_disk[1] - on_disk[0] - len(once) * (16 + 32) * 2) < 1000  # two .npy headers apart


def test_a_prefix_reads_as_its_own_unit_length_matrix(pair):
    once, separate = pair
    for size in (Size(4, 16), Size(4, 32)):
        view = once.vectors[size]
        assert isinstance(view, PrefixMatrix) and view.shape == (len(once), size.dim) and view.dtype == np.float16
        rows = np.array([5, 0, 299, 5])
        got = view[rows]
        assert got.dtype == np.float16 and got.shape == (4, size.dim)
        np.testing.assert_allclose(got.astype(np.float32), separate.vectors[size][rows].astype(np.float32), atol=3e-3)
        np.testing.assert_allclose(np.linalg.norm(np.asarray(view[10:20], np.float32), axis=1), 1, atol=3e-3)
        np.testing.assert_array_equal(np.asarray(view), view[:])


def test_searches_match_separate_files(pair, cosine_model):
    once, separate = pair
    for plan in ("4x16:100,4x32:20,4x48:10", "4x32:10", "b4x32:200,4x32:10", "4x16:50,2x24:10"):
        a = Searcher(once, model=cosine_model, encoder="torch").search_batch(QUERIES, k=10, budget=plan)
        b = Searcher(separate, model=cosine_model, encoder="torch").search_batch(QUERIES, k=10, budget=plan)
        for x, y in zip(a, b):
            assert len(set(x.docids) & set(y.docids)) >= 9
            np.testing.assert_allclose(sorted(x.scores), sorted(y.scores), atol=5e-3)
    # the sign bits of a rescaled prefix are the prefix's: the binary shortlists are the same
    import faiss

    codes = [faiss.serialize_index_binary(i.binary[Size(4, 32)]) for i in pair]
    np.testing.assert_array_equal(*codes)


def test_without_normalisation_a_prefix_is_exact(tmp_path, tiny_model):
    sizes = parse_sizes("4x16,4x32,4x48")
    vectors = write_random_vectors(tmp_path / "vec", sizes, 120)
    built = Index(build_index(None, tmp_path / "idx", model=tiny_model, vectors=vectors, shortlist="4x16",
                              rerank="4x32,4x48", progress=False, prefixes=True))
    assert sorted(p.name for p in (built.path / "vectors").iterdir()) == ["4x48.npy"]
    for s in sizes:
        np.testing.assert_array_equal(built.vectors[s][np.arange(120)],
                                      np.load(vectors / f"{s}.npy").astype(np.float16))


def test_vectors_that_are_not_prefixes_are_refused(tmp_path, tiny_model, capsys):
    sizes = parse_sizes("4x16,4x48")
    vectors = write_random_vectors(tmp_path / "vec", sizes, 60)
    np.save(vectors / "4x16.npy", np.random.default_rng(1).standard_normal((60, 16)).astype(np.float32))
    args = ["--quiet", "index", "--vectors", str(vectors), "--model", str(tmp_path / "m"), "--shortlist", "4x16",
            "--rerank", "4x48"]
    tiny_model.save(tmp_path / "m")
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "bad"), "--prefixes"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "are not the first 16 coordinates of its 4x48 vectors" in err
    assert "build without --prefixes" in err
    assert main([*args, "--out", str(tmp_path / "ok")]) == 0
    assert Index(tmp_path / "ok").manifest.prefixes == {}


def test_an_index_of_format_1_still_opens(pair, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(pair[1].path, old)
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["format_version"] = 1
    del manifest["prefixes"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    index = Index(old)
    assert index.manifest.prefixes == {} and index.sizes == pair[1].sizes


def test_a_prefix_without_its_source_is_a_clear_error(pair, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(pair[0].path, broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["prefixes"]["4x32"] = "2x24"
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StarbucksError, match="4x32 is stored as a prefix of 2x24, which this index does not store"):
        Index(broken)
