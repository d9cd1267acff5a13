"""SMAE masking and loss; the STS variant's losses and data."""
import json
import random

import pytest
import torch

from starbucks.errors import InputError
from starbucks.sizes import Size
from training.config import TrainConfig
from training.loop import train
from training.losses.smae import MaskedBatches, SMAEObjective
from training.losses.sts import STSObjective, TextBatches, coordinate_kl, cosent, read_sts_rows
from training.masking import IGNORE, corrupt, whole_word_masks
from training_fixtures import TOPICS, run_config, tiny_train_model, train_model_dir  # noqa: F401


def test_whole_word_masks_obey_rates_and_the_subset_rule():
    word_ids = [None] + [w for w in range(100) for _ in range(1 + w % 3)] + [None]
    rng = random.Random(0)
    for _ in range(20):
        enc, dec = whole_word_masks(word_ids, 0.2, 0.4, rng)
        assert set(enc) <= set(dec)
        enc_words = {word_ids[i] for i in enc}
        dec_words = {word_ids[i] for i in dec}
        assert len(enc_words) == 20 and len(dec_words) == 40
        # whole words: every token of a chosen word is masked
        assert enc == [i for i, w in enumerate(word_ids) if w in enc_words]
        assert 0 not in dec and len(word_ids) - 1 not in dec


def test_corruption_is_80_10_10():
    rng = random.Random(1)
    ids = list(range(1000, 21000))
    inputs, labels = corrupt(ids, list(range(len(ids))), mask_id=103, vocab_size=30000, special_ids={0, 101, 102, 103},
                             rng=rng)
    assert labels == ids
    masked = sum(t == 103 for t in inputs) / len(ids)
    kept = sum(a == b for a, b in zip(inputs, ids)) / len(ids)
    assert masked == pytest.approx(0.8, abs=0.02) and kept == pytest.approx(0.1, abs=0.02)
    inputs, labels = corrupt([5, 6, 7], [1], 103, 30000, set(), rng)
    assert labels == [IGNORE, 6, IGNORE] and inputs[0] == 5 and inputs[2] == 7


def test_masked_batches_mask_more_for_the_decoder():
    model = tiny_train_model()
    texts = [f"{t} is a long subject with many words to mask in this sentence about {t}" for t in TOPICS]
    batch = MaskedBatches(texts, model.tokenizer, 4, 32, seed=0, encoder_rate=0.2, decoder_rate=0.4)(0)
    enc = batch.encoder_labels != IGNORE
    dec = batch.decoder_labels != IGNORE
    assert torch.all(dec[enc]) and dec.sum() > enc.sum() > 0
    assert not torch.any(enc[:, 0])  # [CLS] never masked


def test_smae_loss_reaches_every_size_head_and_decoder():
    model = tiny_train_model()
    sizes = [Size(1, 8), Size(2, 16), Size(4, 32)]
    objective = SMAEObjective(model, sizes)
    texts = [f"notes on {t} and more notes on {t}" for t in TOPICS]
    batch = MaskedBatches(texts, model.tokenizer, 4, 32, 0, 0.2, 0.4)(0)
    losses = objective(model, batch, random.Random(0))
    assert set(losses) == {str(s) for s in sizes}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert objective.head.dense.weight.grad[:, :8].abs().sum() > 0
    assert objective.decoder.output.dense.weight.grad.abs().sum() > 0
    assert model.backbone.encoder.layer[0].output.dense.weight.grad.abs().sum() > 0


def test_smae_run_lowers_the_loss_and_resumes_its_heads(train_model_dir, tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": str(i), "text": f"notes on {t}, more notes on {t}"}) + "\n"
                              for i, t in enumerate(TOPICS)))
    cfg = run_config(train_model_dir, corpus, tmp_path / "smae", method="smae", sizes=["2x16", "4x32"],
                     max_steps=25, learning_rate=2e-3, save_every=20)
    out = train(TrainConfig.from_dict(cfg), progress=False)
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert sum(r["loss"] for r in log[-5:]) < sum(r["loss"] for r in log[:5])
    state = torch.load(out / "checkpoints" / "step-00000020" / "state.pt", weights_only=False)
    assert any(k.startswith("decoder.") for k in state["objective"])


def test_cosent_prefers_the_right_order():
    labels = torch.tensor([5.0, 3.0, 0.0])
    assert cosent(torch.tensor([0.9, 0.5, 0.1]), labels) < cosent(torch.tensor([0.1, 0.5, 0.9]), labels)


def test_coordinate_kl_is_zero_for_equal_prefixes_and_trains_both_sides():
    full = torch.randn(4, 32, requires_grad=True)
    assert coordinate_kl(full, full[:, :8].detach().clone()).item() == pytest.approx(0.0, abs=1e-6)
    sub = torch.randn(4, 8, requires_grad=True)
    coordinate_kl(full, sub).backward()
    assert full.grad[:, :8].abs().sum() > 0 and full.grad[:, 8:].abs().sum() == 0 and sub.grad.abs().sum() > 0


def test_sts_objective_on_scored_pairs_and_triplets(tmp_path):
    model = tiny_train_model(pooling="mean", normalize=True, similarity="cosine")
    sizes = [Size(1, 8), Size(4, 32)]
    pairs = tmp_path / "sts-train.csv"
    pairs.write_text("".join(f"g\tf\t2012\t{i}\t{i % 6}.0\tabout {t}\tsomething on {t}\n" for i, t in enumerate(TOPICS)))
    triplets = tmp_path / "nli.jsonl"
    triplets.write_text("".join(json.dumps({"anchor": t, "positive": f"on {t}", "negative": "nothing"}) + "\n"
                                for t in TOPICS))
    for path in (pairs, triplets):
        batch = TextBatches(read_sts_rows(path), model.tokenizer, 4, 16, 0)(0)
        losses = STSObjective(sizes)(model, batch, random.Random(0))
        assert set(losses) == {"1x8", "4x32"}
        sum(losses.values()).backward()


@pytest.mark.parametrize("text, problem", [
    ("g\tf\t2012\t1\tnot-a-number\ta\tb\n", "expected STS-B columns"),
    ("g\tf\n", "expected STS-B columns"),
])
def test_bad_sts_rows(tmp_path, text, problem):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(InputError, match=problem) as e:
        read_sts_rows(path)
    assert e.value.line == 1


def test_sts_run(train_model_dir, tmp_path):
    pairs = tmp_path / "sts-train.csv"
    pairs.write_text("".join(f"g\tf\t2012\t{i}\t{i % 6}.0\tabout {t}\tsomething on {t}\n" for i, t in enumerate(TOPICS)))
    cfg = run_config(train_model_dir, pairs, tmp_path / "sts", method="sts", max_steps=3,
                     model_settings={"pooling": "mean", "normalize": True, "similarity": "cosine"})
    out = train(TrainConfig.from_dict(cfg), progress=False)
    assert json.loads((out / "starbucks.json").read_text())["pooling"] == "mean"
