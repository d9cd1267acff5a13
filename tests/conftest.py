"""Shared fixtures: tiny random BERTs, small inline corpora, the local data folder."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from starbucks.config import ModelConfig
from starbucks.model import StarbucksModel, default_model_path
from starbucks.sizes import diagonal

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
WORDS = ("coffee roasting protein folding tidal energy medieval castles jazz harmony glacier "
         "melting vaccine trials sourdough bread solar flares chess openings coral reefs railway "
         "signals quantum computing ancient rome deep learning volcano eruptions").split()


def make_tiny_model(layers: int = 4, hidden: int = 48, pooling: str = "cls", similarity: str = "dot",
                    seed: int = 0) -> StarbucksModel:
    """A randomly initialised BERT with the MiniLM tokenizer: fast, deterministic."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(default_model_path())
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=512)
    settings = ModelConfig(sizes=diagonal(layers, hidden), pooling=pooling, similarity=similarity,
                           query_max_length=16, passage_max_length=48)
    return StarbucksModel(BertModel(config).eval(), tokenizer, settings, name="tiny")


def write_corpus(path: Path, n: int, seed: int = 0) -> Path:
    """A JSONL corpus of ``n`` short synthetic documents with ids d0..d{n-1}."""
    import random

    rng = random.Random(seed)
    with open(path, "w") as f:
        for i in range(n):
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 30)))
            f.write(json.dumps({"_id": f"d{i}", "title": f"doc {i}", "text": text}) + "\n")
    return path


def write_random_vectors(folder: Path, sizes, n: int, seed: int = 0, clusters: int = 40) -> Path:
    """A ``--vectors`` folder (docids d0..d{n-1}) of clustered random vectors, each size a prefix of the
    widest, so that nearest neighbours exist and approximate search has something to find."""
    import numpy as np

    rng = np.random.default_rng(seed)
    dim = max(s.dim for s in sizes)
    folder.mkdir(parents=True)
    (folder / "docids.txt").write_text("".join(f"d{i}\n" for i in range(n)))
    centres = rng.standard_normal((clusters, dim))
    full = centres[rng.integers(0, clusters, n)] + 0.6 * rng.standard_normal((n, dim))
    for s in sizes:
        np.save(folder / f"{s}.npy", full[:, : s.dim].astype(np.float32))
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("models") / "tiny"
    make_tiny_model().save(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir) -> StarbucksModel:
    return StarbucksModel.load(tiny_model_dir, device="cpu")


@pytest.fixture
def corpus(tmp_path) -> Path:
    return write_corpus(tmp_path / "corpus.jsonl", 60)


@pytest.fixture(scope="session")
def built_index(tmp_path_factory, tiny_model) -> Path:
    """A small flat index over 200 documents, built once for the read-only tests."""
    from indexes import build_index

    root = tmp_path_factory.mktemp("index")
    corpus = write_corpus(root / "corpus.jsonl", 200)
    return build_index(corpus, root / "idx", model=tiny_model, shortlist="1x8,2x16",
                       rerank="3x32,4x48", chunk_size=64, progress=False)


@pytest.fixture
def shared_data() -> Path:
    """The local test collections; absent means skip, except under CI where it must exist."""
    if not SHARED.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{SHARED} is missing under CI")
        pytest.skip(f"{SHARED} not present")
    return SHARED
