"""Learning-rate and loss-weight schedules shared by the tasks."""

from __future__ import annotations

import math

import torch


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0,
                  floor: float = 0.01) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step factor: linear warm-up from ``floor`` over ``warmup_steps``, then cosine down to ``floor``.

    >>> optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    >>> schedule = warmup_cosine(optimizer, total_steps=10, warmup_steps=2, floor=0.1)
    >>> [round(schedule.lr_lambdas[0](s), 3) for s in (0, 1, 2, 6, 10)]
    [0.1, 0.55, 1.0, 0.55, 0.1]
    """
    total, warmup = max(int(total_steps), 1), max(int(warmup_steps), 0)

    def factor(step: int) -> float:
        if step < warmup:  # from-scratch models diverge at the full rate
            return floor + (1.0 - floor) * step / warmup
        t = min((step - warmup) / max(total - warmup, 1), 1.0)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def rampup(step: int, length: int) -> float:
    """Sigmoid ramp-up ``exp(-5 (1 - t)^2)``, ``t = step / length`` clipped to [0, 1], of the unsupervised
    loss weights (Laine & Aila, ICLR 2017). A step before 0 (still in burn-in) gives ``exp(-5)``."""
    if length <= 0:
        return 1.0
    t = min(max(step / length, 0.0), 1.0)
    return math.exp(-5.0 * (1.0 - t) ** 2)
