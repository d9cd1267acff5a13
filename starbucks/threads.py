"""Thread counts: one setting for torch, FAISS and ONNX Runtime, never more than the cores.

The libraries run one after another on a query's path (encode, then shortlist, then
rescore), so each may use every thread it is given without competing with the others;
what must not happen is each library defaulting to all cores *and* a caller running
several searches in parallel threads. ``threads=None`` takes the cores this process may
use; one thread is best for the latency of single queries, all cores for batches and
indexing.
"""
from __future__ import annotations

import os

from starbucks.errors import StarbucksError


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def resolve_threads(threads: int | None) -> int:
    """A valid thread count: ``None`` is every available core; anything else must be 1..cores."""
    cores = available_cores()
    if threads is None:
        return cores
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise StarbucksError(f"threads must be a positive integer, not {threads!r}")
    if threads > cores:
        raise StarbucksError(f"threads={threads} is more than the {cores} cores this process may use")
    return threads


def apply_threads(threads: int | None) -> int:
    """Set torch's and FAISS's thread pools (ONNX Runtime sessions take theirs when created)."""
    n = resolve_threads(threads)
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    try:
        import faiss

        faiss.omp_set_num_threads(n)
    except ImportError:  # pragma: no cover - faiss is a core dependency
        pass
    return n
