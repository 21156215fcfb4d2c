"""Partial cross-entropy: supervise only the labelled targets of a sparse-label sample.

The loss of weakly supervised segmentation from points (e.g. Hu et al., "SQN: Weakly-Supervised Semantic
Segmentation of Large-Scale 3D Point Clouds", ECCV 2022, Eq. 1; Tang et al., "On Regularized Losses for
Weakly-supervised CNN Segmentation", ECCV 2018, the "partial cross-entropy"): the usual cross-entropy,
averaged over the entries whose target is not :data:`~vision.labels.types.IGNORE_INDEX`.

Layout shared by every loss in :mod:`vision.losses` (class or feature dim = 1):

* points: ``logits (B, C, N)``, ``targets (B, N)``
* pixels: ``logits (B, C, H, W)``, ``targets (B, H, W)``
* flat:   ``logits (N, C)``, ``targets (N,)`` - a 2-D tensor is always read as rows of entries.

:func:`flatten_class_dim` and :func:`flatten_targets` turn all three into rows ``(M, C)`` / ``(M,)``,
row ``m`` being entry ``m`` of the row-major ``(B, *spatial)`` order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vision.errors import DataError
from vision.labels.types import IGNORE_INDEX


def flatten_class_dim(values: Tensor, where: str) -> Tensor:
    """``(B, C, *spatial)`` or ``(N, C)`` -> ``(M, C)`` rows, ``M = B * prod(spatial)`` or ``N``.

    ``where`` names the argument in the :class:`~vision.errors.DataError` raised for a bad shape.
    """
    if not isinstance(values, Tensor) or values.dim() < 2:
        shape = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
        raise DataError(where, f"expected (N, C) or (B, C, ...) tensor, got {shape}")
    if values.dim() == 2:
        return values
    return values.movedim(1, -1).reshape(-1, values.shape[1])


def entry_shape(values: Tensor) -> tuple[int, ...]:
    """Shape of the per-entry tensors (targets, masks) that go with ``values``: ``(N,)`` or ``(B, *spatial)``."""
    if values.dim() == 2:
        return (values.shape[0],)
    return (values.shape[0], *values.shape[2:])


def flatten_targets(targets: Tensor, values: Tensor, where: str) -> Tensor:
    """Per-entry ``targets`` (``(N,)`` or ``(B, *spatial)``, matching ``values``) -> ``(M,)``."""
    expected = entry_shape(values)
    if not isinstance(targets, Tensor) or tuple(targets.shape) != expected:
        shape = tuple(targets.shape) if isinstance(targets, Tensor) else type(targets).__name__
        raise DataError(where, f"shape {shape} does not match {expected} (the input without its class dim)")
    return targets.reshape(-1)


def check_class_targets(targets: Tensor, num_classes: int, where: str) -> None:
    """Raise :class:`DataError` unless ``targets`` are integers in ``[0, C)`` or IGNORE_INDEX."""
    if targets.dtype in (torch.bool,) or targets.is_floating_point() or targets.is_complex():
        raise DataError(where, f"class targets must be an integer tensor, got {targets.dtype}")
    labelled = targets != IGNORE_INDEX
    # One host sync, so a bad id is reported here instead of as a device assert inside cross_entropy.
    if bool(((targets[labelled] < 0) | (targets[labelled] >= num_classes)).any()):
        bad = targets[labelled][(targets[labelled] < 0) | (targets[labelled] >= num_classes)]
        raise DataError(where, f"class id {int(bad[0])} outside [0, {num_classes}) and not IGNORE_INDEX")


def zero_with_graph(*tensors: Tensor) -> Tensor:
    """A scalar 0 connected to ``tensors``, so ``backward()`` works (and gives zero gradients)."""
    return sum(t.sum() * 0.0 for t in tensors)


#: The ``mode`` values of :func:`class_weights_from_counts` (the tasks' ``class_weighting`` option).
CLASS_WEIGHTING_MODES = ("inverse", "inverse_sqrt", "none")


def class_weights_from_counts(
    counts: Union[Sequence[float], Tensor],
    mode: Literal["inverse", "inverse_sqrt", "none"] = "inverse",
) -> Tensor:
    """Per-class cross-entropy weights from the WEAK label counts (the ``counts`` of a weak-label file).

    ``inverse`` gives ``1 / n_c``, ``inverse_sqrt`` gives ``1 / sqrt(n_c)``, ``none`` gives ones; the
    weights of present classes (``n_c > 0``) are then scaled to mean 1. Absent classes (``n_c == 0``)
    get weight 1.0: pseudo-labels of a class the weak labels missed still count, and a zero weight can
    never turn the loss into 0 / 0.

    Args:
        counts: ``(C,)`` non-negative label counts per class.
        mode: see above.

    Returns:
        ``(C,)`` float32 weights.

    >>> class_weights_from_counts([1, 3, 0], mode="inverse").tolist()
    [1.5, 0.5, 1.0]
    """
    counts_t = torch.as_tensor(counts, dtype=torch.float64).reshape(-1)
    if counts_t.numel() == 0 or not bool(torch.isfinite(counts_t).all()) or bool((counts_t < 0).any()):
        raise DataError("class_weights_from_counts", f"counts must be finite and >= 0, got {counts_t.tolist()}")
    if mode not in CLASS_WEIGHTING_MODES:
        raise DataError("class_weights_from_counts", f"unknown mode {mode!r} (inverse, inverse_sqrt, none)")
    present = counts_t > 0
    weights = torch.ones_like(counts_t)
    if mode != "none" and bool(present.any()):
        power = 1.0 if mode == "inverse" else 0.5
        raw = counts_t[present].pow(-power)
        weights[present] = raw / raw.mean()
    return weights.float()


class PartialCrossEntropy(nn.Module):
    """Cross-entropy over labelled targets only; entries with IGNORE_INDEX send no gradient.

    Args:
        class_weights: optional ``(C,)`` weights (see :func:`class_weights_from_counts`); the mean is
            then the weighted mean, ``sum_i w[y_i] * ce_i / sum_i w[y_i]``, as in
            :func:`torch.nn.functional.cross_entropy`.
        label_smoothing: as in :func:`torch.nn.functional.cross_entropy`.

    Shapes: ``logits (B, C, N) | (B, C, H, W) | (N, C)``, ``targets (B, N) | (B, H, W) | (N,)`` int,
    IGNORE_INDEX where unlabelled. Returns a scalar; 0 (still connected to ``logits``) when nothing is
    labelled, never NaN.

    >>> loss = PartialCrossEntropy()
    >>> logits = torch.zeros(1, 2, 3, requires_grad=True)
    >>> round(loss(logits, torch.tensor([[0, IGNORE_INDEX, 1]])).item(), 4)  # log(2)
    0.6931
    """

    def __init__(self, class_weights: Optional[list[float]] = None, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise DataError("PartialCrossEntropy", f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)
        weights = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        if weights is not None and (weights.dim() != 1 or bool((weights < 0).any())):
            raise DataError("PartialCrossEntropy", "class_weights must be a list of non-negative numbers")
        # Not persistent: the weights are configuration (hyper-parameters), not learnt state.
        self.register_buffer("class_weights", weights, persistent=False)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        rows = flatten_class_dim(logits, "PartialCrossEntropy.logits")
        flat_targets = flatten_targets(targets, logits, "PartialCrossEntropy.targets")
        num_classes = rows.shape[1]
        check_class_targets(flat_targets, num_classes, "PartialCrossEntropy.targets")
        weight = self.class_weights
        if weight is not None and weight.numel() != num_classes:
            raise DataError("PartialCrossEntropy", f"{weight.numel()} class weights for {num_classes} classes")
        flat_targets = flat_targets.long()
        per_entry = F.cross_entropy(rows, flat_targets, weight=weight, ignore_index=IGNORE_INDEX,
                                    reduction="none", label_smoothing=self.label_smoothing)
        labelled = flat_targets != IGNORE_INDEX
        safe_targets = flat_targets.clamp(min=0)
        entry_weight = labelled.to(rows.dtype) if weight is None else weight[safe_targets] * labelled
        # Sum / weight-sum instead of reduction="mean": the same value, but 0 (not NaN) when nothing is labelled.
        return per_entry.sum() / entry_weight.sum().clamp(min=torch.finfo(rows.dtype).tiny)
