"""SRL's STS recipe (sentence-transformers style).

Per size: the raw pooled vector truncated to d, compared by cosine (so L2-normalised
after truncation), with CoSENT on scored pairs (STS-B train) or a multiple-negatives
ranking loss on (anchor, positive[, negative]) rows, scale 20; plus, for each smaller
size (n, d), KL(softmax(E_full[:, :d]) || softmax(E_n[:, :d])) over embedding
coordinates, weight 0.3, teacher not detached.
"""
from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from starbucks.corpus import iter_json_objects, open_text
from starbucks.errors import InputError
from starbucks.model import StarbucksModel
from starbucks.sizes import Size
from training.data import batch_items, tokenize

SCALE = 20.0


def cosent(cos: torch.Tensor, labels: torch.Tensor, scale: float = SCALE) -> torch.Tensor:
    """log(1 + sum over pairs ranked wrong-way-round of exp(scale * (cos_worse - cos_better)))."""
    diff = scale * (cos[None, :] - cos[:, None])  # [i, j] = cos_j - cos_i
    diff = diff.masked_fill(labels[:, None] <= labels[None, :], float("-inf"))  # keep y_i > y_j
    return torch.logsumexp(torch.cat([torch.zeros(1, device=cos.device), diff.flatten()]), dim=0)


def mnrl(anchors: torch.Tensor, candidates: torch.Tensor, scale: float = SCALE) -> torch.Tensor:
    """Cross-entropy of each anchor against all candidates; its positive is candidate i."""
    s = scale * F.normalize(anchors, dim=-1) @ F.normalize(candidates, dim=-1).T
    return F.cross_entropy(s.float(), torch.arange(len(anchors), device=s.device))


def coordinate_kl(full: torch.Tensor, sub: torch.Tensor) -> torch.Tensor:
    """KL(softmax(full[:, :d]) || softmax(sub)) over the d coordinates, batchmean; both sides train."""
    d = sub.shape[-1]
    return F.kl_div(F.log_softmax(sub.float(), -1), F.log_softmax(full[:, :d].float(), -1),
                    reduction="batchmean", log_target=True)


@dataclasses.dataclass
class TextRows:
    """Parallel text columns (a, b[, c]) and, for scored pairs, their labels."""

    columns: list[list[str]]
    labels: list[float] | None


def read_sts_rows(path: str | Path) -> TextRows:
    """STS-B-style TSV (score in column 5, sentences in 6 and 7), or JSONL anchor/positive[/negative]."""
    path = Path(path)
    if path.name.removesuffix(".gz").endswith(".jsonl"):
        keys = None
        columns: list[list[str]] = []
        for n, obj in iter_json_objects(path):
            row_keys = [k for k in ("anchor", "positive", "negative") if k in obj]
            if row_keys[:2] != ["anchor", "positive"] or (keys and row_keys != keys):
                raise InputError("rows need 'anchor' and 'positive' (and the same optional 'negative')", path, n)
            keys = keys or row_keys
            columns = columns or [[] for _ in keys]
            for col, k in zip(columns, keys):
                if not isinstance(obj[k], str) or not obj[k].strip():
                    raise InputError(f"'{k}' must be a non-empty string", path, n)
                col.append(obj[k])
        if not columns:
            raise InputError("no training rows", path)
        return TextRows(columns, None)
    a, b, labels = [], [], []
    with open_text(path) as f:
        for n, line in enumerate(f, 1):
            parts = line.rstrip("\r\n").split("\t")
            if not line.strip():
                continue
            try:
                labels.append(float(parts[4]))
                a.append(parts[5]), b.append(parts[6])
            except (IndexError, ValueError):
                raise InputError("expected STS-B columns: genre, file, year, id, score, sentence1, sentence2",
                                 path, n) from None
    if not a:
        raise InputError("no training rows", path)
    return TextRows([a, b], labels)


@dataclasses.dataclass
class TextBatch:
    columns: list[dict[str, torch.Tensor]]
    labels: torch.Tensor | None

    def to(self, device) -> "TextBatch":
        return TextBatch([{k: v.to(device) for k, v in c.items()} for c in self.columns],
                         None if self.labels is None else self.labels.to(device))


class TextBatches:
    def __init__(self, rows: TextRows, tokenizer, batch_size: int, max_length: int, seed: int):
        self.rows, self.tokenizer = rows, tokenizer
        self.batch_size, self.max_length, self.seed = batch_size, max_length, seed

    def __len__(self) -> int:
        return max(1, len(self.rows.columns[0]) // self.batch_size)

    def __call__(self, index: int) -> TextBatch:
        items = batch_items(len(self.rows.columns[0]), self.batch_size, self.seed, index)
        columns = [tokenize(self.tokenizer, [col[i] for i in items], self.max_length) for col in self.rows.columns]
        labels = None if self.rows.labels is None else torch.tensor([self.rows.labels[i] for i in items])
        return TextBatch(columns, labels)


class STSObjective(nn.Module):
    def __init__(self, sizes: list[Size], kl_weight: float = 0.3):
        super().__init__()
        self.sizes = sorted(sizes)
        self.kl_weight = kl_weight

    def forward(self, model: StarbucksModel, batch: TextBatch, rng: random.Random) -> dict[str, torch.Tensor]:
        full = self.sizes[-1]
        wide = Size(full.layer, model.hidden_size)  # the full layer, untruncated, for the KL targets
        raw = [model.embed(**col, sizes=self.sizes + [wide], normalize=False) for col in batch.columns]
        losses = {}
        for size in self.sizes:
            if batch.labels is not None:
                cos = F.cosine_similarity(raw[0][size], raw[1][size], dim=-1)
                loss = cosent(cos, batch.labels)
            else:
                loss = mnrl(raw[0][size], torch.cat([col[size] for col in raw[1:]]))
            if size != full and self.kl_weight:
                loss = loss + self.kl_weight * coordinate_kl(torch.cat([r[wide] for r in raw]),
                                                             torch.cat([r[size] for r in raw]))
            losses[str(size)] = loss
        return losses


def build_sts(cfg, model: StarbucksModel):
    from training.setup import configured_sizes

    parts = [read_sts_rows(path) for path in cfg.train_files]
    if len({len(p.columns) for p in parts}) > 1 or len({p.labels is None for p in parts}) > 1:
        raise InputError("all STS training files must have the same kind of rows", cfg.train_files[0])
    rows = TextRows([sum((p.columns[i] for p in parts), []) for i in range(len(parts[0].columns))],
                    None if parts[0].labels is None else sum((p.labels for p in parts), []))
    batches = TextBatches(rows, model.tokenizer, cfg.batch_size, cfg.passage_max_length, cfg.seed)
    return STSObjective(configured_sizes(cfg, model), cfg.sts_kl_weight), batches, len(batches)
