"""Encoding on a local Ray cluster with two workers gives the index a single process builds."""
import importlib.util
import json
import shutil
import sys
import types

import pytest

from indexes import build_index
from indexes.build import partial_dir
from starbucks_cli import main

from conftest import write_corpus

SIZES = dict(shortlist="1x8", rerank="2x16,4x48")


def files(folder, sub):
    return {p.relative_to(folder): p.read_bytes() for p in sorted((folder / sub).rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_a_ray_build_equals_a_single_process_build_and_resumes_by_shard(tmp_path, tiny_model_dir, monkeypatch):
    pytest.importorskip("ray")
    import ray

    corpus = write_corpus(tmp_path / "corpus.jsonl", 300)
    with open(corpus, "a") as f:  # two documents with no text: indexed as empty text, and listed
        f.writelines(json.dumps({"_id": f"empty{i}", "title": "", "text": ""}) + "\n" for i in range(2))
    with pytest.warns(UserWarning, match="2 document"):
        single = build_index(corpus, tmp_path / "single", model=str(tiny_model_dir), chunk_size=16, progress=False,
                             encoder="torch", bm25=True, **SIZES)
    import indexes.build as b

    def run():
        return build_index(corpus, tmp_path / "ray", model=str(tiny_model_dir), chunk_size=16, progress=False,
                           encoder="torch", ray="", bm25=True, **SIZES)

    shards = partial_dir(tmp_path / "ray") / "ray"
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        with monkeypatch.context() as m:  # stop once the shards are encoded, before the index is built
            m.setattr(b, "_copy_vector_chunks", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
            with pytest.raises(KeyboardInterrupt):
                run()
        assert sorted(p.name for p in shards.glob("*.npz")) == ["00000000.npz", "00000001.npz", "00000002.npz"]
        (shards / "00000001.npz").unlink()  # as if the build had died while that shard was encoded
        shutil.rmtree(shards / "vectors")
        written, real = [], b._write_chunk
        monkeypatch.setattr(b, "_write_chunk", lambda path, *a: (written.append(path), real(path, *a)))
        with pytest.warns(UserWarning, match="2 document"):
            out = run()
        assert [p.name for p in written if p.parent == shards] == ["00000001.npz"]  # only that shard again
    finally:
        ray.shutdown()
    assert files(out, "vectors") == files(single, "vectors")
    assert files(out, "shortlist") == files(single, "shortlist")
    assert files(out, "bm25") == files(single, "bm25") != {}
    assert (out / "docids.txt").read_bytes() == (single / "docids.txt").read_bytes()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["empty_docs"] == json.loads((single / "manifest.json").read_text())["empty_docs"]
    assert manifest["empty_docs"]["ids"] == ["empty0", "empty1"]
    assert not partial_dir(out).exists()


def test_a_local_ray_gets_the_threads_and_each_task_one(tmp_path, tiny_model_dir, monkeypatch):
    """``threads`` sizes the local Ray this build starts (stopped here at ``ray.init``)."""
    started = {}

    class Started(Exception):
        pass

    def init(**kw):
        started.update(kw)
        raise Started

    fake = types.SimpleNamespace(is_initialized=lambda: False, init=init, shutdown=lambda: None)
    monkeypatch.setitem(sys.modules, "ray", fake)
    corpus = write_corpus(tmp_path / "corpus.jsonl", 5)
    with pytest.raises(Started):
        build_index(corpus, tmp_path / "o", model=str(tiny_model_dir), progress=False, encoder="torch", ray="",
                    threads=1, **SIZES)
    assert started["num_cpus"] == 1 and started["address"] is None
    started.clear()
    with pytest.raises(Started):  # a cluster's address: its own CPUs
        build_index(corpus, tmp_path / "o2", model=str(tiny_model_dir), progress=False, encoder="torch",
                    ray="10.0.0.1:6379", threads=1, **SIZES)
    assert "num_cpus" not in started and started["address"] == "10.0.0.1:6379"


def test_a_ray_task_encodes_with_one_thread(tiny_model_dir, monkeypatch):
    import torch

    from indexes import ray_build
    from starbucks.sizes import parse_sizes

    before = torch.get_num_threads()
    monkeypatch.setattr(ray_build, "_cached", {})
    try:
        out = ray_build._encode_shard(str(tiny_model_dir), "torch", 8, parse_sizes("2x16"), [["a b", "c"]])
        assert torch.get_num_threads() == 1 and out["2x16"].shape == (2, 16)
    finally:
        torch.set_num_threads(before)


def test_ray_without_ray_installed_is_one_line(tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    corpus = write_corpus(tmp_path / "c.jsonl", 5)
    assert main(["index", str(corpus), "--out", str(tmp_path / "o"), "--ray"]) == 2
    assert capsys.readouterr().err == \
        "error: --ray needs Ray: install the ray extra (pip install 'starbucks-retrieval[ray]')\n"


def test_ray_refuses_vectors(tmp_path, capsys):
    assert main(["index", "--vectors", str(tmp_path), "--out", str(tmp_path / "o"), "--ray"]) == 2
    assert capsys.readouterr().err == "error: --ray encodes a corpus: it takes no --vectors\n"
