"""Helpers of the EV-WSSS task (:mod:`vision.tasks.events`): restricted predictions and the choice of the
pixels that enter the prototype contrastive loss.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from vision.labels.types import IGNORE_INDEX


@torch.no_grad()
def restricted_prediction(logits: Tensor, present: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    """``(confidence, class)`` each ``(B, H, W)`` from ``logits (B, C, H, W)``, the softmax renormalised
    over the ``present (B, C)`` classes (all classes when None), as EV-WSSS restricts its pseudo-labels."""
    logits = logits.detach().float()
    if present is not None:
        logits = logits.masked_fill(~present[:, :, None, None], float("-inf"))
    probs = torch.nan_to_num(logits.softmax(dim=1), nan=0.0)  # a frame without present classes -> 0
    return probs.max(dim=1)


def class_balanced_sample(labels: Tensor, budget: int) -> Tensor:
    """Sorted indices ``(K,)`` into ``labels (N,)`` of a class-balanced random sample of ``budget`` entries.

    Each class present gets an equal share of the budget; a class with fewer entries keeps all of them and
    what it leaves is spread over the others (the largest classes get the rounding remainder). The budget
    is raised to the number of classes present, so every class keeps at least one entry. All ``N`` are kept,
    and no random number is drawn, when ``N <= budget``. Random picks use torch's global generator.
    """
    n = labels.numel()
    if n <= budget:
        return torch.arange(n, device=labels.device)
    # hand-written: torch.utils.data's samplers draw per-sample weights, not exact per-class quotas
    counts = torch.unique(labels, return_counts=True)[1]
    sizes = counts.tolist()
    left, quotas = max(budget, len(sizes)), [0] * len(sizes)
    for done, i in enumerate(sorted(range(len(sizes)), key=sizes.__getitem__)):  # water-filling, smallest first
        quotas[i] = min(sizes[i], left // (len(sizes) - done))
        left -= quotas[i]
    shuffled = torch.randperm(n, device=labels.device)
    grouped = shuffled[torch.sort(labels[shuffled], stable=True).indices]  # by class, random within each
    rank = torch.arange(n, device=labels.device) - (counts.cumsum(0) - counts).repeat_interleave(counts)
    keep = rank < torch.tensor(quotas, device=labels.device).repeat_interleave(counts)
    return grouped[keep].sort().values


def contrastive_labels(target: Tensor, confidence: Tensor, predicted: Tensor) -> tuple[Tensor, Tensor]:
    """Human labels (confidence 1) where ``target`` has one, predicted classes with their confidence elsewhere."""
    labelled = target != IGNORE_INDEX
    return torch.where(labelled, target, predicted), torch.where(labelled, torch.ones_like(confidence), confidence)
