"""Encoding on a local Ray cluster with two workers gives the index a single process builds."""
import importlib.util
import shutil

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
    single = build_index(corpus, tmp_path / "single", model=str(tiny_model_dir), chunk_size=16, progress=False,
                         encoder="torch", **SIZES)
    import indexes.build as b

    def run():
        return build_index(corpus, tmp_path / "ray", model=str(tiny_model_dir), chunk_size=16, progress=False,
                           encoder="torch", ray="", **SIZES)

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
        out = run()
        assert [p.name for p in written if p.parent == shards] == ["00000001.npz"]  # only that shard again
    finally:
        ray.shutdown()
    assert files(out, "vectors") == files(single, "vectors")
    assert files(out, "shortlist") == files(single, "shortlist")
    assert (out / "docids.txt").read_bytes() == (single / "docids.txt").read_bytes()
    assert not partial_dir(out).exists()


def test_ray_without_ray_installed_is_one_line(tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    corpus = write_corpus(tmp_path / "c.jsonl", 5)
    assert main(["index", str(corpus), "--out", str(tmp_path / "o"), "--ray"]) == 2
    assert capsys.readouterr().err == \
        "error: --ray needs Ray: install the ray extra (pip install 'starbucks-retrieval[ray]')\n"


def test_ray_refuses_bm25_and_vectors(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "c.jsonl", 5)
    for extra in (["--bm25"], ["--vectors", str(tmp_path)]):
        args = ["index", *([] if extra[0] == "--vectors" else [str(corpus)]), "--out", str(tmp_path / "o"), *extra]
        assert main([*args, "--ray"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1
