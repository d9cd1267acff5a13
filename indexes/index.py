"""Open a finished index: shortlist indexes in RAM, every size's vectors memory-mapped."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from indexes.docids import DocidTable
from indexes.faiss_index import BINARY_PREFIX, GPU_MAX_K, gpu_exact, search_parameters, sign_codes, to_gpu
from indexes.files import file_digest
from indexes.manifest import Manifest
from indexes.prefixes import PrefixMatrix, open_stored
from indexes.tiers import Quantized, Residual
from starbucks.errors import InputError, StarbucksError
from starbucks.sizes import Size

SCAN_BLOCK = 65536


class Index:
    """A read-only index folder. Thread-safe: every method only reads."""

    def __init__(self, path: str | Path, verify: bool = False):
        import faiss

        self.path = Path(path)
        self.manifest = Manifest.read(self.path)
        self._check_files(verify)
        self.docids = DocidTable(self.path)
        if len(self.docids) != self.manifest.num_docs:
            raise InputError(f"docid table has {len(self.docids)} entries, manifest says {self.manifest.num_docs}", self.path)
        # Each size's float16 vectors: its own memory-mapped file, or a prefix of its layer's widest.
        self.vectors: dict[Size, np.ndarray] = open_stored(
            self.path, self.manifest.num_docs, self.manifest.sizes, self.manifest.prefixes,
            self.manifest.normalized)
        self.shortlist: dict[Size, "faiss.Index"] = {}
        for s in self.manifest.shortlist:
            file = self.path / "shortlist" / f"{s}.faiss"
            try:
                index = faiss.read_index(str(file))
            except RuntimeError as e:
                raise InputError(f"corrupt FAISS index ({str(e).splitlines()[0]})", file) from None
            if index.ntotal != self.manifest.num_docs or index.d != s.dim:
                raise InputError(f"FAISS index holds {index.ntotal} x {index.d}, expected {self.manifest.num_docs} x {s.dim}", file)
            self.shortlist[s] = to_gpu(index)  # unchanged without a GPU build of FAISS
        self.binary = _load_binary(self.path, self.manifest)  # sign-bit (Hamming) indexes, built with binary=
        self.bm25 = _load_sparse(self.path, self.manifest)  # None unless built with bm25=True
        # Exact scans on the GPU (a flat copy of each other size) when GPU FAISS sees one; else none.
        self.gpu_exact = {s: g for s in self.manifest.sizes if s not in self.shortlist
                          and (g := gpu_exact(self.vectors[s])) is not None}

    def _check_files(self, verify: bool) -> None:
        """Sizes always (cheap, catches truncation); checksums when asked (reads everything)."""
        check_files(self.path, self.manifest, verify)

    def __len__(self) -> int:
        return self.manifest.num_docs

    @property
    def sizes(self) -> list[Size]:
        return self.manifest.sizes

    def require(self, size: Size) -> None:
        if size == "bm25":
            if self.bm25 is None:
                raise StarbucksError(f"{self.path} has no BM25 index: build it with starbucks index --bm25")
            return
        if size not in self.vectors:
            stored = ", ".join(str(s) for s in self.sizes)
            raise StarbucksError(f"size {size} is not stored in {self.path} (stored: {stored})")

    def require_binary(self, size: Size) -> None:
        if size not in self.binary:
            raise StarbucksError(f"{self.path} has no binary shortlist for {size}: build it with binary={size} "
                                 f"(starbucks index --binary {size})")

    def search(self, size: Size, queries: np.ndarray, k: int,
               param: tuple[str, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, rows) per query: the FAISS index if ``size`` has one, else an exact scan.

        ``param``: ``("ef", N)`` for an HNSW or ``("nprobe", N)`` for an IVF shortlist index, for this
        search only (a ValueError for any other index). FAISS pads rows with -1 when it finds fewer than k.
        """
        self.require(size)
        k = min(k, len(self))
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        params = self.search_parameters(size, param) if param else None
        if size in self.shortlist:
            index = self.shortlist[size]
            return index.search(queries, k, params=params) if params else index.search(queries, k)
        if size in self.gpu_exact and k <= GPU_MAX_K:
            return self.gpu_exact[size].search(queries, k)
        return self.scan(size, queries, k)

    def search_parameters(self, size: Size, param: tuple[str, int]):
        """FAISS search parameters for ``size``'s shortlist index; a ValueError when it has none or another type."""
        if size not in self.shortlist:
            raise ValueError(f"size {size} has no shortlist index in {self.path} (it is scanned exactly): "
                             f"{param[0]}= does not apply")
        return search_parameters(self.shortlist[size], param, f"size {size} in {self.path}")

    def search_binary(self, size: Size, queries: np.ndarray, k: int,
                      param: tuple[str, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, rows) per query by the Hamming distance of sign bits at ``size``.

        A score is ``dim - 2 * distance``: the inner product of the two vectors' signs (+1/-1), so higher
        is better. ``param``: ``("ef", N)`` for a binary HNSW or ``("nprobe", N)`` for a binary IVF index,
        for this search only. Rows -1 pad when the index finds fewer than k.
        """
        self.require_binary(size)
        k = min(k, len(self))
        codes = sign_codes(queries)
        if param:
            distances, rows = self.binary[size].search(codes, k, params=self.binary_search_parameters(size, param))
        else:
            distances, rows = self.binary[size].search(codes, k)
        return (size.dim - 2 * distances).astype(np.float32), rows

    def binary_search_parameters(self, size: Size, param: tuple[str, int]):
        """FAISS search parameters for ``size``'s binary index; a ValueError when its type takes another."""
        self.require_binary(size)
        return search_parameters(self.binary[size], param, f"binary size {size} in {self.path}")

    def scan(self, size: Size, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact inner-product top-k over the memory-mapped vectors, block by block."""
        matrix = self.vectors[size]
        best_s = np.full((len(queries), 0), -np.inf, dtype=np.float32)
        best_i = np.zeros((len(queries), 0), dtype=np.int64)
        for start in range(0, len(matrix), SCAN_BLOCK):
            scores = _dot(_float_rows(matrix, slice(start, start + SCAN_BLOCK)), queries)
            kk = min(k, scores.shape[1])
            top = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
            cand_s = np.concatenate([best_s, np.take_along_axis(scores, top, 1)], axis=1)
            cand_i = np.concatenate([best_i, top + start], axis=1)
            keep = np.argsort(-cand_s, axis=1, kind="stable")[:, :k]
            best_s, best_i = np.take_along_axis(cand_s, keep, 1), np.take_along_axis(cand_i, keep, 1)
        return best_s, best_i

    def rescore(self, size: Size, query: np.ndarray, rows: np.ndarray, tier=None) -> np.ndarray:
        """Scores of one query against the given rows at ``size`` (reads only those rows)."""
        return self.rescore_batch(size, np.asarray(query)[None], [rows], tier)[0]

    def rescore_batch(self, size: Size, queries: np.ndarray, rows, tier=None) -> list[np.ndarray]:
        """Scores of each query against its own rows at ``size``: ``rows[i]`` for ``queries[i]``.

        When the batch asks for at least as many rows as the index holds (small corpora: the queries'
        candidates overlap), every row any query needs is read once, in row order, and widened once, and
        each query's scores are one matrix-vector product over its rows. Otherwise (large corpora, where
        candidates rarely overlap and their union would be widened whole) each query's rows are read,
        widened and scored on their own, in row order. No Python work per candidate either way.
        ``tier``: a :class:`indexes.tiers.RerankTier` holding ``size`` in RAM (float16 rows, or 8-bit
        codes scored directly); without one, for a size it does not hold, or for residual codes (which
        only the searcher applies, right after their IVF-PQ shortlist), the memory-mapped rows.
        """
        self.require(size)
        if len(queries) != len(rows):
            raise ValueError(f"{len(queries)} queries but {len(rows)} lists of rows to rescore")
        lengths = [len(r) for r in rows]
        flat = np.concatenate([np.asarray(r, dtype=np.int64).reshape(-1) for r in rows]) if rows else np.zeros(0, np.int64)
        if flat.size and (flat.min() < 0 or flat.max() >= len(self)):
            raise ValueError(f"rows to rescore must lie in 0..{len(self) - 1}")
        if len(rows) > 1 and flat.size < UNION_ROWS * len(self):
            return [self.rescore_batch(size, queries[i : i + 1], [r], tier)[0] for i, r in enumerate(rows)]
        unique, inverse = np.unique(flat, return_inverse=True)
        wide = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32).reshape(len(rows), size.dim))
        held = tier.held.get(size) if tier is not None else None
        held = None if isinstance(held, Residual) else held  # residual codes rescore only after their shortlist
        bias = None
        if isinstance(held, Quantized):  # q . (low + code * step) = q . low + (q * step) . code
            block = torch.from_numpy(held.codes[unique]).float()
            bias = wide @ torch.from_numpy(held.low)
            wide = wide * torch.from_numpy(held.step)
        else:
            block = _float_rows(self.vectors[size] if held is None else held, unique)
        inverse = torch.from_numpy(inverse.reshape(-1))
        if len(rows) == 1:  # one query: a matrix-vector product over its rows, nothing copied per candidate
            scores = (block @ wide[0])[inverse]
            scores = scores if bias is None else scores + bias[0]
        else:  # per query, a matrix-vector product over its own rows: no (pairs x dim) temporaries
            ends = np.cumsum(lengths)
            scores = torch.cat([block.index_select(0, inverse[end - n:end]) @ wide[i]
                                for i, (n, end) in enumerate(zip(lengths, ends))]) if flat.size else torch.zeros(0)
            if bias is not None:
                scores = scores + bias[torch.from_numpy(np.repeat(np.arange(len(rows)), lengths))]
        return np.split(scores.numpy(), np.cumsum(lengths)[:-1]) if rows else []


UNION_ROWS = 1.0  # a batch rescores the union of its rows once when it asks for at least this many per document


def check_files(folder: Path, manifest: Manifest, verify: bool) -> tuple[int, int]:
    """Every file the manifest lists exists with its size; with ``verify`` also its SHA-256.

    Returns (files, bytes). A file changed in place without changing size passes the
    size check and is caught only by ``verify``.
    """
    total = 0
    for rel, meta in manifest.files.items():
        file = folder / rel
        if not file.is_file():
            raise InputError("missing index file", file)
        if file.stat().st_size != meta["bytes"]:
            raise InputError(f"index file is {file.stat().st_size} bytes, expected {meta['bytes']} (truncated?)", file)
        if verify and file_digest(file) != meta["sha256"]:
            raise InputError("index file is corrupt (checksum mismatch): rebuild the index or restore this file", file)
        total += meta["bytes"]
    return len(manifest.files), total


def verify_index(path: str | Path) -> tuple[int, int]:
    """``starbucks verify``: the manifest reads, and every file's size and checksum match it."""
    return check_files(Path(path), Manifest.read(Path(path)), verify=True)


def _load_binary(path: Path, manifest: Manifest) -> dict:
    """The binary shortlist indexes the manifest lists (``shortlist/bLxD.faiss``); none in older indexes."""
    import faiss

    found = {}
    for rel in manifest.files:
        folder, _, name = rel.partition("/")
        if folder != "shortlist" or not name.startswith(BINARY_PREFIX) or not name.endswith(".faiss"):
            continue
        file = path / rel
        try:
            size = Size.parse(name[len(BINARY_PREFIX) : -len(".faiss")])
            index = faiss.read_index_binary(str(file))
        except (RuntimeError, ValueError) as e:
            raise InputError(f"corrupt binary FAISS index ({str(e).splitlines()[0]})", file) from None
        if index.ntotal != manifest.num_docs or index.d != 8 * -(-size.dim // 8) or size not in manifest.sizes:
            raise InputError(f"binary FAISS index holds {index.ntotal} x {index.d} bits, expected "
                             f"{manifest.num_docs} x {8 * -(-size.dim // 8)} of a stored size", file)
        if isinstance(index, faiss.IndexBinaryFlat):
            index.use_heap = False  # counting by distance, not a heap of k: several times faster for deep shortlists
        found[size] = index
    return found


def _load_sparse(path: Path, manifest: Manifest):
    """The stored BM25 index, if the manifest lists one."""
    from indexes.sparse import FOLDER, SparseIndex

    if not any(rel.startswith(FOLDER + "/") for rel in manifest.files):
        return None
    try:
        return SparseIndex(path / FOLDER)
    except (OSError, ValueError, KeyError) as e:
        raise InputError(f"unreadable BM25 index ({e})", path / FOLDER) from None


def _float_rows(matrix, rows) -> torch.Tensor:
    """Rows of a stored (float16) matrix as float32: torch widens float16 several times faster than numpy;
    a prefix size's rows come rescaled, without a float16 round trip."""
    if isinstance(matrix, PrefixMatrix):
        return torch.from_numpy(matrix.rows32(rows))
    # One widening copy, straight from the map for a slice (read-only, so not shared with torch).
    return torch.tensor(np.asarray(matrix[rows]), dtype=torch.float32)


def _dot(wide: torch.Tensor, queries: np.ndarray) -> np.ndarray:
    """Queries (float32) against float32 rows."""
    return (torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32)) @ wide.T).numpy()
