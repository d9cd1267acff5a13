"""The adaptor objective: SRL's per-size terms on cached vectors of a frozen backbone.

Each size's score distribution over a step's sampled passages is pulled toward the
frozen full size's (KL, label-free), plus a cross-entropy where a query has a judged
positive among the passages. Summed over the sizes trained, no per-size weights.
"""
from __future__ import annotations

import torch

from starbucks.sizes import Size
from training.losses.common import contrastive_ce, distribution_kl, scores

MASKED = -1e4  # a score no passage reaches: excluded from both distributions, without NaNs


def adaptor_losses(
    q: dict[Size, torch.Tensor], p: dict[Size, torch.Tensor], teacher_scores: torch.Tensor, temperature: float,
    labelled: bool = False, mask: torch.Tensor | None = None, ce_weight: float = 1.0, kl_weight: float = 1.0,
) -> dict[str, torch.Tensor]:
    """One loss per size: KL toward ``teacher_scores`` (queries x passages, already scaled), plus,
    when ``labelled``, cross-entropy with query i's positive at passage i. ``mask`` (True = drop)
    removes pairs such as a passage used as its own query."""
    if mask is not None:
        teacher_scores = teacher_scores.masked_fill(mask, MASKED)
    losses = {}
    for size in sorted(q):
        s = scores(q[size], p[size], temperature)
        if mask is not None:
            s = s.masked_fill(mask, MASKED)
        loss = kl_weight * distribution_kl(s, teacher_scores)
        if labelled and ce_weight:
            loss = loss + ce_weight * contrastive_ce(s, 1)
        losses[str(size)] = loss
    return losses
