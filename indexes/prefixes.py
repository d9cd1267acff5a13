"""A layer's narrower sizes, stored once: as prefixes of the layer's widest stored vector.

The model cuts size (n, d) from layer n's pooled (and adapted) vector, so each stored size of a layer
is the first d coordinates of the widest stored size of that layer, rescaled to unit length when the
model normalises. An index built with prefixes (``--prefixes``; not the default) keeps one float16
file per layer, ``vectors/LxD.npy`` for its widest size D; the manifest's ``prefixes`` maps each
narrower size to it.

Read through :class:`PrefixMatrix`, a prefix size looks like its own float16 matrix: its rows are the
first d coordinates of the wide rows, divided by their own length when the model normalises (computed
as they are read, so no factor is stored). A prefix row lies inside its wider row, so reads spread over
the wide file; ``experiments/prefix_storage.py`` measures that against separate files, which are faster
(hence not the default).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from starbucks.errors import InputError
from starbucks.sizes import Size


def prefix_sources(sizes) -> dict[Size, Size]:
    """``{size: the widest of the given sizes in its layer}`` for each size narrower than that one."""
    widest: dict[int, Size] = {}
    for s in sizes:
        if s.layer not in widest or s.dim > widest[s.layer].dim:
            widest[s.layer] = s
    return {s: widest[s.layer] for s in sorted(set(sizes)) if s != widest[s.layer]}


class PrefixMatrix:
    """The float16 vectors of a prefix size, read from the first ``dim`` columns of its layer's widest
    memory-mapped matrix, each row brought to unit length when ``normalize``. Indexing returns float16
    arrays, as a stored matrix would."""

    def __init__(self, wide: np.ndarray, dim: int, normalize: bool):
        self.wide, self.dim, self.normalize = wide, dim, normalize
        self.shape = (wide.shape[0], dim)
        self.dtype = np.dtype(np.float16)
        self.filename = getattr(wide, "filename", None)  # the file a cache drop applies to
        self._mmap = getattr(wide, "_mmap", None)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows) -> np.ndarray:
        return self.rows32(rows).astype(np.float16)

    def rows32(self, rows) -> np.ndarray:
        """The rows (an index array or a slice), rescaled, as float32: what a scoring needs, without a
        float16 round trip."""
        import torch

        if isinstance(rows, tuple):
            raise TypeError("a PrefixMatrix is indexed by rows only")
        part = np.array(self.wide[rows, : self.dim], copy=True)  # only the prefix's bytes, contiguous
        wide = torch.from_numpy(part).float()  # torch widens float16 several times faster than NumPy
        if self.normalize:
            norms = torch.linalg.vector_norm(wide, dim=-1, keepdim=True)
            wide /= torch.where(norms > 0, norms, torch.ones_like(norms))  # a zero prefix stays zero
        return wide.numpy()

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)


def open_stored(folder: Path, num_docs: int, sizes, prefixes: dict[Size, Size],
                normalized: bool) -> dict[Size, np.ndarray]:
    """Each stored size's vectors in an index folder: its own memory-mapped ``LxD.npy``, or for a size in
    ``prefixes`` a :class:`PrefixMatrix` over its source (brought to unit length when ``normalized``).
    A missing, unreadable or misshapen file is a one-line error naming it."""
    out: dict[Size, np.ndarray] = {}
    for s in sorted(sizes, key=lambda s: s in prefixes):  # the wide files first
        if s in prefixes:
            wide = out.get(prefixes[s])
            if wide is None or prefixes[s].layer != s.layer or prefixes[s].dim < s.dim:
                raise InputError(f"{s} is stored as a prefix of {prefixes[s]}, which this index does not store "
                                 f"as a wider size of layer {s.layer}", folder / "manifest.json")
            out[s] = PrefixMatrix(wide, s.dim, normalized)
        else:
            out[s] = _load(folder / "vectors" / f"{s}.npy", (num_docs, s.dim), np.float16)
    return out


def _load(file: Path, shape: tuple, dtype) -> np.ndarray:
    try:
        m = np.load(file, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise InputError(f"unreadable vectors ({e})", file) from None
    if m.shape != shape or m.dtype != dtype:
        raise InputError(f"vectors have shape {m.shape} {m.dtype}, expected {shape} {np.dtype(dtype).name}", file)
    return m
