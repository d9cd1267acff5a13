"""Label-free training data: pseudo-queries cut from the user's own passages.

A sentence (or, for one-sentence passages, a span of words) is cut out of a
passage and becomes its query; the rest of the passage is its positive (the
sentence is kept in a tenth of cases, as the Inverse Cloze Task does, so exact
matches are not penalised). Hard negatives are mined for the pseudo-query like
for a real one. During training a frozen teacher scores every pair and each size
learns the teacher's distribution (``teacher: "base"`` in the config).
"""
from __future__ import annotations

import random
import re
from typing import Iterator

from training.mining import Rankings, pick_negatives, record

SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\[])")
KEEP_SENTENCE = 0.1


def cut_query(text: str, rng: random.Random, min_words: int = 4, max_words: int = 32) -> tuple[str, str] | None:
    """(pseudo-query, positive passage) from one passage, or None if it is too short."""
    sentences = [s for s in SENTENCE_END.split(text) if s.strip()]
    usable = [i for i, s in enumerate(sentences) if min_words <= len(s.split()) <= max_words]
    if len(sentences) >= 2 and usable:
        i = rng.choice(usable)
        rest = sentences if rng.random() < KEEP_SENTENCE else sentences[:i] + sentences[i + 1:]
        return sentences[i].strip(), " ".join(rest).strip()
    words = text.split()
    if len(words) < 2 * min_words:
        return None
    length = rng.randint(min_words, min(max_words, len(words) // 2))
    start = rng.randrange(0, len(words) - length + 1)
    return " ".join(words[start:start + length]), text


def pseudo_queries(corpus: dict[str, str], count: int, seed: int) -> dict[str, tuple[str, str, str]]:
    """``{qid: (query, docid, positive text)}`` for up to ``count`` randomly chosen passages."""
    rng = random.Random(seed)
    ids = sorted(corpus)
    rng.shuffle(ids)
    out = {}
    for docid in ids:
        if len(out) >= count:
            break
        cut = cut_query(corpus[docid], rng)
        if cut is not None:
            out[f"pseudo-{docid}"] = (cut[0], docid, cut[1])
    return out


def pseudo_groups(corpus: dict[str, str], queries: dict[str, tuple[str, str, str]], rankings: Rankings,
                  num_negatives: int, skip_top: int, seed: int) -> Iterator[dict]:
    """Tevatron records for pseudo-queries; the source passage is never a negative."""
    rng = random.Random(seed)
    for qid in sorted(queries):
        query, docid, positive = queries[qid]
        negatives = pick_negatives(rankings[qid], {docid}, num_negatives, skip_top, rng)
        yield record(qid, query, [(docid, positive)], [(d, corpus[d]) for d in negatives])
