"""2DMSE as sentence-transformers' ``Matryoshka2dLoss`` does it, on retrieval scores.

Each step: the last layer at one random dim, plus one random earlier layer at one
random dim (CE each, weight 1), plus a KL pulling the earlier layer's full-width
embedding toward the last layer's (teacher detached, temperature 0.3, the KL scaled
by that temperature as ``AdaptiveLayerLoss`` scales it).
"""
from __future__ import annotations

import random

import torch
import torch.nn.functional as F
from torch import nn

from starbucks.model import StarbucksModel
from starbucks.sizes import Size
from training.losses.common import contrastive_ce, scores


def sample_sizes(num_layers: int, dims: list[int], rng: random.Random) -> tuple[Size, Size]:
    """(last layer, random dim) and (random earlier layer, random dim)."""
    last = Size(num_layers, rng.choice(dims))
    earlier = Size(rng.randrange(1, num_layers), rng.choice(dims))
    return last, earlier


class TwoDMSEObjective(nn.Module):
    def __init__(self, num_layers: int, hidden: int, dims: list[int], temperature: float,
                 kl_weight: float = 1.0, kl_temperature: float = 0.3):
        super().__init__()
        if num_layers < 2:
            raise ValueError("2DMSE needs a model with at least 2 layers")
        self.num_layers = num_layers
        self.hidden = hidden
        self.dims = sorted(set(dims))
        self.temperature = temperature
        self.kl_weight = kl_weight
        self.kl_temperature = kl_temperature

    def forward(self, model: StarbucksModel, batch, rng: random.Random) -> dict[str, torch.Tensor]:
        last, earlier = sample_sizes(self.num_layers, self.dims, rng)
        wide_last, wide_earlier = Size(last.layer, self.hidden), Size(earlier.layer, self.hidden)
        sizes = {last, earlier, wide_last, wide_earlier}
        q = model.embed(**batch.queries, sizes=sizes)
        p = model.embed(**batch.passages, sizes=sizes)
        losses = {}
        for size in (last, earlier):
            s = scores(q[size], p[size], self.temperature)
            losses[str(size)] = contrastive_ce(s, batch.group_size)
        t = self.kl_temperature
        student = torch.cat([q[wide_earlier], p[wide_earlier]]).float() / t
        teacher = torch.cat([q[wide_last], p[wide_last]]).float().detach() / t
        kl = F.kl_div(F.log_softmax(student, -1), F.softmax(teacher, -1), reduction="batchmean")
        losses["kl"] = kl * t * self.kl_weight
        return losses
