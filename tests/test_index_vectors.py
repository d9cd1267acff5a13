"""Indexes from precomputed vectors: equal to an index from text, resumable, every bad input named."""
import json

import numpy as np
import pytest

from indexes import Index, build_index
from indexes.build import partial_dir
from retrieval import Searcher
from starbucks.corpus import iter_corpus
from starbucks.encoder import Encoder
from starbucks.errors import InputError, StarbucksError
from starbucks.sizes import parse_sizes
from starbucks_cli import main

from conftest import write_corpus

SIZES = dict(shortlist="1x8", rerank="2x16,4x48")
CHUNK = 16


def files(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def write_vectors(folder, corpus, model, sizes="1x8,2x16,3x32,4x48", dtype=np.float32):
    """``folder`` as --vectors reads it: the corpus encoded by the model's torch Encoder, in the
    chunks a build from text encodes (so the vectors are the same to the bit)."""
    folder.mkdir()
    docs = list(iter_corpus(corpus))
    (folder / "docids.txt").write_text("".join(d.docid + "\n" for d in docs))
    encoder = Encoder(model)
    parts = [encoder.encode_passages([d.text for d in docs[i : i + CHUNK]], parse_sizes(sizes))
             for i in range(0, len(docs), CHUNK)]
    for s in parts[0]:
        np.save(folder / f"{s}.npy", np.concatenate([p[s] for p in parts]).astype(dtype))
    return folder


@pytest.fixture
def vectors(tmp_path, corpus, tiny_model):
    return write_vectors(tmp_path / "vec", corpus, tiny_model)


def build(out, model, vectors, **kw):
    return build_index(None, out, model=model, vectors=vectors, chunk_size=CHUNK, progress=False, **{**SIZES, **kw})


def test_an_index_from_vectors_equals_one_from_text(tmp_path, corpus, vectors, tiny_model):
    text = build_index(corpus, tmp_path / "text", model=tiny_model, chunk_size=CHUNK, progress=False,
                       encoder="torch", **SIZES)
    out = build(tmp_path / "idx", tiny_model, vectors)  # 3x32.npy is there too, and ignored
    a, b = Index(text), Index(out, verify=True)
    assert (a.manifest.shortlist, a.manifest.rerank, a.manifest.num_docs) == \
        (b.manifest.shortlist, b.manifest.rerank, b.manifest.num_docs)
    assert b.manifest.model_fingerprint == tiny_model.fingerprint()
    assert list(a.docids) == list(b.docids)
    for sub in ("vectors", "shortlist"):
        assert {p: v for p, v in files(text).items() if p.parts[0] == sub} == \
            {p: v for p, v in files(out).items() if p.parts[0] == sub}
    assert (text / "docids.txt").read_bytes() == (out / "docids.txt").read_bytes()
    queries = ["coffee roasting", "jazz harmony glacier", "solar flares"]
    for plan in ("1x8:20,4x48:5", "4x48:5"):
        ra = Searcher(a, model=tiny_model).search_batch(queries, k=5, budget=plan)
        rb = Searcher(b, model=tiny_model).search_batch(queries, k=5, budget=plan)
        assert [r.docids for r in ra] == [r.docids for r in rb]
        assert [list(r.scores) for r in ra] == [list(r.scores) for r in rb]
    assert not partial_dir(out).exists()


def test_float16_vectors_and_the_cli(tmp_path, corpus, tiny_model, tiny_model_dir):
    vec = write_vectors(tmp_path / "vec", corpus, tiny_model, sizes="1x8,2x16,4x48", dtype=np.float16)
    clean = build(tmp_path / "clean", tiny_model, vec)
    out = tmp_path / "cli"
    assert main(["-q", "index", "--vectors", str(vec), "--model", str(tiny_model_dir), "--out", str(out),
                 "--shortlist", "1x8", "--rerank", "2x16,4x48", "--chunk-size", "16"]) == 0
    assert {p: v for p, v in files(out).items() if p.name != "manifest.json"} == \
        {p: v for p, v in files(clean).items() if p.name != "manifest.json"}
    assert json.loads((out / "manifest.json").read_text())["num_docs"] == 60


def test_an_interrupted_vectors_build_resumes(tmp_path, vectors, tiny_model, monkeypatch):
    import indexes.build as b

    clean = build(tmp_path / "clean", tiny_model, vectors)
    real = b._write_chunk
    calls = {"n": 0}

    def dying(*args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        real(*args)

    monkeypatch.setattr(b, "_write_chunk", dying)
    with pytest.raises(KeyboardInterrupt):
        build(tmp_path / "idx", tiny_model, vectors)
    assert not (tmp_path / "idx").exists()
    assert len(list((partial_dir(tmp_path / "idx") / "chunks").glob("*.npz"))) == 2
    calls["n"] = -100
    out = build(tmp_path / "idx", tiny_model, vectors)
    assert calls["n"] == -100 + 2  # only the two missing chunks were written
    assert files(out) == files(clean)
    assert not partial_dir(out).exists()


def test_resume_refuses_changed_vectors(tmp_path, vectors, tiny_model, monkeypatch):
    import indexes.build as b

    monkeypatch.setattr(b, "_assemble", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        build(tmp_path / "idx", tiny_model, vectors)
    monkeypatch.undo()
    m = np.load(vectors / "4x48.npy")
    m[20] += 1
    np.save(vectors / "4x48.npy", m)
    with pytest.raises(InputError, match="vectors changed.*rows 17-32"):
        build(tmp_path / "idx", tiny_model, vectors)


def edit(folder, name, value):
    if name == "docids.txt":
        (folder / name).write_text(value)
    elif value is None:
        (folder / name).unlink()
    else:
        np.save(folder / name, value)


@pytest.mark.parametrize("name, value, message", [
    ("4x48.npy", None, r"vec: no 4x48.npy: the vectors of size 4x48, which the index stores, are missing"),
    ("2x16.npy", np.zeros((60, 17), np.float32), r"2x16.npy: shape \(60, 17\); size 2x16 needs \[60, 16\]"),
    ("2x16.npy", np.zeros((60,), np.float32), r"2x16.npy: shape \(60,\)"),
    ("2x16.npy", np.zeros((59, 16), np.float32), r"2x16.npy: 59 rows, but .*docids.txt has 60 docids"),
    ("2x16.npy", np.zeros((60, 16), np.int32), r"2x16.npy: vectors are int32; expected float16 or float32"),
    ("docids.txt", "".join(f"d{i}\n" for i in range(59)), r"1x8.npy: 60 rows, but .*docids.txt has 59 docids"),
    ("docids.txt", "a\nb\n\nc\n", r"docids.txt:3: empty docid"),
    ("docids.txt", "".join(f"d{i}\n" for i in range(30)) + "d7\n", r"docids.txt:31: duplicate document id 'd7'"),
    ("docids.txt", "", r"docids.txt: no docids"),
])
def test_bad_vectors_are_one_line_errors_naming_the_file(tmp_path, vectors, tiny_model, name, value, message):
    edit(vectors, name, value)
    with pytest.raises(InputError, match=message) as e:
        build(tmp_path / "idx", tiny_model, vectors)
    assert "\n" not in str(e.value)
    assert not partial_dir(tmp_path / "idx").exists() and not (tmp_path / "idx").exists()


def test_nan_row_names_file_row_and_docid(tmp_path, vectors, tiny_model):
    m = np.load(vectors / "2x16.npy")
    m[40, 3] = np.nan
    np.save(vectors / "2x16.npy", m)
    with pytest.raises(InputError, match=r"2x16.npy: row 41 \(docid 'd40'\) is not finite"):
        build(tmp_path / "idx", tiny_model, vectors)
    (vectors / "2x16.npy").write_bytes(b"not numpy")
    with pytest.raises(InputError, match=r"2x16.npy: not a NumPy .npy file"):
        build(tmp_path / "idx2", tiny_model, vectors)


def test_bad_requests(tmp_path, corpus, vectors, tiny_model):
    with pytest.raises(StarbucksError, match="BM25 needs the documents' text"):
        build(tmp_path / "a", tiny_model, vectors, bm25=True)
    with pytest.raises(StarbucksError, match="not both"):
        build_index(corpus, tmp_path / "b", model=tiny_model, vectors=vectors)
    with pytest.raises(InputError, match="no such vectors folder"):
        build(tmp_path / "c", tiny_model, tmp_path / "nowhere")


@pytest.mark.parametrize("argv, message", [
    (["index", "--out", "x"], "give a corpus to index, or --vectors DIR"),
    (["index", "c.jsonl", "--vectors", ".", "--out", "x"], "not both"),
    (["index", "--vectors", ".", "--bm25", "--out", "x"], "--bm25 needs the documents' text"),
    (["index", "--vectors", "no-such-dir", "--out", "x"], "no-such-dir: no such vectors folder"),
])
def test_cli_errors(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_kill_9_during_a_vectors_build_then_resume(tmp_path, tiny_model_dir):
    import os
    import signal
    import subprocess
    import sys

    from test_kill_resume import wait_for

    n, rng = 10000, np.random.default_rng(0)
    vec = tmp_path / "vec"
    vec.mkdir()
    (vec / "docids.txt").write_text("".join(f"v{i}\n" for i in range(n)))
    for s, dim in (("1x8", 8), ("2x16", 16)):
        np.save(vec / f"{s}.npy", rng.standard_normal((n, dim)).astype(np.float32))
    sizes = ["--shortlist", "1x8", "--rerank", "2x16", "--chunk-size", "40"]
    clean = build_index(None, tmp_path / "clean", model=str(tiny_model_dir), vectors=vec, shortlist="1x8",
                        rerank="2x16", chunk_size=40, progress=False)
    out = tmp_path / "idx"
    command = [sys.executable, "-m", "starbucks_cli", "-q", "index", "--vectors", str(vec), "--out", str(out),
               "--model", str(tiny_model_dir), *sizes]
    env = dict(os.environ, TRANSFORMERS_VERBOSITY="error")
    chunks = partial_dir(out) / "chunks"
    process = subprocess.Popen(command, env=env)
    assert wait_for(lambda: len(list(chunks.glob("*.npz"))) >= 5, process), "finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert 5 <= len(list(chunks.glob("*.npz"))) < n // 40
    assert not out.exists()
    subprocess.run(command, check=True, env=env)
    assert files(out) == files(clean)
    assert not partial_dir(out).exists()
