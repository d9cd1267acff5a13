"""The synthetic vector generator: statistics like the real index's, prefix structure, a usable index."""
import numpy as np
import pytest

from experiments.synthetic import Generator, write_index
from indexes import Index
from retrieval import Searcher
from starbucks.sizes import Size


@pytest.fixture(scope="module")
def real(built_index):
    return Index(built_index)


def joint(index_or_blocks, layers):
    return np.concatenate([np.asarray(index_or_blocks[s], dtype=np.float32) for s in layers], axis=1)


def test_drawn_vectors_match_the_real_statistics(real):
    generator = Generator.fit(real, clusters=4)
    assert generator.layers == real.sizes  # one size per layer in this index
    drawn = {s: [] for s in real.sizes}
    for block in generator.draw(20_000, block=4096):
        for s, v in block.items():
            assert v.dtype == np.float16 and v.shape[1] == s.dim
            drawn[s].append(v)
    x = joint({s: np.concatenate(v) for s, v in drawn.items()}, generator.layers)
    y = joint(real.vectors, generator.layers)
    assert len(x) == 20_000
    scale = np.abs(y).mean()
    assert np.abs(x.mean(0) - y.mean(0)).max() < 0.1 * scale
    cx, cy = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    assert np.linalg.norm(cx - cy) < 0.15 * np.linalg.norm(cy)
    # Different seeds give different documents; the same seed the same ones.
    a, b, c = (next(generator.draw(5, seed=s))[real.sizes[0]] for s in (1, 1, 2))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_sizes_are_prefixes_of_their_layer_normalised_as_the_model_does():
    layer = Size(2, 8)
    rng = np.random.default_rng(0)
    noise = np.linalg.cholesky(np.cov(rng.standard_normal((100, 8)), rowvar=False))
    for normalized in (False, True):
        generator = Generator([Size(2, 4), layer], [layer], rng.standard_normal((3, 8)), np.full(3, 1 / 3), noise, normalized)
        block = next(generator.draw(50))
        small, big = (block[s].astype(np.float32) for s in (Size(2, 4), layer))
        if normalized:
            np.testing.assert_allclose(np.linalg.norm(small, axis=1), 1, atol=2e-3)
            np.testing.assert_allclose(np.linalg.norm(big, axis=1), 1, atol=2e-3)
            big = big[:, :4] / np.linalg.norm(big[:, :4], axis=1, keepdims=True)
            np.testing.assert_allclose(small, big, atol=3e-3)
        else:
            np.testing.assert_allclose(small, big[:, :4], atol=1e-6)


def test_a_synthetic_index_opens_and_searches(real, tiny_model, tmp_path):
    generator = Generator.fit(real, clusters=4)
    folder = write_index(generator, real, tmp_path / "synthetic", 700, [Size(1, 8)], progress=False)
    index = Index(folder, verify=True)
    assert len(index) == 700 and index.sizes == real.sizes and index.manifest.shortlist == [Size(1, 8)]
    assert index.docids.lookup(np.array([0, 699])) == ["s0", "s699"]
    result = Searcher(index, model=tiny_model).search("coffee", k=5, budget="1x8:50,4x48:5")
    assert len(result.docids) == 5 and all(d.startswith("s") for d in result.docids)
    with pytest.raises(FileExistsError):
        write_index(generator, real, folder, 10, [Size(1, 8)], progress=False)


def test_a_synthetic_index_stores_only_the_sizes_asked_for(real, tmp_path):
    generator = Generator.fit(real, clusters=4)
    full, short = real.sizes[-1], Size(1, 8)
    every = next(generator.draw(300, seed=3))
    some = next(generator.draw(300, seed=3, sizes=[full]))
    assert list(some) == [full]
    np.testing.assert_allclose(np.asarray(some[full], np.float32), np.asarray(every[full], np.float32), atol=2e-3)
    folder = write_index(generator, real, tmp_path / "some", 300, [short], progress=False, sizes=[full])
    index = Index(folder, verify=True)
    assert index.sizes == [short, full] and index.manifest.rerank == [full]
    assert sorted(p.name for p in (folder / "vectors").iterdir()) == [f"{short}.npy", f"{full}.npy"]
    with pytest.raises(ValueError, match="stores no 9x9"):
        write_index(generator, real, tmp_path / "bad", 10, [], progress=False, sizes=[Size(9, 9)])
