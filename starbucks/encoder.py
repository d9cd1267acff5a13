"""Inference: texts in, one float32 matrix per size out, from a single forward pass."""
from __future__ import annotations

import threading
from typing import Sequence

import numpy as np
import torch

from starbucks.errors import InputError, StarbucksError
from starbucks.model import StarbucksModel
from starbucks.sizes import Size


ENCODERS = ("auto", "torch", "onnx", "onnx-int8")


def check_encoder(kind: str) -> str:
    """The encoder name, or a clear error naming the choices."""
    if kind not in ENCODERS:
        raise StarbucksError(f"unknown encoder {kind!r}: choose one of {', '.join(ENCODERS)}")
    return kind


# The CPU default: the fastest variant whose nDCG@10 at every diagonal size stays within
# 0.005 of torch fp32 (experiments/encoders.py, results in experiments/results/encoders/).
CPU_DEFAULT = "onnx"


def make_encoder(model: StarbucksModel, kind: str = "auto", threads: int | None = None,
                 batch_size: int = 32) -> "Encoder":
    """The encoder to search and index with: ``torch``, ONNX Runtime (``onnx`` fp32, ``onnx-int8``),
    or ``auto``: torch on a GPU (the model's device), else ``CPU_DEFAULT``. ``threads`` is applied to
    torch's, FAISS's and ONNX Runtime's pools."""
    from starbucks.threads import apply_threads

    check_encoder(kind)
    threads = apply_threads(threads)
    if kind == "auto":
        kind = "torch" if model.device.type != "cpu" else CPU_DEFAULT
    if kind == "torch":
        encoder = Encoder(model, batch_size=batch_size)
        encoder.threads = threads
        return encoder
    from starbucks.onnx_encoder import OnnxEncoder

    return OnnxEncoder(model, "fp32" if kind == "onnx" else "int8", threads=threads, batch_size=batch_size)


class Encoder:
    """Encodes queries and passages at several sizes at once.

    Batches are sorted by token length to cut padding. Safe to share between
    threads: tokenisation is serialised, the forward pass is read-only.
    """

    kind = "torch"

    def __init__(self, model: StarbucksModel, batch_size: int = 32):
        self.model = model
        self.batch_size = batch_size
        self.threads = None
        self._tok_lock = threading.Lock()

    @property
    def config(self):
        return self.model.config

    def encode_queries(self, queries: Sequence[str], sizes, batch_size: int | None = None,
                       lengths: list | None = None) -> dict[Size, np.ndarray]:
        """Each query's vector at each size. ``lengths``: a list that each query's token count (prefix and
        special tokens included, after truncation) is appended to, as encoding counted them."""
        texts = self._query_texts(queries)
        return self._encode(texts, sizes, self.config.query_max_length, batch_size, check_length=True,
                            lengths=lengths)

    def token_counts(self, queries: Sequence[str]) -> list[int]:
        """Each query's token count as ``encode_queries`` sees it, without encoding."""
        return [len(ids) for ids in self._tokenize(self._query_texts(queries), self.config.query_max_length, True)]

    def _query_texts(self, queries: Sequence[str]) -> list[str]:
        for i, q in enumerate(queries):
            if not q or not q.strip():
                raise InputError(f"query {i} is empty")
        return [self.config.query_prefix + q for q in queries]

    def encode_passages(self, passages: Sequence[str], sizes, batch_size: int | None = None) -> dict[Size, np.ndarray]:
        texts = [self.config.passage_prefix + p for p in passages]
        return self._encode(texts, sizes, self.config.passage_max_length, batch_size)

    def _tokenize(self, texts: Sequence[str], max_length: int, check_length: bool) -> list[list[int]]:
        """Token ids cut to ``max_length`` (queries if ``check_length``, else passages): the policy of
        starbucks.truncation, which counts the cuts and says so once."""
        from starbucks.truncation import note_truncation

        limit = min(max_length, self.model.max_positions)
        with self._tok_lock:
            ids = self.model.tokenizer(list(texts), truncation=True, max_length=limit + 1)["input_ids"]
        note_truncation(self, "queries" if check_length else "passages", sum(len(r) > limit for r in ids), len(ids), limit)
        # Cut to the configured length, keeping the closing special token as truncation does.
        return [row if len(row) <= limit else row[: limit - 1] + row[-1:] for row in ids]

    def _encode(self, texts, sizes, max_length, batch_size, check_length=False, lengths=None) -> dict[Size, np.ndarray]:
        sizes = [Size.parse(s) for s in sizes]
        self.model.check_sizes(sizes)
        batch_size = batch_size or self.batch_size
        ids = self._tokenize(texts, max_length, check_length)
        if lengths is not None:
            lengths.extend(len(row) for row in ids)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out = {s: np.empty((len(ids), s.dim), dtype=np.float32) for s in sizes}
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            width = max(len(ids[i]) for i in rows)
            input_ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for j, i in enumerate(rows):
                input_ids[j, : len(ids[i])] = ids[i]
                mask[j, : len(ids[i])] = 1
            vectors = self._vectors(input_ids, mask, sizes)
            for s in sizes:
                out[s][rows] = vectors[s]
        return out

    @torch.inference_mode()
    def _vectors(self, input_ids: np.ndarray, mask: np.ndarray, sizes: list[Size]) -> dict[Size, np.ndarray]:
        """One padded batch through the model: float32 vectors per size."""
        device = self.model.device
        vectors = self.model.embed(torch.from_numpy(input_ids).to(device), torch.from_numpy(mask).to(device), sizes)
        return {s: v.float().cpu().numpy() for s, v in vectors.items()}
