"""The calibrated frontier: plans measured on real topics, kept when no other plan is both cheaper and better.

``starbucks calibrate`` writes it to ``calibration.json`` in the index folder, tied (like
``costs.json``) to this machine's settings and to the index. The planner then picks, for a
budget, the most effective measured plan whose measured latency fits.
"""
from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

from indexes.files import atomic_write_json
from retrieval.plan import Plan

CALIBRATION = "calibration.json"


@dataclasses.dataclass
class Point:
    """One measured plan: mean latency per query (encoding included, one query at a time) and effectiveness."""

    plan: Plan
    ms: float
    effectiveness: float
    margin: float | None = None  # early stopping: the decisiveness from which the shortlist is trusted (None: never)
    early: dict | None = None  # what early stopping measured: stopped fraction, ms, effectiveness
    # A search's latency grows with its query's tokens (the encoder's work): ms more per token than the
    # calibration topics' mean, ``tokens`` (None: not fitted; a plan that encodes nothing has no slope).
    per_token_ms: float = 0.0
    tokens: float | None = None
    # A plan that does not set the planner's pace (BM25 alone) is priced through the slowest spell its
    # calibration met; its mean over calibration's end-to-end timings, where the price is higher. A
    # profile of the price, never used to plan (None: priced at its mean).
    typical_ms: float | None = None

    def expected_ms(self, tokens: float | None = None) -> float:
        """The latency expected of a search whose query has ``tokens`` tokens (None: the mean, ``ms``), or
        the mean latency of queries of that mean length; never below a tenth of ``ms``, however short."""
        if tokens is None or self.tokens is None or not self.per_token_ms:
            return self.ms
        return max(self.ms + self.per_token_ms * (tokens - self.tokens), 0.1 * self.ms)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "plan": str(self.plan)}

    @classmethod
    def from_dict(cls, d: dict) -> "Point":
        return cls(**{**d, "plan": Plan.parse(d["plan"])})


def pareto(points: list[Point]) -> list[Point]:
    """The points no other point beats on both latency and effectiveness, cheapest first."""
    frontier, best = [], float("-inf")
    for p in sorted(points, key=lambda p: (p.ms, -p.effectiveness)):
        if p.effectiveness > best:
            frontier.append(p)
            best = p.effectiveness
    return frontier


def at_depth(plan: Plan, k: int) -> Plan | None:
    """The plan returning k: a cascade's last stage keeps k (its cost does not change);
    None when an earlier stage keeps fewer than k."""
    if len(plan) == 1:
        return Plan([plan[0]._replace(keep=max(plan[0].keep, k))])
    if any(s.keep < k for s in plan[:-1]):
        return None
    return Plan([*plan[:-1], plan[-1]._replace(keep=k)])


@dataclasses.dataclass
class Frontier:
    machine: str
    index: str
    measure: str
    k: int  # the depth the plans were measured at
    topics: str
    queries: int
    plans_measured: int
    points: list[Point]  # the Pareto frontier, cheapest first
    # Every plan calibration timed end to end (the grid's frontier): its plan, effectiveness, the grid's
    # estimate, each end-to-end latency measured (``calibrate.choose_frontier``), and whether it is on the
    # frontier. A profile of the choice, never used to plan: it tells a plan the machine's noise dropped.
    timed: list[dict] = dataclasses.field(default_factory=list)

    def choose(self, budget: float, k: int, pace: float = 1.0, tokens: float | None = None,
               floor: bool = False) -> Plan | None:
        """The most effective frontier plan measured within ``budget`` ms, returning k; None if none returns k.

        ``pace``: how much slower than calibrated the machine runs now (observed / measured latency);
        a plan fits when its measured latency times ``pace`` does, and when none does, the cheapest
        plan serves. ``tokens``: the mean token count of the queries being served, where it is not the
        calibration topics'; a plan's latency is then what it is expected to average at that length
        (``Point.expected_ms``). A budget below the cheapest plan's measured latency is an error at any
        pace and length, unless ``floor``: it then takes the cheapest plan (``blend``)."""
        chosen = self._choose(budget, k, pace, tokens, floor)
        return None if chosen is None else chosen[1]

    def _usable(self, k: int) -> list[tuple[Point, Plan]]:
        usable = [(p, at_depth(p.plan, k)) for p in self.points]
        return [(p, plan) for p, plan in usable if plan is not None]

    def _choose(self, budget: float, k: int, pace: float, tokens: float | None,
                floor: bool = False) -> tuple[Point, Plan] | None:
        usable = self._usable(k)
        if not usable:
            return None
        cheapest = min(usable, key=lambda x: x[0].ms)
        if cheapest[0].ms > budget and not floor:
            raise ValueError(f"budget {budget} ms is below the cheapest calibrated plan on this machine "
                             f"({cheapest[1]}: {cheapest[0].ms:.2f} ms measured)")
        fits = [(p, plan) for p, plan in usable if p.expected_ms(tokens) * pace <= budget] or [cheapest]
        return max(fits, key=lambda x: (x[0].effectiveness, -x[0].ms))

    def blend(self, budget: float, k: int, pace: float = 1.0, tokens: float | None = None,
              floor: bool = False) -> tuple[Plan, Plan | None, float] | None:
        """``choose``'s plan, and where the pace (above 1: the machine runs slow) moved the budget off the
        plan it takes at pace 1, the next more effective frontier plan with the share of searches it can
        take: the share at which their mean, at the pace, is the budget. (None, as ``choose``, when no
        plan returns k.)

        The pace moves a budget to a cheaper plan, and the next cheaper frontier plan may cost a
        fraction of the budget (on the DL19 pool, a 1 ms budget's plan's next cheaper one is BM25
        alone at 0.25 ms). Blending the two spends the budget the slow machine leaves, and keeps the
        plan that sets the pace in service, so the planner sees when the machine recovers. The plan
        blended in is never more effective than the budget's own plan at pace 1: a budget whose plan
        still fits at the pace runs it alone, as at a pace of 1. ``floor``: a budget below the cheapest plan
        takes it rather than being refused (a budget the planner cut to make up an overrun)."""
        chosen = self._choose(budget, k, pace, tokens, floor)
        if chosen is None:
            return None
        (low, plan) = chosen
        low_ms = low.expected_ms(tokens) * pace
        if pace <= 1.0 or low_ms >= budget:  # no pace, or even the cheapest plan runs over at it
            return plan, None, 0.0
        own = self._choose(budget, k, 1.0, tokens)[0]
        if own is low:
            return plan, None, 0.0
        # Up to its own plan; the next one up does not fit at the pace (else it would have been chosen),
        # so the share lies between 0 and 1.
        between = [(p, q) for p, q in self._usable(k) if low.effectiveness < p.effectiveness <= own.effectiveness]
        high, above = min(between, key=lambda x: (x[0].expected_ms(tokens), -x[0].effectiveness))
        return plan, above, (budget - low_ms) / (high.expected_ms(tokens) * pace - low_ms)

    def best(self, k: int) -> Plan | None:
        """The most effective frontier plan returning k (None if none does)."""
        usable = [(p, at_depth(p.plan, k)) for p in self.points]
        usable = [(p, plan) for p, plan in usable if plan is not None]
        return max(usable, key=lambda x: (x[0].effectiveness, -x[0].ms))[1] if usable else None

    def measured(self, plan: Plan) -> float | None:
        """The calibrated latency of ``plan`` (whatever its last stage keeps), None if not on the frontier."""
        point = self.point(plan)
        return None if point is None else point.ms

    def point(self, plan: Plan) -> Point | None:
        """The frontier point of ``plan`` (whatever its last stage keeps), None if not on the frontier."""
        for p in self.points:
            if len(p.plan) == len(plan) and at_depth(p.plan, plan[-1].keep) == plan:
                return p
        return None

    def margin(self, plan: Plan) -> float | None:
        """The early-stopping margin learnt for this plan (whatever its last stage keeps): infinite
        where calibration found stopping never pays; None for a plan it did not learn one for."""
        for p in self.points:
            if p.early is not None and len(p.plan) == len(plan) and p.plan[:-1] == plan[:-1] \
                    and p.plan[-1].size == plan[-1].size and p.plan.encoder == plan.encoder:
                return float("inf") if p.margin is None else p.margin
        return None

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "points": [p.to_dict() for p in self.points]}

    @classmethod
    def from_dict(cls, d: dict) -> "Frontier":
        return cls(**{**d, "points": [Point.from_dict(p) for p in d["points"]]})

    def save(self, folder: Path) -> Path:
        path = Path(folder) / CALIBRATION
        atomic_write_json(path, self.to_dict())
        return path

    @classmethod
    def load(cls, folder: Path, machine: str, index: str) -> "Frontier | None":
        """The index's calibration if it was measured here on this index; a warning says why one is ignored."""
        path = Path(folder) / CALIBRATION
        if not path.is_file():
            return None
        try:
            frontier = cls.from_dict(json.loads(path.read_text()))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            warnings.warn(f"{path} is unreadable ({e}); ignored: rerun starbucks calibrate", stacklevel=2)
            return None
        if frontier.machine != machine or frontier.index != index:
            warnings.warn(f"{path} was measured on another machine, thread setting or index; ignored: "
                          f"rerun starbucks calibrate here", stacklevel=2)
            return None
        return frontier


def format_frontier(frontier: Frontier) -> str:
    """A markdown table of the frontier, with what early stopping measured where it was learnt."""
    lines = [f"Calibrated frontier: {frontier.measure} over {frontier.queries} topics of {frontier.topics} "
             f"({frontier.plans_measured} plans measured, k={frontier.k})", "",
             f"| plan | ms/query | ms per token (mean tokens) | {frontier.measure} | early-stop margin | stopped | "
             f"ms/query early | {frontier.measure} early |",
             "|---|---|---|---|---|---|---|---|"]
    for p in frontier.points:
        e = p.early or {}
        slope = f"{p.per_token_ms:.3f} ({p.tokens:.1f})" if p.tokens is not None else ""
        cells = [str(p.plan), f"{p.ms:.2f}", slope, f"{p.effectiveness:.4f}",
                 "" if p.margin is None else f"{p.margin:.3f}",
                 f"{e['stopped']:.0%}" if e else "", f"{e['ms']:.2f}" if e else "",
                 f"{e['effectiveness']:.4f}" if e else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
