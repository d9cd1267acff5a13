"""Synthetic document vectors with a real index's statistics, for corpora too large to encode here.

The generator: take each stored layer's widest vectors from a real index and join them into one
vector per document; fit a Gaussian mixture to those: k-means centroids (topics) with their
frequencies plus one shared full-covariance Gaussian residual. A synthetic document is a centroid
drawn by frequency plus correlated noise; each size is then the prefix of its layer's block,
L2-normalised when the model normalises, exactly as the model derives sizes from hidden states.
So the correlation between a prefix and the rest of its vector (what decides shortlist recall)
is kept, along with the topical clustering. The number of components sets how much of the real
neighbourhood structure is kept: few give a smooth cloud (pessimistic for shortlists), many
(down to ``MIN_PER_CLUSTER`` real documents each) follow the real documents closely;
``experiments.scale`` picks it by comparing cascade recall on the real corpus.

A synthetic index is an ordinary index folder (manifest, docids ``s0..``, float16 vectors,
FAISS shortlists) that opens with ``Index`` and searches with ``Searcher`` and the real model.

    python -m experiments.synthetic FIT_INDEX --docs 100000 --out /tmp/synthetic-100k
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import time
from pathlib import Path
from typing import Iterator

import numpy as np
from numpy.lib.format import open_memmap
from tqdm.auto import tqdm

from experiments import runtime
from indexes import Index
from indexes.docids import write_docids
from indexes.faiss_index import fill_index, new_index
from indexes.files import atomic_write_json, file_digest
from indexes.manifest import MANIFEST, Manifest
from starbucks.sizes import Size, parse_sizes

BLOCK = 65536
MIN_PER_CLUSTER = 4  # real documents per mixture component at least: a finer mixture would copy them


@dataclasses.dataclass
class Generator:
    sizes: list[Size]
    layers: list[Size]  # each layer's widest stored size: the blocks of the joint vector, in order
    centroids: np.ndarray  # [clusters, joint dim]
    weights: np.ndarray  # [clusters], sums to 1
    noise: np.ndarray  # [joint dim, joint dim] Cholesky factor of the residual covariance
    normalized: bool

    @classmethod
    def fit(cls, index: Index, clusters: int = 64, sample: int = 50_000, seed: int = 0) -> "Generator":
        import faiss

        sizes = index.sizes
        layers = [max(s for s in sizes if s.layer == layer) for layer in sorted({s.layer for s in sizes})]
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(len(index), size=min(sample, len(index)), replace=False))
        x = np.concatenate([np.asarray(index.vectors[s][rows], dtype=np.float32) for s in layers], axis=1)
        clusters = max(1, min(clusters, len(x) // MIN_PER_CLUSTER))
        kmeans = faiss.Kmeans(x.shape[1], clusters, niter=20, seed=seed, min_points_per_centroid=1)
        kmeans.train(x)
        _, assign = kmeans.index.search(x, 1)
        assign = assign[:, 0]
        residual = x - kmeans.centroids[assign]
        cov = np.cov(residual, rowvar=False) + 1e-6 * np.eye(x.shape[1])
        weights = np.bincount(assign, minlength=clusters) / len(x)
        normalized = bool(index.manifest.model_config.get("normalize") or
                          index.manifest.model_config.get("similarity") == "cosine")
        return cls(sizes, layers, kmeans.centroids.copy(), weights, np.linalg.cholesky(cov), normalized)

    def draw(self, n: int, seed: int = 1, block: int = BLOCK,
             sizes: list[Size] | None = None) -> Iterator[dict[Size, np.ndarray]]:
        """``n`` documents in blocks: one float16 matrix per size (``sizes``: only those; the values are
        the same, up to float rounding, as when every size is drawn; only their layers' blocks are computed)."""
        rng = np.random.default_rng(seed)
        sizes = self.sizes if sizes is None else sizes
        starts = np.cumsum([0] + [s.dim for s in self.layers])
        needed = sorted({s.layer for s in sizes})
        cols = np.concatenate([np.arange(starts[i], starts[i] + s.dim) for i, s in enumerate(self.layers)
                               if s.layer in needed])
        offset, at = {}, 0  # where each needed layer's block starts among the computed columns
        for s in self.layers:
            if s.layer in needed:
                offset[s.layer], at = at, at + s.dim
        centroids, noise = self.centroids[:, cols], np.ascontiguousarray(self.noise[cols].T)
        for start in range(0, n, block):
            m = min(block, n - start)
            which = rng.choice(len(self.weights), size=m, p=self.weights)
            x = centroids[which] + rng.standard_normal((m, self.noise.shape[0]), dtype=np.float32) @ noise
            out = {}
            for s in sizes:
                v = x[:, offset[s.layer] : offset[s.layer] + s.dim]
                if self.normalized:
                    v = v / np.linalg.norm(v, axis=1, keepdims=True)
                out[s] = v.astype(np.float16)
            yield out

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for a in (self.centroids, self.weights, self.noise):
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()[:16]


def write_index(generator: Generator, like: Index, out: Path, n: int, shortlist: list[Size],
                seed: int = 1, index_type: str = "flat", progress: bool = True, sizes: list[Size] | None = None,
                timings: dict | None = None) -> Path:
    """A synthetic index folder of ``n`` documents, with the model and settings of ``like``; it stores
    ``sizes`` and the ``shortlist`` sizes (default: every size of ``like``). ``timings``, if given, gets
    the seconds the shortlist indexes took to build (``shortlist_s``)."""
    import faiss

    out = Path(out)
    stored = sorted(set(generator.sizes if sizes is None else [*sizes, *shortlist]))
    missing = [str(s) for s in stored if s not in generator.sizes]
    if missing:
        raise ValueError(f"{like.path} stores no {', '.join(missing)}: a synthetic index can only hold its sizes")
    (out / "vectors").mkdir(parents=True)
    matrices = {s: open_memmap(out / "vectors" / f"{s}.npy", mode="w+", dtype=np.float16, shape=(n, s.dim))
                for s in stored}
    row = 0
    for block in tqdm(generator.draw(n, seed, sizes=stored), total=-(-n // BLOCK), desc="drawing", unit="block", disable=not progress):
        m = len(next(iter(block.values())))
        for s, v in block.items():
            matrices[s][row : row + m] = v
        row += m
    for m in matrices.values():
        m.flush()
    write_docids(out, (f"s{i}" for i in range(n)))
    (out / "shortlist").mkdir()
    t = time.perf_counter()
    for s in shortlist:
        index = new_index(index_type, s.dim, n)
        fill_index(index, matrices[s])
        faiss.write_index(index, str(out / "shortlist" / f"{s}.faiss"))
    if timings is not None:
        timings["shortlist_s"] = time.perf_counter() - t
    files = {str(p.relative_to(out)): {"bytes": p.stat().st_size, "sha256": file_digest(p)}
             for p in sorted(out.rglob("*")) if p.is_file()}
    m = like.manifest
    manifest = Manifest(
        model_name=m.model_name, model_fingerprint=m.model_fingerprint, model_config=m.model_config,
        shortlist=shortlist, rerank=[s for s in stored if s not in shortlist], index_type=index_type,
        num_docs=n, corpus=f"synthetic: fitted to {like.path} ({m.num_docs} docs), seed {seed}",
        corpus_fingerprint=f"{generator.fingerprint()}:{n}:{seed}", files=files,
    )
    atomic_write_json(out / MANIFEST, manifest.to_dict())
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=runtime.description(__doc__))
    p.add_argument("fit_index", type=Path, help="a real index whose vectors the generator is fitted to")
    p.add_argument("--docs", type=int, required=True, help="synthetic documents to draw")
    p.add_argument("--out", type=Path, required=True, help="the synthetic index folder to create")
    p.add_argument("--shortlist", help="sizes with a FAISS index (default: the real index's)")
    p.add_argument("--clusters", type=int, default=64, help="mixture components (default: %(default)s)")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    real = Index(args.fit_index)
    shortlist = parse_sizes(args.shortlist) if args.shortlist else real.manifest.shortlist
    generator = Generator.fit(real, clusters=args.clusters)
    print(f"index written to {write_index(generator, real, args.out, args.docs, shortlist, args.seed)}")


if __name__ == "__main__":
    main()
