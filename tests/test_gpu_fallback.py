"""The GPU path, checked on a CPU: FAISS shortlists move to a GPU only with a GPU build that sees one,
and every failure to move falls back to the CPU index."""
import numpy as np
import pytest

import indexes.faiss_index as fi
from indexes import Index


def flat(n=50, d=8, seed=0):
    rng = np.random.default_rng(seed)
    index = fi.faiss.IndexFlatIP(d)
    index.add(rng.standard_normal((n, d)).astype(np.float32))
    return index


def test_the_cpu_build_keeps_indexes_on_the_cpu():
    index = flat()
    assert fi.gpu_count() == 0  # faiss-cpu, as installed for the tests
    assert fi.to_gpu(index) is index


def test_a_gpu_build_without_a_usable_gpu_falls_back(monkeypatch):
    index = flat()
    monkeypatch.setattr(fi.faiss, "get_num_gpus", lambda: (_ for _ in ()).throw(RuntimeError("no driver")), raising=False)
    assert fi.gpu_count() == 0 and fi.to_gpu(index) is index

    class Resources:
        pass

    def refuse(res, device, index):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(fi.faiss, "get_num_gpus", lambda: 1, raising=False)
    monkeypatch.setattr(fi.faiss, "StandardGpuResources", Resources, raising=False)
    monkeypatch.setattr(fi.faiss, "index_cpu_to_gpu", refuse, raising=False)
    monkeypatch.setattr(fi, "_GPU_RESOURCES", None)
    assert fi.to_gpu(index) is index


def test_a_gpu_copy_serves_shallow_searches_and_the_cpu_deep_ones(monkeypatch):
    index = flat(n=3000)
    calls = []

    class FakeGpu:
        def search(self, q, k):
            calls.append(("gpu", k))
            return index.search(q, k)

    monkeypatch.setattr(fi.faiss, "get_num_gpus", lambda: 1, raising=False)
    monkeypatch.setattr(fi.faiss, "StandardGpuResources", object, raising=False)
    monkeypatch.setattr(fi.faiss, "index_cpu_to_gpu", lambda res, device, i: FakeGpu(), raising=False)
    monkeypatch.setattr(fi, "_GPU_RESOURCES", None)
    moved = fi.to_gpu(index)
    assert isinstance(moved, fi.GpuShortlist) and moved.ntotal == 3000 and moved.d == 8
    q = np.ones((1, 8), dtype=np.float32)
    assert np.array_equal(moved.search(q, 10)[1], index.search(q, 10)[1])
    moved.search(q, fi.GPU_MAX_K + 1)
    assert calls == [("gpu", 10)]
    hnsw = fi.faiss.IndexHNSWFlat(8, 8)
    assert fi.to_gpu(hnsw) is hnsw  # no GPU version of HNSW


def test_an_index_opened_with_a_failing_gpu_searches_as_on_the_cpu(monkeypatch, built_index):
    size = Index(built_index).manifest.shortlist[0]
    q = np.random.default_rng(1).standard_normal((2, size.dim)).astype(np.float32)
    expected = Index(built_index).search(size, q, 5)
    monkeypatch.setattr(fi.faiss, "get_num_gpus", lambda: 1, raising=False)
    monkeypatch.setattr(fi.faiss, "StandardGpuResources", object, raising=False)
    monkeypatch.setattr(fi.faiss, "index_cpu_to_gpu", lambda *a: (_ for _ in ()).throw(RuntimeError("x")), raising=False)
    monkeypatch.setattr(fi, "_GPU_RESOURCES", None)
    got = Index(built_index).search(size, q, 5)
    assert np.array_equal(got[1], expected[1]) and np.allclose(got[0], expected[0])


def test_gpu_faiss_replaces_the_cpu_build_rather_than_joining_it():
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    assert any(d.startswith("faiss-cpu") for d in project["dependencies"])
    for extra, deps in project["optional-dependencies"].items():
        assert not any(d.startswith("faiss-gpu") for d in deps), extra  # would install both builds


def test_exact_scans_go_to_the_gpu_copy_when_there_is_one(monkeypatch, built_index):
    cpu = Index(built_index)
    size = [s for s in cpu.sizes if s not in cpu.shortlist][-1]
    q = np.random.default_rng(2).standard_normal((2, size.dim)).astype(np.float32)
    used = []

    class FakeGpu:
        def __init__(self, index):
            self.index = index

        def search(self, queries, k):
            used.append(k)
            return self.index.search(queries, k)

    monkeypatch.setattr(fi.faiss, "get_num_gpus", lambda: 1, raising=False)
    monkeypatch.setattr(fi.faiss, "StandardGpuResources", object, raising=False)
    monkeypatch.setattr(fi.faiss, "index_cpu_to_gpu", lambda res, device, index: FakeGpu(index), raising=False)
    monkeypatch.setattr(fi, "_GPU_RESOURCES", None)
    gpu = Index(built_index)
    assert size in gpu.gpu_exact
    got, expected = gpu.search(size, q, 7), cpu.search(size, q, 7)
    assert used == [7] and np.array_equal(got[1], expected[1]) and np.allclose(got[0], expected[0], atol=1e-3)
    assert cpu.gpu_exact == {}  # the CPU build: scans stay on the CPU
