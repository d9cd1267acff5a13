"""The scale benchmark's measuring parts: resident memory, cold caches, shortlist variants, table and plot."""
import faiss
import numpy as np
import pytest

from experiments import scale
from indexes import Index, build_index
from starbucks.sizes import Size

from conftest import write_random_vectors

SHORT, FULL = Size(1, 8), Size(4, 48)


@pytest.fixture(scope="module")
def index(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("scale")
    vectors = write_random_vectors(root / "vec", (SHORT, FULL), 1200, seed=2)
    return Index(build_index(None, root / "idx", model=tiny_model, vectors=vectors, shortlist=str(SHORT),
                             rerank=str(FULL), chunk_size=400, progress=False))


def test_rss_growth_sees_touched_memory():
    with scale.Resident() as resident:
        block = np.ones(64 * 2**20 // 8)  # 64 MiB, written
    assert resident.grown >= 0.8 * block.nbytes
    with scale.Resident() as untouched:
        empty = np.empty(64 * 2**20 // 8)  # reserved, never touched: not resident
    assert untouched.grown < 0.5 * empty.nbytes


def test_cold_cache_drop_keeps_the_data(index):
    matrix = index.vectors[FULL]
    before = np.array(matrix[:50])
    scale.drop_cache([matrix])
    scale.drop_cache([matrix], page_cache=False)
    np.testing.assert_array_equal(matrix[:50], before)
    calls = []
    rows = [{0, 1}] * 4
    result = scale.timed(lambda sl: [[0, 1]] * (sl.stop - sl.start), 4, rows, 2, before=lambda: calls.append(1))
    assert len(calls) == 2 and result["recall@10"] == pytest.approx(0.2)


def test_a_baseline_too_large_is_skipped_with_its_size():
    skipped = scale.too_large("flat", 10**15, "float32 vectors")
    assert skipped["skipped"].startswith("needs about 1000000.0 GB (float32 vectors)")
    assert scale.too_large("flat", 1000, "float32 vectors") is None


@pytest.mark.parametrize("kind, expected", [("hnsw", faiss.IndexHNSW), ("ivfpq", faiss.IndexIVF),
                                             ("binary-flat", faiss.IndexBinaryFlat),
                                             ("binary-hnsw", faiss.IndexBinaryHNSW), ("binary-ivf", faiss.IndexBinaryIVF)])
def test_shortlist_variants_share_the_vectors_and_leave_the_index_alone(index, kind, expected):
    other, seconds = scale.variant(index, kind, [FULL])
    built = other.binary[FULL] if kind.startswith("binary") else other.shortlist[SHORT]
    assert isinstance(built, expected) and built.ntotal == len(index) and seconds >= 0
    assert other.vectors is index.vectors and isinstance(index.shortlist[SHORT], faiss.IndexFlat)
    assert index.binary == {}


def _row(recall, ms, **extra):
    one = {"recall@10": recall, "ms": ms, "qps": 1000 / ms, "queries": 4}
    return {"single": one, f"batch {scale.BATCH}": one, "ram_bytes_per_doc": 70.0, "note": "n",
            "build_s": 1.0, "rss_bytes_per_doc": 80.0, "end_to_end_ms": ms + 1, **extra}


def test_table_and_plot(tmp_path):
    result = {"sizes": [{"documents": 1000, "systems": {
        "cascade, flat shortlist: 1x8:100,4x48:10": _row(0.99, 2.0),
        "HNSW32 efSearch=64": {**_row(0.95, 0.5), "sweep": [_row(0.9, 0.3), _row(0.95, 0.5)]},
        "exhaustive, FAISS flat float32": {"skipped": "needs about 15.4 GB", "name": "flat"},
    }}]}
    text = scale.table(result)
    assert "| 1,000 | cascade, flat shortlist: 1x8:100,4x48:10 | 0.9900 | 2.00 | 3.00 |" in text
    assert "skipped: needs about 15.4 GB" in text
    path = scale.plot(result, tmp_path / "frontier.png")
    assert path is not None and path.stat().st_size > 1000


def test_better_prefers_the_target_then_speed():
    fast_low, slow_ok, fast_ok = _row(0.9, 1.0), _row(0.995, 5.0), _row(0.99, 3.0)
    assert scale._better(slow_ok, fast_low) and scale._better(fast_ok, slow_ok)
    assert scale._better(_row(0.95, 9.0), fast_low)


def test_tiers_and_the_hnsw_comparison_run_on_a_small_index(index, tiny_model):
    from retrieval import Plan, Searcher
    from retrieval.calibrate import Encoded

    searcher = Searcher(index, model=tiny_model, encoder="torch", threads=1)
    texts = ["coffee roasting", "jazz harmony", "tidal energy", "chess openings"]
    encoded = Encoded(searcher, texts, progress=False)
    qids = [f"q{i}" for i in range(len(texts))]
    qrels = scale.truth(index, encoded.vectors[FULL], qids)
    truth_rows = [{int(d[1:]) for d in qrels[q]} for q in qids]
    variant, _ = scale.variant(index, "binary-flat", [FULL])
    plan = Plan.parse(f"b{FULL}:300,{FULL}:10")
    rows = scale.tiers(searcher, variant, plan, encoded, truth_rows)
    assert sorted(r["tier"] for r in rows.values()) == ["float16:4x48", "int8:4x48", "mmap cold", "mmap warm"]
    assert all(r["single"]["recall@10"] > 0.5 and r["plan"] == str(plan) for r in rows.values())
    grid = [{"plan": str(plan), "ms": 1.0, "effectiveness": 0.9}]
    hnsw = {"HNSW32 efSearch=64": {"sweep": [{"name": "HNSW32 efSearch=64", "single": {"recall@10": 0.9, "ms": 0.5},
                                              "rss_bytes_per_doc": 300.0, "ram_bytes_per_doc": 290.0}]}}
    found = scale.against_hnsw(searcher, {"binary-flat": variant}, {"binary-flat": grid}, encoded, truth_rows, hnsw)
    assert found["hnsw32"]["recall@10"] == 0.9
    tiers = [r["tier"] for r in found["cascades"]]
    assert tiers == ["mmap warm", "int8:4x48", "int8:4x48"]
    assert found["cascades"][2]["plan"] == f"b{FULL}:300,{FULL}:50,{FULL}:10"  # int8, refined from the map
    assert all(r["latency_ratio"] > 0 and r["bytes_ratio"] > 0 for r in found["cascades"])
    assert "| binary-flat |" in scale.against_table(found)
    assert scale.against_hnsw(searcher, {}, {}, encoded, truth_rows, {}) is None


def test_the_flat_float32_baseline_is_filled_in_place_and_searches_as_faiss_add(index):
    matrix = index.vectors[FULL]
    built = scale.flat_float32(matrix, block=500)  # blocks that do not divide the rows
    added = faiss.IndexFlatIP(FULL.dim)
    added.add(np.asarray(matrix, dtype=np.float32))
    assert built.ntotal == len(index) and built.codes.size() == len(index) * FULL.dim * 4
    q = np.random.default_rng(0).standard_normal((5, FULL.dim)).astype(np.float32)
    for a, b in zip(built.search(q, 10), added.search(q, 10)):
        np.testing.assert_array_equal(a, b)
    assert scale.flat_float32(matrix[:0]).ntotal == 0


def test_a_flat_baselines_bytes_are_counted_without_serialising_it(index, monkeypatch):
    from experiments import baselines

    built = scale.flat_float32(index.vectors[FULL])
    expected = len(faiss.serialize_index(built))
    monkeypatch.setattr(faiss, "serialize_index", lambda i: (_ for _ in ()).throw(AssertionError("serialised")))
    assert abs(baselines.ram_bytes(built) - expected) < 200  # the vectors, less a header


def test_the_synthetic_index_is_written_with_the_first_measured_shortlist_type():
    assert scale.written_type(["ivfpq", "hnsw"]) == "ivfpq"
    assert scale.written_type(["hnsw", "flat"]) == "flat" and scale.written_type([]) == "flat"


def test_ram_tiers_hold_a_shortlist_size_a_plan_reranks_exactly(index, tiny_model):
    from retrieval import Plan, Searcher
    from retrieval.calibrate import Encoded

    searcher = Searcher(index, model=tiny_model, encoder="torch", threads=1)
    encoded = Encoded(searcher, ["coffee roasting", "jazz harmony"], progress=False)
    qrels = scale.truth(index, encoded.vectors[FULL], ["q0", "q1"])
    truth_rows = [{int(d[1:]) for d in qrels[q]} for q in ("q0", "q1")]
    rows = scale.tiers(searcher, index, Plan.parse(f"{SHORT}:300,{SHORT}:10"), encoded, truth_rows, with_cold=False)
    assert sorted(r["tier"] for r in rows.values()) == [f"float16:{SHORT}", f"int8:{SHORT}", "mmap warm"]
