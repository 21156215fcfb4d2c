"""Consistency between two views' predictions at corresponding entries.

Mean-teacher style consistency (Tarvainen & Valpola, "Mean teachers are better role models", NeurIPS
2017, Eq. 1 with the squared error of softmax outputs) or its KL form (as in UDA, Xie et al., NeurIPS
2020, Eq. 1). View ``b`` is the target: it is detached, and only view ``a`` gets a gradient.

Two views of a point cloud or an event frame rarely share an entry order (different crops, subsampling,
flips), so corresponding entries are given by ``index_a`` / ``index_b``: integer row indices into the
flattened entries of each view (row ``m`` = entry ``m`` of the row-major ``(B, *spatial)`` order; see
:mod:`vision.losses.partial_cross_entropy`), or boolean masks over them.
"""

from __future__ import annotations

from typing import Literal, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vision.errors import DataError
from vision.losses.partial_cross_entropy import flatten_class_dim, zero_with_graph

_WHERE = "ConsistencyLoss"


def _pick(rows: Tensor, index: Optional[Tensor], where: str) -> Tensor:
    """``rows (M, C)`` at ``index`` (``(K,)`` int rows or ``(M,)`` bool mask), all rows when None."""
    if index is None:
        return rows
    index = index.to(rows.device)
    if index.dtype == torch.bool:
        if index.shape != (rows.shape[0],):
            raise DataError(where, f"bool mask shape {tuple(index.shape)} != ({rows.shape[0]},)")
        return rows[index]
    if index.dim() != 1 or index.is_floating_point():
        raise DataError(where, f"expected a (K,) integer index, got {tuple(index.shape)} {index.dtype}")
    if index.numel() and bool((index.min() < 0) | (index.max() >= rows.shape[0])):
        raise DataError(where, f"index outside [0, {rows.shape[0]})")
    return rows[index.long()]


class ConsistencyLoss(nn.Module):
    """KL or squared-error consistency of ``softmax(logits_a / T)`` to the detached ``softmax(logits_b / T)``.

    Args:
        kind: ``"kl"``: ``sum_c q_b(c) (log q_b(c) - log p_a(c))`` per entry; ``"mse"``: ``mean_c (p_a(c) -
            q_b(c))^2`` per entry.
        temperature: ``T``, dividing both views' logits before the softmax.

    Shapes: ``logits_a``, ``logits_b``: ``(M, C) | (B, C, N) | (B, C, H, W)`` (the two may differ in size);
    ``index_a``, ``index_b``: ``(K,)`` int rows or bool masks selecting the corresponding entries (the
    same count ``K`` from each); ``weight``: ``(K,)`` non-negative, no gradient. Returns the weighted mean over the
    ``K`` pairs, ``sum_k w_k l_k / sum_k w_k`` (plain mean without ``weight``), 0 when ``K == 0`` or all
    weights are 0.
    """

    def __init__(self, kind: Literal["kl", "mse"] = "kl", temperature: float = 1.0) -> None:
        super().__init__()
        if kind not in ("kl", "mse"):
            raise DataError(_WHERE, f"kind must be 'kl' or 'mse', got {kind!r}")
        if temperature <= 0:
            raise DataError(_WHERE, f"temperature must be > 0, got {temperature}")
        self.kind = kind
        self.temperature = float(temperature)

    def forward(self, logits_a: Tensor, logits_b: Tensor, index_a: Optional[Tensor] = None,
                index_b: Optional[Tensor] = None, weight: Optional[Tensor] = None) -> Tensor:
        rows_a = _pick(flatten_class_dim(logits_a, f"{_WHERE}.logits_a"), index_a, f"{_WHERE}.index_a")
        rows_b = _pick(flatten_class_dim(logits_b.detach(), f"{_WHERE}.logits_b"), index_b, f"{_WHERE}.index_b")
        if rows_a.shape != rows_b.shape:
            raise DataError(_WHERE, f"views select {tuple(rows_a.shape)} and {tuple(rows_b.shape)} entries x "
                                    "classes; they must correspond one to one")
        log_p_a = (rows_a / self.temperature).log_softmax(dim=1)
        q_b = (rows_b / self.temperature).softmax(dim=1).to(log_p_a.dtype)
        if self.kind == "kl":
            per_entry = F.kl_div(log_p_a, q_b, reduction="none").sum(dim=1)
        else:
            per_entry = (log_p_a.exp() - q_b).pow(2).mean(dim=1)
        if weight is None:
            weight = torch.ones_like(per_entry)
        elif weight.shape != per_entry.shape or bool((weight < 0).any()):
            raise DataError(f"{_WHERE}.weight", f"expected ({per_entry.shape[0]},) non-negative weights, "
                                                f"got shape {tuple(weight.shape)}")
        weight = weight.to(per_entry.device, per_entry.dtype).detach()
        loss = (per_entry * weight).sum() / weight.sum().clamp(min=torch.finfo(per_entry.dtype).tiny)
        return loss + zero_with_graph(logits_a)
