"""Fixtures for the training tests: a tiny random BERT and a small Tevatron file."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from starbucks.config import ModelConfig
from starbucks.model import StarbucksModel, base_model_path
from starbucks.sizes import diagonal

TOPICS = ["coffee roasting", "protein folding", "tidal energy", "medieval castles", "jazz harmony",
          "glacier melting", "vaccine trials", "sourdough bread", "solar flares", "chess openings",
          "coral reefs", "railway signals"]


def tiny_train_model(pooling: str = "cls", normalize: bool = False, similarity: str = "dot") -> StarbucksModel:
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(base_model_path())
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=4,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    backbone = BertModel(config, add_pooling_layer=False)
    settings = ModelConfig(sizes=diagonal(4, 32), pooling=pooling, normalize=normalize,
                           similarity=similarity, query_max_length=16, passage_max_length=32)
    return StarbucksModel(backbone, tokenizer, settings, name="tiny")


def write_groups(path: Path, n_negatives: int = 3) -> Path:
    """One query per topic; its positive names the topic, negatives name the others."""
    with open(path, "w") as f:
        for i, topic in enumerate(TOPICS):
            others = [TOPICS[(i + k) % len(TOPICS)] for k in range(1, n_negatives + 1)]
            f.write(json.dumps({
                "query_id": str(i), "query": f"facts about {topic}",
                "positive_passages": [{"docid": f"d{i}", "title": topic, "text": f"a passage on {topic}"}],
                "negative_passages": [{"docid": f"n{i}{k}", "title": "", "text": f"a passage on {o}"}
                                      for k, o in enumerate(others)],
            }) + "\n")
    return path


@pytest.fixture
def train_model_dir(tmp_path) -> Path:
    folder = tmp_path / "tiny-model"
    tiny_train_model().save(folder)
    return folder


@pytest.fixture
def groups_file(tmp_path) -> Path:
    return write_groups(tmp_path / "train.jsonl")


def run_config(model_dir: Path, data: Path, output: Path, **overrides) -> dict:
    """A small, fast training config for the tiny model."""
    cfg = dict(model=str(model_dir), output=str(output), train_files=[str(data)], method="srl",
               batch_size=4, train_group_size=3, query_max_length=16, passage_max_length=32,
               max_steps=4, learning_rate=1e-3, warmup_ratio=0.0, seed=7, threads=1)
    cfg.update(overrides)
    return cfg
