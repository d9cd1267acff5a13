"""Starbucks Masked Autoencoding (SMAE) pre-training.

Per size (n, d): masked-language modelling through the shared MLM head with its
first dense layer cut to its first d input columns, applied to the first d
coordinates of layer n; plus a one-layer decoder whose first input is that size's
pooled vector (mapped d -> hidden by the same cut transform) reconstructing a more
heavily masked copy. Per size (MLM + MAE) / 2; averaged over sizes.
"""
from __future__ import annotations

import copy
import dataclasses
import random

import torch
import torch.nn.functional as F
from torch import nn

from starbucks.model import StarbucksModel
from starbucks.sizes import Size
from training.data import batch_items, batch_rng
from training.masking import IGNORE, corrupt, whole_word_masks


class SizedMLMHead(nn.Module):
    """BERT's MLM head whose transform can read only the first d hidden coordinates."""

    def __init__(self, model: StarbucksModel):
        super().__init__()
        config = model.backbone.config
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self._embeddings = [model.backbone.embeddings.word_embeddings]  # tied, not owned

    def transform(self, h: torch.Tensor) -> torch.Tensor:
        d = h.shape[-1]
        return self.norm(F.gelu(F.linear(h, self.dense.weight[:, :d], self.dense.bias)))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.transform(h) @ self._embeddings[0].weight.T + self.bias


@dataclasses.dataclass
class MaskedBatch:
    encoder_ids: torch.Tensor
    encoder_labels: torch.Tensor
    decoder_ids: torch.Tensor
    decoder_labels: torch.Tensor
    attention_mask: torch.Tensor

    def to(self, device) -> "MaskedBatch":
        return MaskedBatch(*(t.to(device) for t in dataclasses.astuple(self)))


class MaskedBatches:
    """Batch ``index``: passages with whole-word encoder (20 %) and decoder (40 %) masks."""

    def __init__(self, passages: list[str], tokenizer, batch_size: int, max_length: int, seed: int,
                 encoder_rate: float, decoder_rate: float):
        self.passages, self.tokenizer = passages, tokenizer
        self.batch_size, self.max_length, self.seed = batch_size, max_length, seed
        self.encoder_rate, self.decoder_rate = encoder_rate, decoder_rate

    def __len__(self) -> int:
        return max(1, len(self.passages) // self.batch_size)

    def __call__(self, index: int) -> MaskedBatch:
        rng = batch_rng(self.seed, index)
        texts = [self.passages[i] for i in batch_items(len(self.passages), self.batch_size, self.seed, index)]
        enc = self.tokenizer(texts, truncation=True, max_length=self.max_length, padding=True)
        tok = self.tokenizer
        special = set(tok.all_special_ids)
        rows = ([], [], [], [])
        for b, ids in enumerate(enc["input_ids"]):
            words = [None if t in special else w for t, w in zip(ids, enc.word_ids(b))]
            enc_pos, dec_pos = whole_word_masks(words, self.encoder_rate, self.decoder_rate, rng)
            for target, positions in ((0, enc_pos), (2, dec_pos)):
                inputs, labels = corrupt(ids, positions, tok.mask_token_id, tok.vocab_size, special, rng)
                rows[target].append(inputs)
                rows[target + 1].append(labels)
        as_tensor = lambda x: torch.tensor(x, dtype=torch.long)  # noqa: E731
        return MaskedBatch(*(as_tensor(r) for r in rows), as_tensor(enc["attention_mask"]))


class SMAEObjective(nn.Module):
    def __init__(self, model: StarbucksModel, sizes: list[Size]):
        super().__init__()
        self.sizes = sorted(sizes)
        self.head = SizedMLMHead(model)
        self.decoder = copy.deepcopy(model.backbone.encoder.layer[-1])
        self.decoder.attention.self.config._attn_implementation = "eager"  # additive float mask below

    def forward(self, model: StarbucksModel, batch: MaskedBatch, rng: random.Random) -> dict[str, torch.Tensor]:
        mask = batch.attention_mask
        hidden = model.hidden_states(batch.encoder_ids, mask, max(s.layer for s in self.sizes))
        pooled = model.pool(hidden, mask, self.sizes, normalize=False)
        embedded = model.backbone.embeddings(input_ids=batch.decoder_ids)
        additive = (1.0 - mask[:, None, None, :].to(embedded.dtype)) * torch.finfo(embedded.dtype).min
        # Vocabulary logits only where there is something to predict: the masked positions.
        enc_at, dec_at = batch.encoder_labels != IGNORE, batch.decoder_labels != IGNORE
        losses = {}
        for size in self.sizes:
            mlm_logits = self.head(hidden[size.layer][enc_at][:, : size.dim])
            mlm = F.cross_entropy(mlm_logits.float(), batch.encoder_labels[enc_at])
            first = self.head.transform(pooled[size]).unsqueeze(1)
            decoded = self.decoder(torch.cat([first, embedded[:, 1:]], dim=1), attention_mask=additive)
            if isinstance(decoded, tuple):
                decoded = decoded[0]
            mae = F.cross_entropy(self.head(decoded[dec_at]).float(), batch.decoder_labels[dec_at])
            losses[str(size)] = (mlm + mae) / 2 / len(self.sizes)
        return losses


def build_smae(cfg, model: StarbucksModel):
    from training.mining import read_corpus
    from training.setup import configured_sizes

    passages = [text for spec in cfg.train_files for text in read_corpus(spec).values()]
    batches = MaskedBatches(passages, model.tokenizer, cfg.batch_size, cfg.passage_max_length, cfg.seed,
                            cfg.encoder_mask_rate, cfg.decoder_mask_rate)
    return SMAEObjective(model, configured_sizes(cfg, model)), batches, len(batches)
