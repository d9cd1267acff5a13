"""One policy for texts longer than the model reads: cut them, and say so.

Queries and passages alike are cut to the model's configured length (``query_max_length``,
``passage_max_length``, never more than its position embeddings), keeping the closing
special token. The first cut of each kind raises one :class:`TruncationWarning` with the
counts of that call; every cut is counted on the encoder (``encoder.truncated``), so an
index build can report the totals at its end.
"""
from __future__ import annotations

import warnings


class TruncationWarning(UserWarning):
    """Texts longer than the model's maximum length were cut."""


def note_truncation(encoder, kind: str, cut: int, total: int, limit: int) -> None:
    """Count ``cut`` of ``total`` texts of ``kind`` ("queries" or "passages") cut to ``limit`` tokens."""
    counts = encoder.__dict__.setdefault("truncated", {})
    seen = counts.setdefault(kind, {"cut": 0, "total": 0, "limit": limit})
    first = seen["cut"] == 0
    seen["cut"] += cut
    seen["total"] += total
    if cut and first and not getattr(encoder, "quiet_truncation", False):
        warnings.warn(f"{cut} of {total} {kind} were longer than {limit} tokens and were cut to {limit} "
                      f"(the model's {'query' if kind == 'queries' else 'passage'} length; "
                      f"further cuts are counted, not repeated)",
                      TruncationWarning, stacklevel=4)
