"""A ``Plan`` is the stages of a cascade: shortlist at one size, then rerank at larger ones.

Written ``6x32:1000,6x64:200,6x384:10``: search the 6x32 index for 1000 candidates,
rescore them at 6x64 and keep 200, rescore those at 6x384 and keep 10.
"""
from __future__ import annotations

from typing import NamedTuple

from starbucks.sizes import Size


class Stage(NamedTuple):
    size: Size
    keep: int

    def __str__(self) -> str:
        return f"{self.size}:{self.keep}"


class Plan(tuple):
    """An immutable sequence of stages; the first one shortlists, the rest rerank."""

    def __new__(cls, stages) -> "Plan":
        stages = tuple(s if isinstance(s, Stage) else Stage(Size.parse(s[0]), int(s[1])) for s in stages)
        if not stages:
            raise ValueError("a plan needs at least one stage")
        for stage in stages:
            if stage.keep < 1:
                raise ValueError(f"stage {stage}: keep must be at least 1")
        for prev, stage in zip(stages, stages[1:]):
            if stage.keep > prev.keep:
                raise ValueError(f"stage {stage} keeps more than the {prev.keep} candidates it receives")
        return super().__new__(cls, stages)

    @classmethod
    def parse(cls, text: str) -> "Plan":
        stages = []
        for part in text.split(","):
            size, sep, keep = part.strip().partition(":")
            if not sep or not keep.strip().isdigit():
                raise ValueError(f"bad plan stage {part!r}: expected LAYERxDIM:KEEP, e.g. 6x32:1000")
            stages.append(Stage(Size.parse(size), int(keep)))
        return cls(stages)

    @classmethod
    def exhaustive(cls, size: Size, depth: int) -> "Plan":
        return cls([Stage(Size.parse(size), depth)])

    def __str__(self) -> str:
        return ",".join(str(s) for s in self)

    def __repr__(self) -> str:
        return f"Plan({str(self)!r})"

    @property
    def sizes(self) -> list[Size]:
        return [s.size for s in self]

    @property
    def depth(self) -> int:
        """How many documents the plan ranks (its shortlist)."""
        return self[0].keep
