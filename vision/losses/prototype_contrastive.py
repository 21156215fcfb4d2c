"""Prototype contrastive loss with a per-class memory queue.

Each class keeps a FIFO queue of recent confident, L2-normalised features (memory bank as in MoCo, He et
al., CVPR 2020, kept per class); its prototype is the L2-normalised mean of the filled entries. A selected
feature ``f`` with label ``y`` is pulled to its prototype and pushed from the others with the InfoNCE
form (Oord et al., 2018, Eq. 4), over the classes whose queue is not empty:

    ``loss = -log( exp(<f, P_y> / T) / sum_c exp(<f, P_c> / T) )``, averaged over selected features.

This is the prototype loss of weakly supervised point-cloud / event segmentation (e.g. EV-WSSS, Chuang
et al., ECCV 2024, which also lets two students exchange prototypes: see ``prototypes_override``).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from vision.errors import DataError
from vision.labels.types import IGNORE_INDEX
from vision.losses.partial_cross_entropy import (
    check_class_targets,
    flatten_class_dim,
    flatten_targets,
    zero_with_graph,
)

_WHERE = "PrototypeContrastiveLoss"


def _all_gather_rows(rows: Tensor) -> Tensor:
    """Concatenate ``rows (K_r, ...)`` of every rank in rank order; ``K_r`` may differ between ranks."""
    world = dist.get_world_size()
    size = torch.tensor([rows.shape[0]], device=rows.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    longest = int(max(int(s) for s in sizes))
    padded = rows.new_zeros((longest, *rows.shape[1:]))  # all_gather needs equal shapes on all ranks
    padded[: rows.shape[0]] = rows
    gathered = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded)
    return torch.cat([part[: int(s)] for part, s in zip(gathered, sizes)])


class PrototypeContrastiveLoss(nn.Module):
    """InfoNCE between features and per-class prototypes kept in FIFO memory queues.

    Args:
        num_classes: ``C``.
        feature_dim: ``D``.
        queue_size: ``Q``, entries kept per class.
        confidence: a feature is used (in ``update`` and ``forward``) only if its confidence is above this.
        temperature: ``T``.

    Buffers (saved in checkpoints): ``queue (C, Q, D)``, ``queue_ptr (C,)`` next slot to write,
    ``queue_count (C,)`` filled slots.

    Shapes: ``features (N, D) | (B, D, N) | (B, D, H, W)`` (feature dim = 1 as for logits, rows for 2-D);
    ``labels`` and ``confidences`` ``(N,) | (B, N) | (B, H, W)``, IGNORE_INDEX where unlabelled.
    Call ``forward`` (loss against the prototypes of earlier steps) and then ``update`` with the batch.
    """

    def __init__(self, num_classes: int, feature_dim: int, queue_size: int = 200, confidence: float = 0.7,
                 temperature: float = 0.1) -> None:
        super().__init__()
        if num_classes < 1 or feature_dim < 1 or queue_size < 1 or temperature <= 0:
            raise DataError(_WHERE, "num_classes, feature_dim, queue_size and temperature must be positive")
        self.num_classes = int(num_classes)
        self.feature_dim = int(feature_dim)
        self.queue_size = int(queue_size)
        self.confidence = float(confidence)
        self.temperature = float(temperature)
        self.register_buffer("queue", torch.zeros(num_classes, queue_size, feature_dim))
        self.register_buffer("queue_ptr", torch.zeros(num_classes, dtype=torch.long))
        self.register_buffer("queue_count", torch.zeros(num_classes, dtype=torch.long))

    def _select(self, features: Tensor, labels: Tensor, confidences: Optional[Tensor]):
        """Rows ``(K, D)``, labels ``(K,)`` and confidences ``(K,)`` of labelled, confident entries."""
        rows = flatten_class_dim(features, f"{_WHERE}.features")
        if rows.shape[1] != self.feature_dim:
            raise DataError(f"{_WHERE}.features", f"feature dim {rows.shape[1]} != {self.feature_dim}")
        flat_labels = flatten_targets(labels, features, f"{_WHERE}.labels")
        check_class_targets(flat_labels, self.num_classes, f"{_WHERE}.labels")
        flat_labels = flat_labels.long()
        if confidences is None:
            flat_conf = torch.ones(flat_labels.shape, device=rows.device)  # human labels: confidence 1
        else:
            flat_conf = flatten_targets(confidences, features, f"{_WHERE}.confidences").to(rows.device).float()
        keep = (flat_labels != IGNORE_INDEX) & (flat_conf > self.confidence)
        return rows[keep], flat_labels[keep], flat_conf[keep]

    @torch.no_grad()
    def update(self, features: Tensor, labels: Tensor, confidences: Optional[Tensor] = None) -> None:
        """Enqueue detached, L2-normalised confident features; gathers from all ranks when distributed.

        At most ``queue_size`` features per class per call, highest confidence first (ties keep input order).
        """
        rows, flat_labels, flat_conf = self._select(features, labels, confidences)
        rows = F.normalize(rows.detach().float(), dim=1)
        if dist.is_available() and dist.is_initialized():  # every rank keeps the same queue
            rows, flat_labels, flat_conf = (_all_gather_rows(t) for t in (rows, flat_labels, flat_conf))
        order = torch.sort(flat_conf, descending=True, stable=True).indices
        rows, flat_labels = rows[order], flat_labels[order]
        for cls in torch.unique(flat_labels).tolist():
            picked = rows[flat_labels == cls][: self.queue_size]
            count = picked.shape[0]
            slots = (self.queue_ptr[cls] + torch.arange(count, device=picked.device)) % self.queue_size
            self.queue[cls, slots] = picked.to(self.queue.dtype)
            self.queue_ptr[cls] = (self.queue_ptr[cls] + count) % self.queue_size
            self.queue_count[cls] = torch.clamp(self.queue_count[cls] + count, max=self.queue_size)

    def prototypes(self) -> tuple[Tensor, Tensor]:
        """``(C, D)`` L2-normalised mean of each class's filled queue entries, and ``(C,)`` bool "has one".

        Rows of classes with an empty queue are zero. The pair can be passed to another model's
        ``forward(..., prototypes_override=...)``.
        """
        filled = torch.arange(self.queue_size, device=self.queue.device) < self.queue_count[:, None]  # (C, Q)
        sums = (self.queue * filled[..., None]).sum(dim=1)
        means = sums / self.queue_count.clamp(min=1)[:, None].to(sums.dtype)
        return F.normalize(means, dim=1), self.queue_count > 0

    def forward(self, features: Tensor, labels: Tensor, confidences: Optional[Tensor] = None,
                prototypes_override: Optional[tuple[Tensor, Tensor]] = None) -> Tensor:
        """Mean InfoNCE loss of the selected features; 0 (still connected to ``features``) when none.

        Args:
            prototypes_override: ``(prototypes (C, D), present (C,) bool)`` to use instead of this
                module's own, e.g. the other student's ``prototypes()`` (detached here).
        """
        rows, flat_labels, _ = self._select(features, labels, confidences)
        if prototypes_override is None:
            protos, present = self.prototypes()
        else:
            protos, present = prototypes_override
            if tuple(protos.shape) != (self.num_classes, self.feature_dim) or present.shape != (self.num_classes,):
                raise DataError(f"{_WHERE}.prototypes_override",
                                f"expected ((C, D), (C,)) = (({self.num_classes}, {self.feature_dim}), "
                                f"({self.num_classes},)), got ({tuple(protos.shape)}, {tuple(present.shape)})")
            protos = F.normalize(protos.detach().float(), dim=1)
        present = present.to(device=rows.device, dtype=torch.bool)
        usable = present[flat_labels]  # a feature whose class has no prototype has no positive
        rows, flat_labels = rows[usable], flat_labels[usable]
        similarity = F.normalize(rows, dim=1) @ protos.to(rows.device, rows.dtype).T / self.temperature
        similarity = similarity.masked_fill(~present, float("-inf"))  # empty classes leave the softmax
        per_feature = F.cross_entropy(similarity, flat_labels, reduction="none")
        return per_feature.sum() / max(per_feature.shape[0], 1) + zero_with_graph(features)
