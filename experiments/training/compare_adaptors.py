"""Adaptor rows of the method comparison (``experiments.training.compare``).

Each row trains per-layer maps on a frozen backbone from the comparison's own data (the SciFact
and NFCorpus train files every other row trains on), with its step count and seed, and is scored
like the other rows: every size, exact search, evaluation passages cut at the same length.

The backbone (all-MiniLM-L6-v2, or the comparison's SRL run) encodes each text once; its pooled
vectors of every layer are cached under ``experiments/indexes/adaptor-cache/compare-*``, and each
row then costs the training steps and a few matrix products.
"""
from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import torch
from scipy.stats import spearmanr

from experiments.datasets import ROOT
from experiments.training.per_size import COLLECTIONS, DATASETS, STS, ndcg_per_size, sts_pairs
from starbucks.corpus import iter_corpus
from starbucks.model import BASE_MODEL_NAME, StarbucksModel
from starbucks.sizes import Size
from starbucks.topics import read_qrels, read_topics
from training.adapt import (AdaptSettings, TrainingSet, cached_pooled, initial_adaptors, plain_adaptors,
                            train_adaptors, vectors_from_pooled)

CACHE = ROOT / "experiments" / "indexes" / "adaptor-cache"
TRAIN_FILES = ["runs/train-data/scifact-train-bm25.jsonl", "runs/train-data/nfcorpus-train-bm25.jsonl"]
STEPS, SEED = 100, 42  # as experiments/configs/compare-*.json
SRL_BACKBONE = "runs/compare/srl"  # experiments/configs/compare-srl.json's output
CORPORA = ["scifact", "nfcorpus"]  # what TRAIN_FILES were mined from


@dataclasses.dataclass(frozen=True)
class AdaptorMethod:
    label: str
    backbone: str  # "base" or "srl"
    labelled: bool = True
    trained: bool = True  # False: the PCA rotation alone
    orthogonal_last: bool = True
    shared: bool = False
    transductive: bool = False  # label-free on each evaluation corpus itself (reported apart)

    def settings(self) -> AdaptSettings:
        return AdaptSettings(steps=STEPS, seed=SEED, learning_rate=3e-3, orthogonal_last=self.orthogonal_last,
                             shared=self.shared)

    def config(self) -> dict:
        return {"adaptors": dataclasses.asdict(self), "settings": self.settings().to_dict(),
                "train_files": TRAIN_FILES}


METHODS = {
    "adapt-pca": AdaptorMethod("PCA rotation per layer (no training)", "base", labelled=False, trained=False),
    "adapt-labelfree": AdaptorMethod("adaptors, label-free (KL to the full size)", "base", labelled=False),
    "adapt-supervised": AdaptorMethod("adaptors, supervised (CE + KL)", "base"),
    "adapt-supervised-free": AdaptorMethod("adaptors, supervised, last-layer map free", "base", orthogonal_last=False),
    "adapt-supervised-shared": AdaptorMethod("adaptors, supervised, one map shared by all layers", "base",
                                             orthogonal_last=False, shared=True),
    "adapt-srl-supervised": AdaptorMethod("SRL backbone + adaptors, supervised", "srl"),
    "adapt-self": AdaptorMethod("adaptors, label-free on the evaluation corpus itself (transductive)", "base",
                                labelled=False, transductive=True),
}
TRANSDUCTIVE = [m for m, spec in METHODS.items() if spec.transductive]


def read_train_queries(files: list[str]) -> tuple[list[str], list[list[str]]]:
    """The train files' query texts and each query's positive docids."""
    queries, positives = [], []
    for path in files:
        with open(path, encoding="utf-8") as f:
            for line in f:
                item = json.loads(line)
                queries.append(item["query"])
                positives.append([p["docid"] for p in item["positive_passages"]])
    return queries, positives


class Backbone:
    """A frozen backbone with every text it needs encoded once (cached), at the comparison's passage length."""

    def __init__(self, name: str, passage_max_length: int):
        path = BASE_MODEL_NAME if name == "base" else SRL_BACKBONE
        self.model = StarbucksModel.load(path, device="cpu")
        self.model.config = dataclasses.replace(self.model.config, passage_max_length=passage_max_length)
        self.layers = list(range(1, self.model.num_layers + 1))
        self.cache = CACHE / f"compare-{name}-{passage_max_length}"

    def pooled(self, texts: list[str], kind: str) -> dict[int, torch.Tensor]:
        return cached_pooled(self.model, texts, self.layers, self.cache, kind)

    def training_set(self, labelled: bool) -> TrainingSet:
        """The corpora the train files were mined from (every positive and negative is one of their
        passages, encoded as for evaluation), and the train files' queries with their positives."""
        corpora = [list(iter_corpus(DATASETS[COLLECTIONS[name]].corpus)) for name in CORPORA]
        row = {d.docid: i for i, d in enumerate(d for docs in corpora for d in docs)}
        pooled = [self.pooled([d.text for d in docs], "passages") for docs in corpora]
        queries, positives = read_train_queries(TRAIN_FILES)
        data = TrainingSet({layer: torch.cat([p[layer] for p in pooled]) for layer in self.layers},
                           self.pooled(queries, "queries"))
        if labelled:
            data.positives = [[row[d] for d in pos if d in row] for pos in positives]
        return data

    def scores(self, adaptors, datasets: list[str], sizes: list[Size]) -> tuple[dict, dict]:
        scores, seconds = {}, {}
        self.model.set_adaptors(adaptors)
        try:
            for name in datasets:
                start = time.time()
                scores[name] = self.sts(name, sizes) if name in STS else self.retrieval(name, sizes)
                seconds[name] = round(time.time() - start, 1)
        finally:
            self.model.set_adaptors(None)
        return scores, seconds

    def vectors(self, texts: list[str], kind: str, sizes: list[Size]) -> dict[Size, np.ndarray]:
        with torch.no_grad():
            return {s: v.numpy() for s, v in vectors_from_pooled(self.model, self.pooled(texts, kind), sizes).items()}

    def retrieval(self, name: str, sizes: list[Size]) -> dict[str, float]:
        collection = DATASETS[COLLECTIONS[name]]
        docs = list(iter_corpus(collection.corpus))
        qrels = read_qrels(collection.qrels)
        topics = {q: t for q, t in read_topics(collection.topics).items() if q in qrels}
        ids, qids = [d.docid for d in docs], list(topics)
        d_vecs = self.vectors([d.text for d in docs], "passages", sizes)
        q_vecs = self.vectors([topics[q] for q in qids], "queries", sizes)
        return ndcg_per_size(q_vecs, d_vecs, qids, ids, qrels, sizes)

    def sts(self, name: str, sizes: list[Size]) -> dict[str, float]:
        a, b, y = sts_pairs(name)
        va, vb = self.vectors(a, "passages", sizes), self.vectors(b, "passages", sizes)
        return {str(s): float(spearmanr((va[s] * vb[s]).sum(1), y).statistic) for s in sizes}


_backbones: dict[tuple[str, int], Backbone] = {}


def run(method: str, datasets: list[str], passage_max_length: int, sizes: list[Size]) -> dict:
    """Train one adaptor row (seconds on the cache) and score it on ``datasets``."""
    spec = METHODS[method]
    key = (spec.backbone, passage_max_length)
    if key not in _backbones:
        _backbones[key] = Backbone(*key)
    backbone = _backbones[key]
    if spec.transductive:
        return transductive(backbone, spec, [d for d in datasets if d not in STS], sizes)
    start = time.time()
    data = backbone.training_set(spec.labelled)
    settings = spec.settings()
    if spec.trained:
        adaptors, _ = train_adaptors(backbone.model, data, settings, progress=True)
    else:
        adaptors = plain_adaptors(initial_adaptors(backbone.model, data.passages, settings, backbone.layers))
    scores, seconds = backbone.scores(adaptors, datasets, sizes)
    seconds["train"] = round(time.time() - start - sum(seconds.values()), 1)
    return {"model": f"{BASE_MODEL_NAME if spec.backbone == 'base' else SRL_BACKBONE} + adaptors ({method})",
            "sizes": [str(s) for s in sizes], "scores": scores, "seconds": seconds}


def transductive(backbone: Backbone, spec: AdaptorMethod, datasets: list[str], sizes: list[Size]) -> dict:
    """One label-free training per retrieval set, on that set's own passages; each set scored with its own maps."""
    scores, seconds = {}, {}
    for name in datasets:
        start = time.time()
        docs = list(iter_corpus(DATASETS[COLLECTIONS[name]].corpus))
        data = TrainingSet(backbone.pooled([d.text for d in docs], "passages"))
        adaptors, _ = train_adaptors(backbone.model, data, spec.settings(), progress=True)
        got, _ = backbone.scores(adaptors, [name], sizes)
        scores[name], seconds[name] = got[name], round(time.time() - start, 1)
    return {"model": f"{BASE_MODEL_NAME} + adaptors per evaluation corpus", "sizes": [str(s) for s in sizes],
            "scores": scores, "seconds": seconds}


def label(method: str) -> str:
    return METHODS[method].label


def config(method: str) -> dict:
    return METHODS[method].config()

