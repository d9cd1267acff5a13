"""Retrieval: cascaded shortlist-then-rerank search under a budget, and its evaluation."""
from retrieval.plan import Plan, Stage
from retrieval.searcher import Result, Searcher

__all__ = ["Plan", "Stage", "Result", "Searcher"]
