"""Building, resuming and opening indexes; every bad input is a clear error and loses nothing."""
import json
import shutil

import numpy as np
import pytest

from indexes import Index, build_index
from indexes.build import partial_dir
from starbucks.corpus import iter_corpus
from starbucks.encoder import Encoder
from starbucks.errors import InputError, StarbucksError
from starbucks.sizes import Size

from conftest import make_tiny_model, write_corpus

SIZES = dict(shortlist="1x8", rerank="2x16,4x48")


def build(corpus, out, model, **kw):
    return build_index(corpus, out, model=model, chunk_size=16, progress=False, **{**SIZES, **kw})


def files(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_index_holds_every_size_and_maps_docids(tmp_path, corpus, tiny_model):
    out = build(corpus, tmp_path / "idx", tiny_model)
    index = Index(out, verify=True)
    m = index.manifest
    assert (m.num_docs, m.shortlist, m.rerank, m.index_type) == (60, [Size(1, 8)], [Size(2, 16), Size(4, 48)], "flat")
    assert m.model_fingerprint == tiny_model.fingerprint()
    docs = list(iter_corpus(corpus))
    assert list(index.docids) == [d.docid for d in docs]
    assert index.docids.lookup([5, 0]) == ["d5", "d0"]
    expected = Encoder(tiny_model).encode_passages([d.text for d in docs], [Size(4, 48)])[Size(4, 48)]
    np.testing.assert_allclose(index.vectors[Size(4, 48)], expected.astype(np.float16), atol=1e-3)
    assert not partial_dir(out).exists()


def test_resume_skips_finished_chunks_and_matches_a_clean_build(tmp_path, corpus, tiny_model, monkeypatch):
    clean = build(corpus, tmp_path / "clean", tiny_model)
    import indexes.build as b

    calls = {"n": 0}
    real = b.Encoder.encode_passages

    def dying(self, texts, sizes, batch_size=None):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, texts, sizes, batch_size)

    monkeypatch.setattr(b.Encoder, "encode_passages", dying)
    with pytest.raises(KeyboardInterrupt):
        build(corpus, tmp_path / "idx", tiny_model)
    assert not (tmp_path / "idx").exists()
    assert len(list((partial_dir(tmp_path / "idx") / "chunks").glob("*.npz"))) == 2
    calls["n"] = -100
    out = build(corpus, tmp_path / "idx", tiny_model)
    assert calls["n"] == -100 + 2  # only the two missing chunks were encoded
    assert files(out) == files(clean)


def test_resume_refuses_a_changed_corpus_or_other_settings(tmp_path, corpus, tiny_model, monkeypatch):
    import indexes.build as b

    monkeypatch.setattr(b, "_assemble", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        build(corpus, tmp_path / "idx", tiny_model)
    monkeypatch.undo()
    with pytest.raises(StarbucksError, match="other settings.*shortlist"):
        build(corpus, tmp_path / "idx", tiny_model, shortlist="2x8")
    lines = corpus.read_text().splitlines()
    lines[3] = json.dumps({"_id": "d3", "text": "changed text"})
    corpus.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match="corpus changed.*documents 1-16"):
        build(corpus, tmp_path / "idx", tiny_model)
    assert len(list((partial_dir(tmp_path / "idx") / "chunks").glob("*.npz"))) == 4  # nothing lost


def test_duplicate_docid_names_file_and_line(tmp_path, tiny_model):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"_id": "a", "text": "x"}\n{"_id": "b", "text": "y"}\n{"_id": "a", "text": "z"}\n')
    with pytest.raises(InputError, match=r"c.jsonl:3: duplicate document id 'a'"):
        build(corpus, tmp_path / "idx", tiny_model)


def test_bad_build_requests(tmp_path, corpus, tiny_model):
    with pytest.raises(StarbucksError, match="beyond the model's 4 layers"):
        build(corpus, tmp_path / "a", tiny_model, rerank="6x48")
    with pytest.raises(StarbucksError, match="beyond the model's width"):
        build(corpus, tmp_path / "b", tiny_model, rerank="4x64")
    with pytest.raises(StarbucksError, match="unknown index type"):
        build(corpus, tmp_path / "c", tiny_model, index_type="lsh")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(InputError, match="empty"):
        build(empty, tmp_path / "d", tiny_model)
    out = build(corpus, tmp_path / "e", tiny_model)
    with pytest.raises(StarbucksError, match="already exists"):
        build(corpus, out, tiny_model)
    before = files(out)
    with pytest.raises(InputError):
        build(tmp_path / "missing.jsonl", out, tiny_model, overwrite=True)
    assert files(out) == before  # a failed rebuild leaves the old index intact
    (tmp_path / "notindex").mkdir()
    with pytest.raises(StarbucksError, match="not an index"):
        build(corpus, tmp_path / "notindex", tiny_model, overwrite=True)


def test_opening_damaged_or_foreign_indexes(tmp_path, built_index):
    bad = tmp_path / "bad"
    shutil.copytree(built_index, bad)
    with open(bad / "vectors" / "4x48.npy", "r+b") as f:
        f.truncate(1000)
    with pytest.raises(InputError, match=r"4x48.npy.*truncated"):
        Index(bad)
    shutil.rmtree(bad)
    shutil.copytree(built_index, bad)
    raw = bytearray((bad / "shortlist" / "1x8.faiss").read_bytes())
    raw[100:110] = b"\xff" * 10
    (bad / "shortlist" / "1x8.faiss").write_bytes(bytes(raw))
    with pytest.raises(InputError, match="checksum"):
        Index(bad, verify=True)
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["format_version"] = 99
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="format version 99"):
        Index(bad)
    (bad / "manifest.json").write_text("{not json")
    with pytest.raises(InputError, match="corrupt manifest"):
        Index(bad)
    (bad / "manifest.json").unlink()
    with pytest.raises(InputError, match="not an index"):
        Index(bad)
    with pytest.raises(InputError, match="no such index"):
        Index(tmp_path / "nothing")


def test_searching_with_another_model_is_refused(built_index):
    from retrieval import Searcher

    with pytest.raises(StarbucksError, match="built with model"):
        Searcher(built_index, model=make_tiny_model(seed=1))


@pytest.mark.parametrize("index_type", ["hnsw", "ivfpq"])
def test_graph_and_compressed_shortlist_indexes(tmp_path, tiny_model, index_type):
    corpus = write_corpus(tmp_path / "c.jsonl", 1200)
    out = build_index(corpus, tmp_path / "idx", model=tiny_model, shortlist="2x16", rerank="4x48",
                      index_type=index_type, chunk_size=400, progress=False)
    index = Index(out)
    q = np.asarray(index.vectors[Size(2, 16)][:3], dtype=np.float32)
    scores, rows = index.search(Size(2, 16), q, 10)
    assert rows.shape == (3, 10) and (rows >= 0).all()
    exact = index.scan(Size(2, 16), q, 10)[1]
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows, exact)])
    assert overlap >= 0.5


def test_default_sizes_shortlist_at_last_layer_cuts_and_a_wide_enough_trained_size():
    import dataclasses

    from indexes.build import default_sizes

    model = make_tiny_model()  # trained at 1x2 1x4 2x8 2x16 3x32 4x48
    assert default_sizes(model) == ([Size(2, 8), Size(4, 4), Size(4, 8)], [Size(2, 16), Size(3, 32), Size(4, 48)])
    model.config = dataclasses.replace(model.config, sizes=[Size(4, 48)])  # a plain embedding model
    assert default_sizes(model) == ([Size(4, 4), Size(4, 8)], [Size(4, 48)])
