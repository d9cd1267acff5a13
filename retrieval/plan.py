"""A ``Plan`` is the stages of a cascade: shortlist at one size, then rerank at larger ones.

Written ``6x32:1000,6x64:200,6x384:10``: search the 6x32 index for 1000 candidates,
rescore them at 6x64 and keep 200, rescore those at 6x384 and keep 10.

A first stage can be sparse: ``bm25:1000,6x384:10`` shortlists with BM25 (an index built
with ``--bm25``) and reranks densely. A plan can also fuse the last stage's dense scores
with BM25's over the same candidates, as a last item ``fuse=rrf`` (reciprocal-rank fusion)
or ``fuse=linear:W`` (min-max normalised scores mixed W dense to 1-W BM25):
``bm25:1000,6x384:10,fuse=rrf``.

A first stage searched by an HNSW or IVF shortlist index can carry its search parameter after
``~``: ``6x64~ef=128:1000`` (HNSW efSearch) or ``6x64~nprobe=16:1000`` (IVF nprobe). Without
one, the value stored in the index applies. A ``b`` before the size, ``b6x384:2000``, shortlists
with the sign bits of that size by Hamming distance (an index built with ``binary=``); a binary HNSW
or IVF index (``binary_index=``) takes its parameter the same way: ``b6x384~ef=64:2000``,
``b6x384~nprobe=8:2000``.

A plan can name the encoder its query goes through, as a last item ``encoder=NAME``
(``onnx-int8``, ``onnx`` or ``torch``): ``bm25:100,6x384:10,encoder=onnx-int8`` encodes the
query with the int8 graphs whatever the searcher's own encoder is. Calibration measures such plans
beside the searcher's own, so a budget can buy a cheaper query encoding instead of a smaller size.
"""
from __future__ import annotations

from typing import NamedTuple

from starbucks.sizes import Size

BM25 = "bm25"
RRF_K = 60  # the usual reciprocal-rank-fusion constant
SEARCH_PARAMS = ("ef", "nprobe")  # HNSW efSearch, IVF nprobe
BINARY = "b"  # the prefix of a binary (sign-bit, Hamming) stage


class Stage(NamedTuple):
    size: Size | str  # a dense Size, or BM25 (first stage only)
    keep: int
    fuse: str | None = None  # on the last stage: "rrf" or "linear:W"
    param: tuple[str, int] | None = None  # on the first stage: ("ef", N) or ("nprobe", N)
    binary: bool = False  # on the first stage: search the size's sign bits by Hamming distance
    encoder: str | None = None  # on the last stage: the plan's query encoder (None: the searcher's)

    def __str__(self) -> str:
        return f"{self.source}:{self.keep}"

    @property
    def source(self) -> str:
        """What the stage searches, as written before ``:KEEP``: ``6x64``, ``6x64~ef=128``, ``b6x384``, ``bm25``."""
        param = f"~{self.param[0]}={self.param[1]}" if self.param else ""
        return f"{BINARY if self.binary else ''}{self.size}{param}"

    @property
    def sparse(self) -> bool:
        return self.size == BM25


def parse_fusion(text: str) -> str:
    """``rrf`` or ``linear:W`` with 0 <= W <= 1 (the dense score's weight), normalised."""
    if text == "rrf":
        return text
    kind, _, weight = text.partition(":")
    try:
        w = float(weight)
    except ValueError:
        w = -1.0
    if kind != "linear" or not 0 <= w <= 1:
        raise ValueError(f"bad fusion {text!r}: expected rrf or linear:W with W in [0, 1], e.g. linear:0.5")
    return f"linear:{w:g}"


class Plan(tuple):
    """An immutable sequence of stages; the first one shortlists, the rest rerank."""

    def __new__(cls, stages) -> "Plan":
        stages = tuple(s if isinstance(s, Stage) else Stage(_size(s[0]), int(s[1]), *s[2:]) for s in stages)
        if not stages:
            raise ValueError("a plan needs at least one stage")
        for i, stage in enumerate(stages):
            if stage.keep < 1:
                raise ValueError(f"stage {stage}: keep must be at least 1")
            if stage.sparse and i > 0:
                raise ValueError(f"stage {stage}: BM25 can only be the first stage")
            if stage.fuse is not None and (i != len(stages) - 1 or stage.sparse):
                raise ValueError("fusion applies to the last stage, and it must be dense")
            if (stage.param or stage.binary) and (i > 0 or stage.sparse):
                raise ValueError(f"stage {stage}: search parameters and binary apply to a dense first stage only")
            if stage.encoder is not None:
                _check_encoder(stage.encoder, i == len(stages) - 1, any(not s.sparse for s in stages))
        for prev, stage in zip(stages, stages[1:]):
            if stage.keep > prev.keep:
                raise ValueError(f"stage {stage} keeps more than the {prev.keep} candidates it receives")
        return super().__new__(cls, stages)

    @classmethod
    def parse(cls, text: str) -> "Plan":
        stages, options = [], {}
        for part in text.split(","):
            part = part.strip()
            name, eq, value = part.partition("=")
            if eq and name in OPTIONS:
                if name in options:
                    raise ValueError(f"bad plan {text!r}: more than one {name}=")
                options[name] = parse_fusion(value) if name == "fuse" else value.strip()
                continue
            if options:
                raise ValueError(f"bad plan {text!r}: {' and '.join(f'{o}=' for o in options)} "
                                 f"{'comes' if len(options) == 1 else 'come'} after the stages")
            source, sep, keep = part.partition(":")
            if not sep or not keep.strip().isdigit():
                raise ValueError(f"bad plan stage {part!r}: expected LAYERxDIM:KEEP or bm25:KEEP, e.g. 6x32:1000")
            stages.append(_stage(source.strip(), int(keep)))
        if options:
            if not stages:
                raise ValueError(f"bad plan {text!r}: no stages")
            stages[-1] = stages[-1]._replace(**options)
        return cls(stages)

    @classmethod
    def exhaustive(cls, size: Size, depth: int) -> "Plan":
        return cls([Stage(Size.parse(size), depth)])

    def __str__(self) -> str:
        last = self[-1]
        return (",".join(str(s) for s in self) + (f",fuse={last.fuse}" if last.fuse else "")
                + (f",encoder={last.encoder}" if last.encoder else ""))

    def __repr__(self) -> str:
        return f"Plan({str(self)!r})"

    @property
    def sizes(self) -> list[Size]:
        """The dense sizes the plan scores with (what the query is encoded at)."""
        return [s.size for s in self if not s.sparse]

    @property
    def layer(self) -> int:
        """The deepest layer the query is encoded to (0: the plan needs no encoding)."""
        return max((s.layer for s in self.sizes), default=0)

    @property
    def encoder(self) -> str | None:
        """The encoder the plan names for its query (``encoder=``), None for the searcher's own."""
        return self[-1].encoder

    def with_encoder(self, encoder: str | None) -> "Plan":
        """The same stages with the query through ``encoder`` (None: the searcher's own)."""
        return Plan([*self[:-1], self[-1]._replace(encoder=encoder)])

    @property
    def uses_bm25(self) -> bool:
        return self[0].sparse or self[-1].fuse is not None

    @property
    def reranks_its_shortlist(self) -> bool:
        """Whether the second stage rescores, at the same size, the dense (float) shortlist the first
        stage searched: where a residual rerank tier applies (``indexes.tiers``)."""
        first = self[0]
        return len(self) > 1 and not first.sparse and not first.binary and self[1].size == first.size

    @property
    def depth(self) -> int:
        """How many documents the plan ranks (its shortlist)."""
        return self[0].keep


OPTIONS = ("fuse", "encoder")  # the items after the stages, at most one of each


def _check_encoder(name: str, last: bool, dense: bool) -> None:
    from starbucks.encoder import ENCODERS

    if name not in ENCODERS or name == "auto":
        raise ValueError(f"unknown encoder {name!r} in a plan: choose one of "
                         f"{', '.join(e for e in ENCODERS if e != 'auto')}")
    if not last:
        raise ValueError("a plan's encoder= is given on its last stage")
    if not dense:
        raise ValueError("encoder= applies to a plan with a dense stage: this one encodes no query")


def _stage(source: str, keep: int) -> Stage:
    """A stage from ``[b]LxD[~NAME=VALUE]`` or ``bm25`` and its keep."""
    size, _, param = source.partition("~")
    binary = size.startswith(BINARY) and size.strip().lower() != BM25
    parsed = None
    if param:
        name, _, value = param.partition("=")
        if name not in SEARCH_PARAMS or not value.isdigit() or int(value) < 1:
            raise ValueError(f"bad search parameter {param!r} in {source!r}: expected ef=N (HNSW) or nprobe=N (IVF), "
                             f"N >= 1, e.g. 6x64~ef=128:1000")
        parsed = (name, int(value))
    return Stage(_size(size[len(BINARY):] if binary else size), keep, param=parsed, binary=binary)


def _size(text) -> Size | str:
    if isinstance(text, str) and text.strip().lower() == BM25:
        return BM25
    return Size.parse(text)
