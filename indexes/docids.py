"""String docids on disk: ``docids.txt`` (one per line) plus a memory-mapped offset table.

Lookups read only the lines asked for, so a 10M-document index keeps no docid list in RAM.
"""
from __future__ import annotations

import mmap
from pathlib import Path
from typing import Iterable

import numpy as np

from starbucks.errors import InputError

DOCIDS = "docids.txt"
OFFSETS = "docid_offsets.npy"


def write_docids(folder: Path, docids: Iterable[str]) -> int:
    """Write the docid file and its offsets; returns the count."""
    offsets = [0]
    with open(folder / DOCIDS, "wb") as f:
        for docid in docids:
            raw = docid.encode() + b"\n"
            f.write(raw)
            offsets.append(offsets[-1] + len(raw))
    np.save(folder / OFFSETS, np.asarray(offsets, dtype=np.int64))
    return len(offsets) - 1


class DocidTable:
    """Maps internal row numbers to string docids."""

    def __init__(self, folder: Path):
        self.path = folder / DOCIDS
        try:
            self._offsets = np.load(folder / OFFSETS, mmap_mode="r")
            with open(self.path, "rb") as f:
                self._data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if self.path.stat().st_size else b""
        except (OSError, ValueError) as e:
            raise InputError(f"unreadable docid table ({e})", folder) from None
        if len(self._offsets) == 0 or self._offsets[-1] != len(self._data):
            raise InputError("docid table is truncated or corrupt", self.path)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, row: int) -> str:
        return self.lookup([row])[0]

    def lookup(self, rows) -> list[str]:
        """Docids of many rows at once (slicing an mmap is a plain bytes copy)."""
        rows = np.asarray(rows, dtype=np.int64)
        starts = self._offsets[rows].tolist()
        ends = self._offsets[rows + 1].tolist()
        data = self._data
        return [data[s : e - 1].decode() for s, e in zip(starts, ends)]

    def __iter__(self):
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                yield line.rstrip("\n")
