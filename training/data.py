"""Training data: Tevatron-style query groups and the deterministic batches drawn from them.

Every batch is a pure function of (seed, batch index), so a run resumed from a
checkpoint sees exactly the batches an uninterrupted run would have seen.
"""
from __future__ import annotations

import dataclasses
import functools
import random
from pathlib import Path
from typing import Iterable, Sequence

import torch

from starbucks.corpus import iter_json_objects
from starbucks.errors import InputError

HF_PREFIX = "hf:"


@dataclasses.dataclass
class QueryGroup:
    """One training query with its judged positives and (mined) negatives."""

    query: str
    positives: list[str]
    negatives: list[str]
    query_id: str = ""
    line: int | None = None  # where it came from, for error messages


def passage_text(p: dict) -> str:
    """Title and text joined as the corpus readers join them, so training sees what search sees."""
    return f"{p.get('title') or ''} {p.get('text') or ''}".strip()


def parse_group(obj: object, path: object, line: int | None) -> QueryGroup:
    """Validate one Tevatron record (``query``, ``positive_passages``, ``negative_passages``)."""
    if not isinstance(obj, dict):
        raise InputError("expected a JSON object", path, line)
    query = obj.get("query")
    if not isinstance(query, str) or not query.strip():
        raise InputError("record has no 'query' text", path, line)
    lists = {}
    for key in ("positive_passages", "negative_passages"):
        items = obj.get(key, [])
        if not isinstance(items, list):
            raise InputError(f"'{key}' must be a list", path, line)
        texts = []
        for item in items:
            if not isinstance(item, dict):
                raise InputError(f"'{key}' entries must be objects with 'text'", path, line)
            text = passage_text(item)
            if not text:
                raise InputError(f"empty passage in '{key}'", path, line)
            texts.append(text)
        lists[key] = texts
    if not lists["positive_passages"]:
        raise InputError("record has no positive_passages", path, line)
    return QueryGroup(query.strip(), lists["positive_passages"], lists["negative_passages"],
                      str(obj.get("query_id", "")), line)


def read_groups(path: str | Path) -> list[QueryGroup]:
    """Read a Tevatron JSONL file (optionally gzipped), naming the line of any bad record."""
    path = Path(path)
    groups = [parse_group(obj, path, n) for n, obj in iter_json_objects(path)]
    if not groups:
        raise InputError("no training records", path)
    return groups


def load_hf_groups(spec: str) -> list[QueryGroup]:
    """``hf:NAME[:SPLIT]``, e.g. ``hf:Tevatron/msmarco-passage``: needs the ``datasets`` package and a network."""
    name, _, split = spec[len(HF_PREFIX):].partition(":")
    try:
        import datasets
    except ImportError:
        raise InputError("reading Hugging Face datasets needs 'pip install datasets'", spec) from None
    rows = datasets.load_dataset(name, split=split or "train")
    return [parse_group(row, spec, i) for i, row in enumerate(rows, 1)]


def load_groups(specs: Iterable[str], group_size: int) -> list[QueryGroup]:
    """All query groups of the given files, checked against the group size."""
    groups: list[QueryGroup] = []
    for spec in specs:
        part = load_hf_groups(spec) if str(spec).startswith(HF_PREFIX) else read_groups(spec)
        if group_size > 1:
            for g in part:
                if not g.negatives:
                    raise InputError(
                        f"record has no negative_passages but train_group_size is {group_size}"
                        " (mine some with 'starbucks build-train-data')", spec, g.line,
                    )
        groups.extend(part)
    return groups


def read_texts(path: str | Path) -> list[str]:
    """The texts of a JSONL file of objects with ``text`` (and optional ``title``), as BEIR corpora and queries are."""
    path = Path(path)
    texts = []
    for n, obj in iter_json_objects(path):
        text = obj.get("text")
        if not isinstance(text, str) or not text.strip():
            raise InputError("record has no 'text'", path, n)
        texts.append(passage_text(obj))
    if not texts:
        raise InputError("no texts", path)
    return texts


@functools.lru_cache(maxsize=4)
def epoch_order(n: int, seed: int, epoch: int) -> tuple[int, ...]:
    """The shuffled item order of one epoch, fixed by the seed (kept for the few epochs in use)."""
    order = list(range(n))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return tuple(order)


def batch_items(n: int, batch_size: int, seed: int, index: int) -> list[int]:
    """Item indices of batch ``index``; epochs run on without dropping a tail.

    Each epoch is shuffled once (a batch spans at most two epochs), not once per item.
    """
    items = []
    pos, end = index * batch_size, (index + 1) * batch_size
    while pos < end:
        epoch, within = divmod(pos, n)
        take = min(end - pos, n - within)
        items.extend(epoch_order(n, seed, epoch)[within : within + take])
        pos += take
    return items


def batch_rng(seed: int, index: int) -> random.Random:
    """A generator for the random choices inside batch ``index`` (negatives, masks)."""
    return random.Random(seed * 7_919 + index * 104_729 + 1)


def tokenize(tokenizer, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


@dataclasses.dataclass
class RetrievalBatch:
    queries: dict[str, torch.Tensor]
    passages: dict[str, torch.Tensor]  # query i's group is rows i*G .. i*G+G-1, positive first
    group_size: int
    anchor_texts: dict[str, torch.Tensor] | None = None  # extra texts the anchor covers

    def to(self, device) -> "RetrievalBatch":
        move = lambda d: None if d is None else {k: v.to(device) for k, v in d.items()}  # noqa: E731
        return RetrievalBatch(move(self.queries), move(self.passages), self.group_size, move(self.anchor_texts))


class RetrievalBatches:
    """Draws batch ``index``: B queries, each with one positive and G-1 negatives."""

    def __init__(self, groups: list[QueryGroup], tokenizer, batch_size: int, group_size: int,
                 query_max_length: int, passage_max_length: int, seed: int,
                 query_prefix: str = "", passage_prefix: str = "",
                 anchor_texts: Sequence[str] = (), anchor_batch_size: int = 16):
        if not groups:
            raise InputError("no training records")
        self.anchor_texts = list(anchor_texts)
        self.anchor_batch_size = anchor_batch_size
        self.groups = groups
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.group_size = group_size
        self.query_max_length = query_max_length
        self.passage_max_length = passage_max_length
        self.seed = seed
        self.query_prefix = query_prefix
        self.passage_prefix = passage_prefix

    def __len__(self) -> int:
        """Batches per epoch."""
        return max(1, len(self.groups) // self.batch_size)

    def texts(self, index: int) -> tuple[list[str], list[str]]:
        rng = batch_rng(self.seed, index)
        queries, passages = [], []
        for i in batch_items(len(self.groups), self.batch_size, self.seed, index):
            g = self.groups[i]
            queries.append(self.query_prefix + g.query)
            passages.append(self.passage_prefix + rng.choice(g.positives))
            k = self.group_size - 1
            if k:
                negs = rng.sample(g.negatives, k) if len(g.negatives) >= k else rng.choices(g.negatives, k=k)
                passages.extend(self.passage_prefix + n for n in negs)
        return queries, passages

    def __call__(self, index: int) -> RetrievalBatch:
        queries, passages = self.texts(index)
        anchor = None
        if self.anchor_texts:
            items = batch_items(len(self.anchor_texts), self.anchor_batch_size, self.seed, index)
            anchor = tokenize(self.tokenizer, [self.passage_prefix + self.anchor_texts[i] for i in items],
                              self.passage_max_length)
        return RetrievalBatch(
            tokenize(self.tokenizer, queries, self.query_max_length),
            tokenize(self.tokenizer, passages, self.passage_max_length),
            self.group_size, anchor,
        )
