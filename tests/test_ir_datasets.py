"""The ir_datasets path, through ir_datasets itself, on a dataset registered from local files."""
import ir_datasets
import pytest
from ir_datasets.formats import TrecQrels, TsvDocs, TsvQueries
from ir_datasets.util import LocalDownload

from starbucks.corpus import iter_corpus
from starbucks.errors import InputError
from starbucks.topics import read_qrels, read_topics


@pytest.fixture(scope="module")
def local_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("irds")
    (root / "docs.tsv").write_text("p1\tfirst passage\np2\tsecond passage\np3\tthird\n")
    (root / "queries.tsv").write_text("q1\tfirst query\nq2\tsecond query\n")
    (root / "qrels.txt").write_text("q1 0 p1 1\nq2 0 p3 2\n")
    name = "starbucks-test/local"
    if name not in ir_datasets.registry:
        ir_datasets.registry.register(name, ir_datasets.Dataset(
            TsvDocs(LocalDownload(root / "docs.tsv"), count_hint=3),
            TsvQueries(LocalDownload(root / "queries.tsv")),
            TrecQrels(LocalDownload(root / "qrels.txt"), {1: "relevant", 2: "highly relevant"}),
        ))
    return f"irds:{name}"


def test_corpus_topics_and_qrels_stream_from_ir_datasets(local_dataset):
    assert [(d.docid, d.text) for d in iter_corpus(local_dataset)] == [
        ("p1", "first passage"), ("p2", "second passage"), ("p3", "third")]
    assert read_topics(local_dataset) == {"q1": "first query", "q2": "second query"}
    assert read_qrels(local_dataset) == {"q1": {"p1": 1}, "q2": {"p3": 2}}


def test_index_builds_straight_from_an_ir_datasets_id(local_dataset, tiny_model, tmp_path):
    from indexes import Index, build_index

    out = build_index(local_dataset, tmp_path / "idx", model=tiny_model, shortlist="1x8", rerank="4x48", progress=False)
    index = Index(out)
    assert list(index.docids) == ["p1", "p2", "p3"] and index.manifest.corpus == local_dataset


def test_unknown_ir_datasets_id_is_a_clear_error():
    with pytest.raises(InputError, match="unknown ir_datasets id"):
        list(iter_corpus("irds:no-such/dataset"))


def test_pyserini_missing_is_a_clear_error(monkeypatch):
    import sys

    from retrieval.bm25 import PyseriniBM25
    from starbucks.errors import StarbucksError

    monkeypatch.setitem(sys.modules, "pyserini", None)
    monkeypatch.setitem(sys.modules, "pyserini.search.lucene", None)
    with pytest.raises(StarbucksError, match="pyserini"):
        PyseriniBM25("some-index")
