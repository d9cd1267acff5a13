"""Precomputed vectors as an index's input: ``DIR/docids.txt`` and one ``DIR/LxD.npy`` per size.

``docids.txt`` has one docid a line, in row order; ``LxD.npy`` is float16 or float32 ``[n, D]``, as
``Encoder.encode_passages`` returns it. Every file is checked before anything is written, and the
matrices are read memory-mapped, one chunk at a time, so memory stays bounded at any size.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterator

import numpy as np

from indexes.unique import DocidSet
from starbucks.errors import InputError

DOCIDS = "docids.txt"
DTYPES = (np.float16, np.float32)
CHECK_BATCH = 1 << 16  # docids hashed and checked at a time


def open_vectors(folder: Path, sizes) -> tuple[int, dict]:
    """Check ``folder`` holds docids and a matrix for every size; (row count, size -> memory map)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("no such vectors folder", folder)
    count = check_docids(folder / DOCIDS)
    matrices = {}
    for s in sizes:
        path = folder / f"{s}.npy"
        if not path.is_file():
            raise InputError(f"no {s}.npy: the vectors of size {s}, which the index stores, are missing", folder)
        try:
            m = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise InputError(f"not a NumPy .npy file ({e})", path) from None
        if m.dtype not in DTYPES:
            raise InputError(f"vectors are {m.dtype}; expected float16 or float32", path)
        if m.ndim != 2 or m.shape[1] != s.dim:
            raise InputError(f"shape {m.shape}; size {s} needs [{count}, {s.dim}]", path)
        if m.shape[0] != count:
            raise InputError(f"{m.shape[0]} rows, but {folder / DOCIDS} has {count} docids", path)
        matrices[s] = m
    return count, matrices


def iter_docids(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, docid) of each line; an empty, blank or undecodable line is an error."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise InputError("no docids file (one docid a line, in row order)", path) from None
    with f:
        for n, raw in enumerate(f, 1):
            try:
                docid = raw.rstrip(b"\r\n").decode("utf-8")
            except UnicodeDecodeError:
                raise InputError("docid is not valid UTF-8", path, n) from None
            if not docid.strip():
                raise InputError("empty docid", path, n)
            yield n, docid


def check_docids(path: Path) -> int:
    """The number of docids in ``path``, after checking none is empty or repeated."""
    seen = DocidSet()
    batch: list[str] = []
    first_line = 1

    def check() -> None:
        nonlocal first_line
        at = seen.add(batch)
        if at is not None:
            raise InputError(f"duplicate document id {batch[at]!r}", path, first_line + at)
        first_line += len(batch)
        batch.clear()

    for _, docid in iter_docids(path):
        batch.append(docid)
        if len(batch) == CHECK_BATCH:
            check()
    check()
    if seen.count == 0:
        raise InputError("no docids: the vectors folder is empty", path)
    return seen.count


def vector_chunks(folder: Path, sizes, chunk_size: int) -> Iterator[tuple[list[str], dict, str]]:
    """(docids, size -> float16 rows, hash of both) per chunk of ``chunk_size`` rows, in row order.

    A row with a NaN or an infinity is an error naming its file, row and docid.
    """
    folder = Path(folder)
    count, matrices = open_vectors(folder, sizes)
    docids = (d for _, d in iter_docids(folder / DOCIDS))
    for start in range(0, count, chunk_size):
        ids = [next(docids) for _ in range(min(chunk_size, count - start))]
        h = hashlib.sha256()
        for d in ids:
            h.update(d.encode() + b"\n")
        arrays = {}
        for s in sizes:
            rows = np.asarray(matrices[s][start : start + len(ids)])
            bad = ~np.isfinite(rows).all(axis=1)
            if bad.any():
                row = int(np.argmax(bad))
                raise InputError(f"row {start + row + 1} (docid {ids[row]!r}) is not finite (NaN or infinity)",
                                 folder / f"{s}.npy")
            arrays[s] = rows.astype(np.float16)
            h.update(str(s).encode() + arrays[s].tobytes())
        yield ids, arrays, h.hexdigest()

