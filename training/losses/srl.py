"""Starbucks Representation Learning (SRL), the paper's retrieval recipe.

Every size of a fixed list comes from one forward pass; each gets a contrastive
cross-entropy over in-batch and hard negatives, and every smaller size a KL term
pulling its score distribution toward the (detached) full size's. All summed.

With a frozen teacher, every size also learns the teacher's score distribution, and an
optional anchor keeps the full size's vectors near the teacher's: scores over a batch's
few passages constrain the full size too loosely to stop it drifting out of domain. The
anchor may also cover texts of other domains (``anchor_files``), where the training data
says nothing at all.
"""
from __future__ import annotations

import random

import torch
from torch import nn

from starbucks.model import StarbucksModel
from starbucks.sizes import Size
from training.losses.common import anchor, contrastive_ce, distribution_kl, scores


def srl_losses(
    q: dict[Size, torch.Tensor], p: dict[Size, torch.Tensor], group_size: int, temperature: float,
    ce_weight: float = 1.0, kl_weight: float = 1.0,
    teacher_scores: torch.Tensor | None = None, teacher_weight: float = 1.0,
) -> dict[str, torch.Tensor]:
    """One loss per size: CE, plus KL toward the largest size, plus KL toward a teacher if given."""
    full = max(q)
    full_scores = scores(q[full], p[full], temperature)
    losses = {}
    for size in sorted(q):
        s = full_scores if size == full else scores(q[size], p[size], temperature)
        loss = ce_weight * contrastive_ce(s, group_size)
        if size != full and kl_weight:
            loss = loss + kl_weight * distribution_kl(s, full_scores.detach())
        if teacher_scores is not None:
            loss = loss + teacher_weight * distribution_kl(s, teacher_scores)
        losses[str(size)] = loss
    return losses


class Teacher:
    """A frozen model whose full-size score distribution the student's sizes learn (label-free mode)."""

    def __init__(self, model: StarbucksModel, temperature: float):
        self.model = model.eval().requires_grad_(False)
        self.size = Size(model.num_layers, model.hidden_size)
        self.temperature = temperature

    @torch.no_grad()
    def vectors(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        """The texts' vectors at the teacher's full size."""
        return self.model.embed(**tokens, sizes=[self.size])[self.size]


class RetrievalObjective(nn.Module):
    """SRL over a fixed size list; with one size and no KL it is plain fine-tuning."""

    def __init__(self, sizes: list[Size], temperature: float, ce_weight: float = 1.0,
                 kl_weight: float = 1.0, teacher: Teacher | None = None, teacher_weight: float = 1.0,
                 anchor_weight: float = 0.0):
        super().__init__()
        if anchor_weight and (teacher is None or teacher.size != max(sizes)):
            raise ValueError("the anchor needs a teacher whose full size is the student's largest size")
        self.sizes = sorted(sizes)
        self.temperature = temperature
        self.ce_weight = ce_weight
        self.kl_weight = kl_weight
        self.teacher = teacher
        self.teacher_weight = teacher_weight
        self.anchor_weight = anchor_weight

    def step_sizes(self, rng: random.Random) -> list[Size]:
        """The sizes trained this step (all of them, every step)."""
        return self.sizes

    def forward(self, model: StarbucksModel, batch, rng: random.Random) -> dict[str, torch.Tensor]:
        sizes = self.step_sizes(rng)
        q = model.embed(**batch.queries, sizes=sizes)
        p = model.embed(**batch.passages, sizes=sizes)
        if self.teacher is None:
            return srl_losses(q, p, batch.group_size, self.temperature, self.ce_weight, self.kl_weight)
        tq, tp = self.teacher.vectors(batch.queries), self.teacher.vectors(batch.passages)
        losses = srl_losses(q, p, batch.group_size, self.temperature, self.ce_weight, self.kl_weight,
                            scores(tq, tp, self.teacher.temperature), self.teacher_weight)
        if self.anchor_weight:
            full = max(q)
            student, frozen = [q[full], p[full]], [tq, tp]
            if batch.anchor_texts is not None:
                student.append(model.embed(**batch.anchor_texts, sizes=[full])[full])
                frozen.append(self.teacher.vectors(batch.anchor_texts))
            losses["anchor"] = self.anchor_weight * anchor(torch.cat(student), torch.cat(frozen))
        return losses
