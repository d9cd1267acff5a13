"""Keeping the cycle collector's full passes out of searches.

CPython's cycle collector now and then runs a full pass over every tracked object, inside
whichever allocation trips it: with torch, transformers and ONNX Runtime imported that is some
400,000 objects and about 160 ms here (``python -m experiments.cold_paths``), paid by one unlucky
search. A budget of a quarter of a millisecond cannot absorb that. ``settle()`` collects what is
garbage now and then freezes every object still alive (``gc.freeze``): later passes skip them and
scan only what was made after. A frozen object is still freed the moment its last reference goes;
only a reference cycle among frozen objects is never collected, so the objects made to last
(modules, a loaded searcher) are what should be alive when it runs.
"""
from __future__ import annotations

import gc


def settle() -> int:
    """Collect the garbage there is, then freeze what is left out of later passes; the number frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
