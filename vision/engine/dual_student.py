"""Dual-student training for weakly supervised segmentation from point labels.

Cho et al., "Finding Meaning in Points: Weakly Supervised Semantic Segmentation for Event
Cameras" (EV-WSSS), ECCV 2024. Two students learn from the same sparse point labels and teach each
other: each one is trained on the other's confident predictions (cross pseudo-labels, restricted to
the classes the frame's point labels say are present) and their features are pulled together
(feature distillation), so the errors of one student are not reinforced by itself.

A LightningModule holds one :class:`DualStudent`; both students are submodules, so both are saved
in checkpoints and restored on resume.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from vision.labels.types import IGNORE_INDEX


class DualStudent(nn.Module):
    """Two student models with cross pseudo-labels and feature distillation (Cho et al. 2024).

    Args:
        student_a: the first student.
        student_b: the second student; when None it is a deep copy of ``student_a`` whose layers are
            re-initialised (``reset_parameters``) from ``seed_b``, so the two start apart.
        seed_b: the seed of that re-initialisation; the global RNG is left untouched.

    ``forward(x)`` returns ``(student_a(x), student_b(x))``.

    >>> dual = DualStudent(nn.Linear(3, 2))
    >>> bool(torch.equal(dual.student_a.weight, dual.student_b.weight))
    False
    >>> sorted(dual.state_dict())
    ['student_a.bias', 'student_a.weight', 'student_b.bias', 'student_b.weight']
    """

    def __init__(self, student_a: nn.Module, student_b: Optional[nn.Module] = None, seed_b: int = 1) -> None:
        super().__init__()
        self.student_a = student_a
        self.student_b = student_b if student_b is not None else reinitialised_copy(student_a, seed_b)

    @classmethod
    def from_factory(cls, factory: Callable[[], nn.Module], seed_a: int = 0, seed_b: int = 1) -> DualStudent:
        """Build both students with ``factory()``, each under its own seed (global RNG untouched)."""
        return cls(_build_seeded(factory, seed_a), _build_seeded(factory, seed_b))

    def forward(self, *args, **kwargs):
        return self.student_a(*args, **kwargs), self.student_b(*args, **kwargs)

    @staticmethod
    def cross_pseudo_labels(
        logits_a: torch.Tensor,
        logits_b: torch.Tensor,
        threshold: float = 0.5,
        present_classes: Optional[torch.Tensor] = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Hard pseudo-labels for each student from the *other* student's detached prediction.

        Args:
            logits_a, logits_b: ``(B, C, ...)`` logits of the two students (``(B, C, H, W)`` for
                event frames, ``(B, C, N)`` for points).
            threshold: a position gets a target only where the other student's probability of its
                top class is strictly greater than this.
            present_classes: ``(B, C)`` bool, the classes that occur in each frame's point labels;
                probabilities are renormalised over them (softmax of the logits with the absent
                classes masked out), so an absent class is never a target. None: all classes.

        Returns:
            ``(targets_for_a, targets_for_b)``, each ``(B, ...)`` int64 class ids with
            :data:`IGNORE_INDEX` where not confident; ``targets_for_a`` comes from ``logits_b``.
            They carry no gradient.
        """
        if logits_a.shape != logits_b.shape:
            raise ValueError(f"logits shapes differ: {tuple(logits_a.shape)} vs {tuple(logits_b.shape)}")
        targets_for_a = confident_targets(logits_b, threshold, present_classes)
        targets_for_b = confident_targets(logits_a, threshold, present_classes)
        return targets_for_a, targets_for_b

    @staticmethod
    def feature_distillation(feat_a: torch.Tensor, feat_b: torch.Tensor) -> torch.Tensor:
        """Symmetric feature distillation between the students: a scalar loss.

        Args:
            feat_a, feat_b: ``(B, D, ...)`` features, channel dimension 1.

        Each feature vector is L2-normalised over ``D``; the loss is the mean over positions of the
        squared distance ``||a - b||^2 = 2 - 2 cos(a, b)`` (summed over ``D``, so its scale does not
        depend on the feature width), averaged over the two directions
        ``0.5 * (d(a, sg(b)) + d(b, sg(a)))`` with ``sg`` = stop-gradient: each student is pulled
        towards the other's current feature as a fixed target, and neither acts as the teacher.
        """
        if feat_a.shape != feat_b.shape or feat_a.dim() < 2:
            raise ValueError(f"features must share a (B, D, ...) shape: {tuple(feat_a.shape)} vs "
                             f"{tuple(feat_b.shape)}")
        unit_a = F.normalize(feat_a, dim=1)
        unit_b = F.normalize(feat_b, dim=1)
        a_to_b = (unit_a - unit_b.detach()).pow(2).sum(dim=1).mean()
        b_to_a = (unit_b - unit_a.detach()).pow(2).sum(dim=1).mean()
        return 0.5 * (a_to_b + b_to_a)


@torch.no_grad()
def confident_targets(
    logits: torch.Tensor, threshold: float = 0.5, present_classes: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Hard targets ``(B, ...)`` int64 from logits ``(B, C, ...)`` where the top probability > threshold.

    ``present_classes`` ``(B, C)`` bool restricts (and renormalises) the softmax to those classes;
    positions of a frame without any present class get :data:`IGNORE_INDEX`.
    """
    if logits.dim() < 2:
        raise ValueError(f"logits must be (B, C, ...), got shape {tuple(logits.shape)}")
    logits = logits.detach().float()
    batch, num_classes = logits.shape[:2]
    if present_classes is None:
        probs = logits.softmax(dim=1)
    else:
        if present_classes.shape != (batch, num_classes) or present_classes.dtype != torch.bool:
            raise ValueError(f"present_classes must be bool of shape ({batch}, {num_classes}), got "
                             f"{present_classes.dtype} {tuple(present_classes.shape)}")
        present = present_classes.to(logits.device).view(batch, num_classes, *([1] * (logits.dim() - 2)))
        # softmax over the present classes only = the full softmax renormalised over them
        probs = logits.masked_fill(~present, float("-inf")).softmax(dim=1)
        probs = torch.nan_to_num(probs, nan=0.0)  # a frame with no present class: all -inf -> NaN -> 0
    confidence, predicted = probs.max(dim=1)
    return torch.where(confidence > threshold, predicted, torch.full_like(predicted, IGNORE_INDEX))


def reinitialised_copy(model: nn.Module, seed: int) -> nn.Module:
    """A deep copy of ``model`` with every layer's ``reset_parameters`` run under ``seed``."""
    clone = copy.deepcopy(model)
    layers = [m for m in clone.modules() if callable(getattr(m, "reset_parameters", None))]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no layer with reset_parameters(); pass student_b "
                         "or use DualStudent.from_factory so the two students start apart")
    with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG stream alone
        torch.manual_seed(seed)
        for layer in layers:
            layer.reset_parameters()
    return clone


def _build_seeded(factory: Callable[[], nn.Module], seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory()
