"""Whole-word masking for SMAE: the encoder's masked words are a subset of the decoder's."""
from __future__ import annotations

import random

IGNORE = -100


def whole_word_masks(word_ids: list[int | None], encoder_rate: float, decoder_rate: float,
                     rng: random.Random) -> tuple[list[int], list[int]]:
    """Token positions masked for the encoder and for the decoder.

    Words (not tokens) are drawn: one shuffled order, the decoder takes its first
    ``decoder_rate`` share and the encoder the first ``encoder_rate`` share of the
    same order, so every encoder-masked position is also decoder-masked.
    """
    words = sorted({w for w in word_ids if w is not None})
    if not words:
        return [], []
    rng.shuffle(words)
    n_dec = max(1, round(decoder_rate * len(words)))
    n_enc = min(n_dec, max(1, round(encoder_rate * len(words))))
    dec_words, enc_words = set(words[:n_dec]), set(words[:n_enc])
    enc = [i for i, w in enumerate(word_ids) if w in enc_words]
    dec = [i for i, w in enumerate(word_ids) if w in dec_words]
    return enc, dec


def corrupt(ids: list[int], positions: list[int], mask_id: int, vocab_size: int,
            special_ids: set[int], rng: random.Random) -> tuple[list[int], list[int]]:
    """BERT's 80/10/10 replacement at ``positions``; returns (inputs, labels with -100 elsewhere)."""
    inputs, labels = list(ids), [IGNORE] * len(ids)
    for i in positions:
        labels[i] = ids[i]
        r = rng.random()
        if r < 0.8:
            inputs[i] = mask_id
        elif r < 0.9:
            token = rng.randrange(vocab_size)
            while token in special_ids:
                token = rng.randrange(vocab_size)
            inputs[i] = token
    return inputs, labels
