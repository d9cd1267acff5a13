"""String docids on disk: ``docids.txt`` (one per line) plus a memory-mapped offset table.

Lookups read only the lines asked for, so a 10M-document index keeps no docid list in RAM.
"""
from __future__ import annotations

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
        try:
            self._offsets = np.load(folder / OFFSETS, mmap_mode="r")
            self._data = np.memmap(folder / DOCIDS, dtype=np.uint8, mode="r")
        except (OSError, ValueError) as e:
            raise InputError(f"unreadable docid table ({e})", folder) from None
        if len(self._offsets) == 0 or self._offsets[-1] != len(self._data):
            raise InputError("docid table is truncated or corrupt", folder / DOCIDS)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, row: int) -> str:
        start, end = self._offsets[row], self._offsets[row + 1]
        return bytes(self._data[start : end - 1]).decode()

    def lookup(self, rows: Iterable[int]) -> list[str]:
        return [self[int(r)] for r in rows]

    def __iter__(self):
        with open(Path(self._data.filename), encoding="utf-8") as f:
            for line in f:
                yield line.rstrip("\n")
