"""A layer's narrower sizes, stored once: as prefixes of the layer's widest stored vector.

The model cuts size (n, d) from layer n's pooled (and adapted) vector, so each stored size of a layer
is the first d coordinates of the widest stored size of that layer, rescaled to unit length when the
model normalises. An index built with prefixes (the default) keeps one float16 file per layer,
``vectors/LxD.npy`` for its widest size D, and for each narrower size d of the layer
``vectors/Lxd.scale.npy`` when the model normalises: one float32 per document, the factor that brings
the prefix back to unit length. The manifest's ``prefixes`` maps each such size to its layer's widest.

Read through :class:`PrefixMatrix`, a prefix size looks like its own float16 matrix. A rescoring reads
the same pages either way (a document's prefix lies inside its wider row); a scan of a prefix size
reads the wide rows. ``experiments/prefix_storage.py`` measures both against separate files.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from starbucks.errors import InputError
from starbucks.sizes import Size

SCALE = ".scale.npy"


def prefix_sources(sizes) -> dict[Size, Size]:
    """``{size: the widest of the given sizes in its layer}`` for each size narrower than that one."""
    widest: dict[int, Size] = {}
    for s in sizes:
        if s.layer not in widest or s.dim > widest[s.layer].dim:
            widest[s.layer] = s
    return {s: widest[s.layer] for s in sorted(set(sizes)) if s != widest[s.layer]}


def unit_scale(wide: np.ndarray, dim: int) -> np.ndarray:
    """Per row, the factor that brings ``wide[:, :dim]`` (as stored, float16) to unit length (1 for a zero prefix)."""
    norms = np.linalg.norm(np.asarray(wide[:, :dim], dtype=np.float32), axis=1)
    return np.where(norms > 0, 1 / np.maximum(norms, 1e-30), 1).astype(np.float32)


class PrefixMatrix:
    """The float16 vectors of a prefix size, read from the first ``dim`` columns of its layer's widest
    memory-mapped matrix and rescaled row by row (``scale``; None when the model does not normalise).
    Indexing returns float16 arrays, as a stored matrix would."""

    def __init__(self, wide: np.ndarray, dim: int, scale: np.ndarray | None):
        self.wide, self.dim, self.scale = wide, dim, scale
        self.shape = (wide.shape[0], dim)
        self.dtype = np.dtype(np.float16)
        self.filename = getattr(wide, "filename", None)  # the file a cache drop applies to
        self._mmap = getattr(wide, "_mmap", None)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        """Bytes this size adds on disk: its scale factors (the vectors are the wide file's)."""
        return 0 if self.scale is None else int(self.scale.nbytes)

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
        if self.scale is not None:
            wide *= torch.from_numpy(np.array(self.scale[rows], dtype=np.float32, copy=True)).unsqueeze(-1)
        return wide.numpy()

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)


def open_stored(folder: Path, num_docs: int, sizes, prefixes: dict[Size, Size],
                 scaled: bool) -> dict[Size, np.ndarray]:
    """Each stored size's vectors in an index folder: its own memory-mapped ``LxD.npy``, or for a size in
    ``prefixes`` a :class:`PrefixMatrix` over its source (``scaled``: with its ``.scale.npy`` factors).
    A missing, unreadable or misshapen file is a one-line error naming it."""
    out: dict[Size, np.ndarray] = {}
    for s in sorted(sizes, key=lambda s: s in prefixes):  # the wide files first
        if s in prefixes:
            wide = out.get(prefixes[s])
            if wide is None or prefixes[s].layer != s.layer or prefixes[s].dim < s.dim:
                raise InputError(f"{s} is stored as a prefix of {prefixes[s]}, which this index does not store "
                                 f"as a wider size of layer {s.layer}", folder / "manifest.json")
            scale = _load(folder / "vectors" / f"{s}{SCALE}", (num_docs,), np.float32) if scaled else None
            out[s] = PrefixMatrix(wide, s.dim, scale)
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
