"""Score-level pieces shared by the retrieval objectives."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def scores(q: torch.Tensor, p: torch.Tensor, temperature: float) -> torch.Tensor:
    """Every query against every passage of the batch (in-batch negatives included)."""
    return q @ p.T / temperature


def contrastive_ce(s: torch.Tensor, group_size: int) -> torch.Tensor:
    """Cross-entropy where query i's positive is passage i * group_size."""
    target = torch.arange(s.shape[0], device=s.device) * group_size
    return F.cross_entropy(s.float(), target)


def distribution_kl(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """KL(softmax(teacher) || softmax(student)) per row, averaged over rows (batchmean)."""
    return F.kl_div(
        F.log_softmax(student.float(), dim=-1), F.log_softmax(teacher.float(), dim=-1),
        reduction="batchmean", log_target=True,
    )


def anchor(student: torch.Tensor, frozen: torch.Tensor) -> torch.Tensor:
    """Mean 1 - cosine between each vector and the frozen model's vector of the same text."""
    return (1 - F.cosine_similarity(student.float(), frozen.float(), dim=-1)).mean()
