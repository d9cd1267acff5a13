"""Binary HNSW and IVF shortlists: sign bits searched approximately, their parameter passed per search."""
import faiss
import numpy as np
import pytest

from indexes import Index, build_index
from indexes.faiss_index import binary_index, sign_codes
from retrieval import Plan, Searcher
from retrieval.planner import Planner
from starbucks.errors import StarbucksError
from starbucks.sizes import Size
from starbucks_cli import main

from conftest import write_random_vectors

SHORT, BIN, FULL = Size(1, 8), Size(3, 32), Size(4, 48)
DOCS = 1600


@pytest.fixture(scope="module")
def vectors(tmp_path_factory):
    return write_random_vectors(tmp_path_factory.mktemp("binann") / "vec", (SHORT, BIN, FULL), DOCS)


@pytest.fixture(scope="module", params=["hnsw", "ivf"])
def ann(request, vectors, tiny_model):
    out = build_index(None, vectors.parent / f"idx-{request.param}", model=tiny_model, vectors=vectors,
                      shortlist=str(SHORT), rerank=f"{BIN},{FULL}", binary=str(BIN), binary_index=request.param,
                      chunk_size=500, progress=False)
    return Searcher(out, model=tiny_model, encoder="torch")


def flat_distances(index, size, queries):
    """Exact Hamming distances of every document (the flat binary reference)."""
    flat = binary_index(index.vectors[size])
    return flat.search(sign_codes(queries), len(index))


def queries(n=20, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, BIN.dim)).astype(np.float32)


def test_manifest_records_the_binary_index_type(ann):
    index = ann.index
    kind = index.manifest.binary_index
    assert kind in ("hnsw", "ivf")
    assert isinstance(index.binary[BIN], faiss.IndexBinaryHNSW if kind == "hnsw" else faiss.IndexBinaryIVF)
    assert Index(index.path, verify=True).manifest.binary_index == kind


def test_binary_ann_recall_against_flat(ann):
    index, q, k = ann.index, queries(), 10
    dist, _ = flat_distances(index, BIN, q)
    kth = dist[:, k - 1]
    name = "ef" if index.manifest.binary_index == "hnsw" else "nprobe"
    recalls = {}
    for value in ((10, 64, 256) if name == "ef" else (1, 8, 32)):
        scores, rows = index.search_binary(BIN, q, k, (name, value))
        got = (BIN.dim - scores) / 2  # back to distances
        np.testing.assert_array_equal(got, np.take_along_axis(dist_of(index, q), rows, 1))
        recalls[value] = float(np.mean(got <= kth[:, None]))  # ties at the k-th distance count as found
    low, mid, high = recalls.values()
    assert high >= 0.9 and high >= low, recalls


def dist_of(index, q):
    """Each query's Hamming distance to every row, by NumPy."""
    docs = np.packbits(np.asarray(index.vectors[BIN], dtype=np.float32) > 0, axis=1)
    qs = np.packbits(q > 0, axis=1)
    return np.unpackbits(qs[:, None, :] ^ docs[None, :, :], axis=2).sum(axis=2)


def test_ivf_with_every_list_probed_equals_flat(ann):
    index = ann.index
    if index.manifest.binary_index != "ivf":
        pytest.skip("IVF only")
    q = queries()
    nlist = index.binary[BIN].nlist
    assert nlist > 1
    dist, _ = flat_distances(index, BIN, q)
    scores, rows = index.search_binary(BIN, q, 50, ("nprobe", nlist))
    np.testing.assert_array_equal((BIN.dim - scores) / 2, dist[:, :50])
    np.testing.assert_array_equal(np.take_along_axis(dist_of(index, q), rows, 1), dist[:, :50])
    # Fewer lists probed finds fewer of the exact neighbours (the parameter reached FAISS).
    one = index.search_binary(BIN, q, 50, ("nprobe", 1))[0]
    assert not np.array_equal(one, scores)


def test_parameters_are_per_search_not_stored(ann):
    index = ann.index
    faiss_index = index.binary[BIN]
    before = faiss_index.hnsw.efSearch if isinstance(faiss_index, faiss.IndexBinaryHNSW) else faiss_index.nprobe
    name = "ef" if index.manifest.binary_index == "hnsw" else "nprobe"
    index.search_binary(BIN, queries(2), 10, (name, 3))
    after = faiss_index.hnsw.efSearch if name == "ef" else faiss_index.nprobe
    assert after == before
    wrong = "nprobe" if name == "ef" else "ef"
    with pytest.raises(ValueError, match=f"binary size {BIN}.*{wrong}= does not apply"):
        ann.search("coffee", budget=f"b{BIN}~{wrong}=4:50,{FULL}:10")


def test_binary_ann_cascade_end_to_end(ann):
    name = "ef" if ann.index.manifest.binary_index == "hnsw" else "nprobe"
    text = f"b{BIN}~{name}=16:40,{FULL}:10"
    plan = Plan.parse(text)
    assert str(plan) == text and plan[0].binary and plan[0].param == (name, 16)
    result = ann.search("jazz harmony", k=10, budget=plan)
    q = ann.encoder.encode_queries(["jazz harmony"], [BIN, FULL])
    _, rows = ann.index.search_binary(BIN, q[BIN], 40, (name, 16))
    rows = rows[0][rows[0] >= 0]
    exact = np.asarray(ann.index.vectors[FULL], dtype=np.float32)[rows] @ q[FULL][0]
    assert result.docids == ann.index.docids.lookup(rows[np.argsort(-exact, kind="stable")][:10])
    assert set(result.timings) == {"encode", f"shortlist b{BIN}~{name}=16", f"rerank {FULL}"}


def test_planner_enumerates_binary_parameters(ann):
    plans = Planner(ann.index).candidates(10)
    firsts = {p[0].source for p in plans if p[0].binary}
    name = "ef" if ann.index.manifest.binary_index == "hnsw" else "nprobe"
    assert f"b{BIN}" in firsts and len([f for f in firsts if f.startswith(f"b{BIN}~{name}=")]) >= 2
    assert all(Plan.parse(str(p)) == p for p in plans)


def test_padding_when_the_index_finds_fewer(ann):
    """A deep search with a small parameter may come back padded with -1; the cascade drops the padding."""
    name = "ef" if ann.index.manifest.binary_index == "hnsw" else "nprobe"
    result = ann.search("chess openings", k=5, budget=f"b{BIN}~{name}=1:{DOCS},{FULL}:5")
    assert len(result.docids) == 5 and all(d.startswith("d") for d in result.docids)


def test_bad_binary_index_types(vectors, tiny_model, tmp_path):
    with pytest.raises(StarbucksError, match="unknown binary index type 'pq'"):
        build_index(None, tmp_path / "x", model=tiny_model, vectors=vectors, shortlist=str(SHORT),
                    rerank=str(FULL), binary=str(FULL), binary_index="pq", progress=False)
    with pytest.raises(StarbucksError, match="needs binary sizes"):
        build_index(None, tmp_path / "x", model=tiny_model, vectors=vectors, shortlist=str(SHORT),
                    rerank=str(FULL), binary_index="hnsw", progress=False)
    assert not (tmp_path / "x.partial").exists()


def test_cli_refuses_binary_index_without_binary(vectors, tiny_model_dir, tmp_path, capsys):
    code = main(["index", "--vectors", str(vectors), "--model", str(tiny_model_dir), "--out", str(tmp_path / "o"),
                 "--binary-index", "ivf"])
    err = capsys.readouterr().err
    assert code != 0 and "--binary-index ivf needs --binary" in err and len(err.strip().splitlines()) == 1
