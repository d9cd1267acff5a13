"""Loss maths of the training objectives."""
import random

import pytest
import torch

from starbucks.sizes import Size
from training.data import RetrievalBatches
from training.losses.common import contrastive_ce, scores
from training.losses.mrl import mrl_sizes
from training.losses.srl import RetrievalObjective, Teacher, srl_losses
from training.losses.twodmse import TwoDMSEObjective, sample_sizes
from training_fixtures import tiny_train_model, write_groups
from training.data import read_groups

SIZES = [Size(1, 4), Size(2, 8), Size(4, 16)]


def leaves(n_rows: int, seed: int) -> dict[Size, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {s: torch.randn(n_rows, s.dim, generator=g, requires_grad=True) for s in SIZES}


def test_every_size_gets_a_loss_and_a_gradient():
    q, p = leaves(3, 0), leaves(6, 1)
    losses = srl_losses(q, p, group_size=2, temperature=1.0)
    assert set(losses) == {str(s) for s in SIZES}
    sum(losses.values()).backward()
    for s in SIZES:
        assert q[s].grad is not None and q[s].grad.abs().sum() > 0
        assert p[s].grad is not None and p[s].grad.abs().sum() > 0


def test_full_size_scores_are_detached_in_the_kl():
    q, p = leaves(3, 0), leaves(6, 1)
    losses = srl_losses(q, p, group_size=2, temperature=1.0)
    losses[str(Size(1, 4))].backward()
    full = Size(4, 16)
    assert q[full].grad is None and p[full].grad is None


def test_kl_is_zero_when_a_sub_size_equals_the_full_size():
    full, sub = Size(4, 16), Size(2, 16)
    base_q, base_p = torch.randn(3, 16), torch.randn(6, 16)
    q = {full: base_q, sub: base_q.clone()}
    p = {full: base_p, sub: base_p.clone()}
    with_kl = srl_losses(q, p, 2, 1.0, kl_weight=1.0)
    without = srl_losses(q, p, 2, 1.0, kl_weight=0.0)
    assert with_kl[str(sub)].item() == pytest.approx(without[str(sub)].item(), abs=1e-6)
    # and it is not zero when the sub-size differs
    q[sub] = torch.randn(3, 16)
    assert srl_losses(q, p, 2, 1.0)[str(sub)] > srl_losses(q, p, 2, 1.0, kl_weight=0.0)[str(sub)]


def test_contrastive_targets_are_each_querys_own_positive():
    q = torch.eye(3)
    p = torch.zeros(6, 3)
    p[0, 0] = p[2, 1] = p[4, 2] = 10.0  # positives at rows 0, 2, 4 (group size 2)
    assert contrastive_ce(scores(q, p, 1.0), group_size=2) < 1e-3
    assert contrastive_ce(scores(q, p.roll(1, 0), 1.0), group_size=2) > 5


def test_teacher_term_vanishes_when_the_student_matches_it():
    q, p = leaves(3, 0), leaves(6, 1)
    full = Size(4, 16)
    teacher = scores(q[full], p[full], 1.0).detach()
    plain = srl_losses(q, p, 2, 1.0)
    taught = srl_losses(q, p, 2, 1.0, teacher_scores=teacher)
    assert taught[str(full)].item() == pytest.approx(plain[str(full)].item(), abs=1e-5)
    assert taught[str(Size(1, 4))] > plain[str(Size(1, 4))]


def test_anchor_is_zero_at_the_teacher_and_pulls_a_drifted_full_size_back(tmp_path):
    student = tiny_train_model(pooling="mean", normalize=True, similarity="cosine").eval()
    teacher = Teacher(tiny_train_model(pooling="mean", normalize=True, similarity="cosine"), 0.05)
    groups = read_groups(write_groups(tmp_path / "g.jsonl"))
    batch = RetrievalBatches(groups, student.tokenizer, 4, 2, 16, 32, seed=0)(0)
    sizes = [Size(2, 8), Size(4, 32)]
    anchored = RetrievalObjective(sizes, 0.05, teacher=teacher, anchor_weight=1.0)
    assert anchored(student, batch, random.Random(0))["anchor"].item() == pytest.approx(0.0, abs=1e-5)
    assert "anchor" not in RetrievalObjective(sizes, 0.05, teacher=teacher)(student, batch, random.Random(0))
    last = student.backbone.encoder.layer[-1].output.dense.weight
    with torch.no_grad():
        last.add_(0.5 * torch.randn_like(last))
    drift = anchored(student, batch, random.Random(0))["anchor"]
    assert drift.item() > 1e-3
    drift.backward()
    assert last.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="anchor needs a teacher"):
        RetrievalObjective([Size(2, 8), Size(3, 32)], 0.05, teacher=teacher, anchor_weight=1.0)


def test_anchor_texts_join_the_anchor_and_carry_its_gradient(tmp_path):
    student = tiny_train_model(pooling="mean", normalize=True, similarity="cosine").eval()
    teacher = Teacher(tiny_train_model(pooling="mean", normalize=True, similarity="cosine"), 0.05)
    groups = read_groups(write_groups(tmp_path / "g.jsonl"))
    other = ["a tram crosses the bridge", "prices rose in march", "the cat sleeps"]
    batch = RetrievalBatches(groups, student.tokenizer, 4, 2, 16, 32, seed=0, anchor_texts=other,
                             anchor_batch_size=2)(0)
    assert batch.anchor_texts["input_ids"].shape[0] == 2
    anchored = RetrievalObjective([Size(2, 8), Size(4, 32)], 0.05, teacher=teacher, anchor_weight=1.0)
    assert anchored(student, batch, random.Random(0))["anchor"].item() == pytest.approx(0.0, abs=1e-5)
    last = student.backbone.encoder.layer[-1].output.dense.weight
    with torch.no_grad():
        last.add_(0.5 * torch.randn_like(last))
    with_texts = anchored(student, batch, random.Random(0))["anchor"]
    batch.anchor_texts = None
    without = anchored(student, batch, random.Random(0))["anchor"]
    assert with_texts.item() != pytest.approx(without.item(), abs=1e-6)  # the texts are in the mean


def test_mrl_uses_only_the_last_layer():
    assert mrl_sizes([Size(1, 16), Size(3, 64), Size(6, 384)], 6) == [Size(6, 16), Size(6, 64), Size(6, 384)]


def test_2dmse_samples_the_last_layer_and_one_earlier_layer():
    seen = set()
    for seed in range(40):
        last, earlier = sample_sizes(4, [8, 16, 32], random.Random(seed))
        assert last.layer == 4 and 1 <= earlier.layer < 4
        assert last.dim in (8, 16, 32) and earlier.dim in (8, 16, 32)
        seen.add((last, earlier))
    assert len(seen) > 5


def test_2dmse_trains_two_sizes_per_step(tmp_path):
    model = tiny_train_model(pooling="mean", normalize=True, similarity="cosine")
    groups = read_groups(write_groups(tmp_path / "g.jsonl"))
    batch = RetrievalBatches(groups, model.tokenizer, 4, 2, 16, 32, seed=0)(0)
    objective = TwoDMSEObjective(4, 32, [8, 16, 32], temperature=0.05)
    requested = []
    embed = model.embed
    model.embed = lambda *a, sizes, **k: requested.append(set(sizes)) or embed(*a, sizes=sizes, **k)
    losses = objective(model, batch, random.Random(3))
    sized = [Size.parse(k) for k in losses if k != "kl"]
    assert len(sized) == 2 and "kl" in losses
    last, earlier = sorted(sized, key=lambda s: -s.layer)
    assert last.layer == 4 and earlier.layer < 4
    # only the sampled sizes (and their full-width vectors for the KL) are computed
    assert requested[0] == {last, earlier, Size(4, 32), Size(earlier.layer, 32)}
    sum(losses.values()).backward()
    assert model.backbone.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0
