"""Pseudo-label loss: train a student on a teacher's confident predictions.

Fixed threshold as in FixMatch (Sohn et al., NeurIPS 2020, Eq. 4): hard target ``argmax q`` where
``max q > tau``, the loss averaged over all valid entries (entries that fail the threshold count as 0).
Adaptive thresholds as in FreeMatch (Wang et al., "FreeMatch: Self-adaptive Thresholding for
Semi-supervised Learning", ICLR 2023, Eqs. 4-7), with EMA momentum ``lambda``:

* global   ``tau_t    = lambda * tau_{t-1}  + (1 - lambda) * mean_b max_c q_b(c)``      (Eq. 4, tau_0 = 1/C)
* per class ``p_t(c)  = lambda * p_{t-1}(c) + (1 - lambda) * mean_b q_b(c)``           (Eq. 5, p_0 = 1/C)
* threshold ``tau_t(c) = p_t(c) / max_c' p_t(c') * tau_t``                             (Eq. 6)
* mask      ``max q_b > tau_t(argmax q_b)``                                            (Eq. 7)

The statistics are updated from the current teacher batch before masking (as in the authors' code) and
only in training mode. With ``restrict_to_present`` the teacher's probabilities are first renormalised
over the classes present in the sample's weak labels, as EV-WSSS does for event-camera segmentation.
"""

from __future__ import annotations

from typing import Literal, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from vision.errors import DataError
from vision.losses.partial_cross_entropy import flatten_class_dim, flatten_targets

_WHERE = "PseudoLabelLoss"


class PseudoLabelLoss(nn.Module):
    """Hard or soft pseudo-label loss with a fixed or FreeMatch self-adaptive confidence threshold.

    Args:
        threshold: fixed confidence threshold (ignored when ``adaptive``).
        soft: False: cross-entropy to the teacher's argmax; True: ``KL(q_teacher || p_student)`` to the
            teacher's full distribution. Either is masked by the confidence test.
        adaptive: use FreeMatch self-adaptive thresholds instead of ``threshold``.
        ema_momentum: FreeMatch's ``lambda``.
        restrict_to_present: renormalise teacher probabilities over the classes in ``present_classes``.
        num_classes: ``C``; sizes the FreeMatch buffers up front. When None they are sized at the first
            update (and on ``load_state_dict``).
        teacher_inputs: whether the second ``forward`` argument holds ``"logits"`` or ``"probs"``.

    Shapes (see :mod:`vision.losses.partial_cross_entropy` for the layout):
        ``student_logits``, ``teacher``: ``(B, C, N) | (B, C, H, W) | (N, C)``;
        ``present_classes``: ``(B, C)`` bool (``(N, C)`` or ``(1, C)`` for the flat layout);
        ``valid``: ``(B, N) | (B, H, W) | (N,)`` bool, False for entries that get no pseudo-label (padding,
        entries already carrying a human label). Returns a scalar.

    After each forward, :attr:`last_mask_ratio` is the fraction of valid entries that passed and
    :attr:`thresholds` the ``(C,)`` class thresholds used, both detached, for logging.
    """

    def __init__(self, threshold: float = 0.95, soft: bool = False, adaptive: bool = False,
                 ema_momentum: float = 0.999, restrict_to_present: bool = False,
                 num_classes: Optional[int] = None,
                 teacher_inputs: Literal["logits", "probs"] = "logits") -> None:
        super().__init__()
        if not 0.0 <= threshold <= 1.0 or not 0.0 <= ema_momentum < 1.0:
            raise DataError(_WHERE, f"need 0 <= threshold <= 1 and 0 <= ema_momentum < 1, got {threshold}, "
                                    f"{ema_momentum}")
        if teacher_inputs not in ("logits", "probs"):
            raise DataError(_WHERE, f"teacher_inputs must be 'logits' or 'probs', got {teacher_inputs!r}")
        self.threshold = float(threshold)
        self.soft = soft
        self.adaptive = adaptive
        self.ema_momentum = float(ema_momentum)
        self.restrict_to_present = restrict_to_present
        self.teacher_inputs = teacher_inputs
        size = 0 if num_classes is None else int(num_classes)
        # Buffers, so the FreeMatch state is saved in checkpoints and restored with them.
        self.register_buffer("global_threshold", torch.full((), 1.0 / size if size else 0.0))
        self.register_buffer("class_probability", torch.full((size,), 1.0 / size if size else 0.0))
        self.last_mask_ratio: Tensor = torch.zeros(())
        self._last_thresholds: Optional[Tensor] = None

    @property
    def thresholds(self) -> Tensor:
        """``(C,)`` class thresholds: FreeMatch's ``tau_t(c)`` or the fixed threshold repeated."""
        if self.adaptive and self.class_probability.numel():
            return self._class_thresholds().detach()
        if self._last_thresholds is not None:
            return self._last_thresholds
        return torch.full((max(self.class_probability.numel(), 1),), self.threshold)

    def _class_thresholds(self) -> Tensor:
        return self.class_probability / self.class_probability.max() * self.global_threshold

    def forward(self, student_logits: Tensor, teacher_logits_or_probs: Tensor,
                present_classes: Optional[Tensor] = None, valid: Optional[Tensor] = None) -> Tensor:
        student = flatten_class_dim(student_logits, f"{_WHERE}.student_logits")
        if teacher_logits_or_probs.shape != student_logits.shape:
            raise DataError(f"{_WHERE}.teacher_logits_or_probs", f"shape {tuple(teacher_logits_or_probs.shape)} "
                                                                f"!= student shape {tuple(student_logits.shape)}")
        teacher = teacher_logits_or_probs.detach()  # the teacher never gets a gradient
        probs = teacher.softmax(dim=1) if self.teacher_inputs == "logits" else teacher.float()
        if self.restrict_to_present:
            probs = self._restrict(probs, present_classes)
        probs = flatten_class_dim(probs, f"{_WHERE}.teacher_logits_or_probs")
        keep = torch.ones(student.shape[0], dtype=torch.bool, device=student.device)
        if valid is not None:
            keep = flatten_targets(valid, student_logits, f"{_WHERE}.valid").to(student.device).bool()
        if self.adaptive and self.training:
            self._update_freematch(probs[keep])
        confidence, hard_target = probs.max(dim=1)
        class_threshold = self._current_thresholds(probs.shape[1], probs.device)
        passed = (confidence > class_threshold[hard_target]) & keep
        self.last_mask_ratio = (passed.sum() / keep.sum().clamp(min=1)).detach().float()
        if self.soft:
            per_entry = F.kl_div(student.log_softmax(dim=1), probs.to(student.dtype), reduction="none").sum(1)
        else:
            per_entry = F.cross_entropy(student, hard_target, reduction="none")
        # FixMatch's normalisation: divide by all valid entries, so the weight grows as more pass;
        # the clamp makes it 0 (still connected to the student) when nothing is valid.
        return (per_entry * passed).sum() / keep.sum().clamp(min=1)

    def _restrict(self, probs: Tensor, present_classes: Optional[Tensor]) -> Tensor:
        """Renormalise ``probs (B, C, ...)`` over present classes; a sample with none keeps its probs."""
        if present_classes is None:
            raise DataError(f"{_WHERE}.present_classes", "required when restrict_to_present=True")
        batch, num_classes = probs.shape[:2]
        present = present_classes.to(device=probs.device, dtype=torch.bool)
        ok_rows = present.shape[0] in (1, batch) if probs.dim() == 2 else present.shape[0] == batch
        if present.dim() != 2 or present.shape[1] != num_classes or not ok_rows:
            raise DataError(f"{_WHERE}.present_classes",
                            f"shape {tuple(present.shape)} does not fit teacher {tuple(probs.shape)}")
        present = present | ~present.any(dim=1, keepdim=True)  # no weak labels: no restriction
        present = present.reshape(present.shape + (1,) * (probs.dim() - 2))
        masked = probs * present
        return masked / masked.sum(dim=1, keepdim=True).clamp(min=torch.finfo(probs.dtype).tiny)

    def _current_thresholds(self, num_classes: int, device: torch.device) -> Tensor:
        if self.adaptive:
            if self.class_probability.numel() == 0:  # eval before any training step: FreeMatch's init
                self._resize_state(num_classes, device)
            if self.class_probability.numel() != num_classes:
                raise DataError(_WHERE, f"FreeMatch state has {self.class_probability.numel()} classes, "
                                        f"input has {num_classes}")
            thresholds = self._class_thresholds().detach()
        else:
            thresholds = torch.full((num_classes,), self.threshold, device=device)
        self._last_thresholds = thresholds
        return thresholds

    def _resize_state(self, num_classes: int, device: torch.device) -> None:
        self.global_threshold = torch.full((), 1.0 / num_classes, device=device)
        self.class_probability = torch.full((num_classes,), 1.0 / num_classes, device=device)

    @torch.no_grad()
    def _update_freematch(self, probs: Tensor) -> None:
        """FreeMatch Eqs. 4-5 from ``probs (M, C)`` (summed over ranks when distributed)."""
        num_classes = probs.shape[1]
        if self.class_probability.numel() == 0:
            self._resize_state(num_classes, probs.device)
        stats = torch.cat([probs.max(dim=1).values.sum().reshape(1), probs.sum(dim=0),
                           torch.tensor([probs.shape[0]], dtype=probs.dtype, device=probs.device)]).float()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(stats)  # every rank updates with the global batch, so thresholds stay in sync
        count = stats[-1]
        if count <= 0:
            return
        momentum = self.ema_momentum
        self.global_threshold.mul_(momentum).add_((1 - momentum) * stats[0] / count)
        self.class_probability.mul_(momentum).add_((1 - momentum) * stats[1:-1] / count)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Buffers sized lazily (num_classes=None) take the checkpoint's size before loading.
        key = prefix + "class_probability"
        if key in state_dict and self.class_probability.numel() == 0:
            self._resize_state(state_dict[key].numel(), self.class_probability.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
