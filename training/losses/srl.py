"""Starbucks Representation Learning (SRL), the paper's retrieval recipe.

Every size of a fixed list comes from one forward pass; each gets a contrastive
cross-entropy over in-batch and hard negatives, and every smaller size a KL term
pulling its score distribution toward the (detached) full size's. All summed.
"""
from __future__ import annotations

import random

import torch
from torch import nn

from starbucks.model import StarbucksModel
from starbucks.sizes import Size
from training.losses.common import contrastive_ce, distribution_kl, scores


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
    def scores(self, batch) -> torch.Tensor:
        q = self.model.embed(**batch.queries, sizes=[self.size])[self.size]
        p = self.model.embed(**batch.passages, sizes=[self.size])[self.size]
        return scores(q, p, self.temperature)


class RetrievalObjective(nn.Module):
    """SRL over a fixed size list; with one size and no KL it is plain fine-tuning."""

    def __init__(self, sizes: list[Size], temperature: float, ce_weight: float = 1.0,
                 kl_weight: float = 1.0, teacher: Teacher | None = None, teacher_weight: float = 1.0):
        super().__init__()
        self.sizes = sorted(sizes)
        self.temperature = temperature
        self.ce_weight = ce_weight
        self.kl_weight = kl_weight
        self.teacher = teacher
        self.teacher_weight = teacher_weight

    def step_sizes(self, rng: random.Random) -> list[Size]:
        """The sizes trained this step (all of them, every step)."""
        return self.sizes

    def forward(self, model: StarbucksModel, batch, rng: random.Random) -> dict[str, torch.Tensor]:
        sizes = self.step_sizes(rng)
        q = model.embed(**batch.queries, sizes=sizes)
        p = model.embed(**batch.passages, sizes=sizes)
        teacher_scores = self.teacher.scores(batch) if self.teacher else None
        return srl_losses(q, p, batch.group_size, self.temperature, self.ce_weight, self.kl_weight,
                          teacher_scores, self.teacher_weight)
