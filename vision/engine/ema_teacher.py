"""Mean teacher: an exponential moving average of a student's weights.

Tarvainen & Valpola, "Mean teachers are better role models: Weight-averaged consistency targets
improve semi-supervised deep learning results", NeurIPS 2017, eq. (1):
``theta'_t = alpha_t * theta'_{t-1} + (1 - alpha_t) * theta_t``.

The teacher is a plain :class:`torch.nn.Module`, so a LightningModule that holds it as an attribute
saves it in every checkpoint and restores it on resume with no extra code. The task calls
:meth:`EMATeacher.update` right after each optimizer step, in ``optimizer_step`` (not in
``on_train_batch_end``: a ``ModelCheckpoint(every_n_train_steps=...)`` writes its checkpoint in the
callbacks' ``on_train_batch_end``, which Lightning runs before the module's, so that checkpoint
would hold a teacher one update behind and a resumed run would drift)::

    class SegmentationTask(L.LightningModule):
        def __init__(self, model):
            super().__init__()
            self.model = model
            self.teacher = EMATeacher(model, decay=0.999)

        def configure_optimizers(self):
            return torch.optim.AdamW(self.model.parameters())  # the student only

        def optimizer_step(self, *args, **kwargs):
            super().optimizer_step(*args, **kwargs)
            self.teacher.update(self.model, self.global_step + 1)  # the step just taken (1, 2, ...)
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMATeacher(nn.Module):
    """A frozen, weight-averaged copy of a student model (Tarvainen & Valpola 2017).

    Args:
        student: the model to follow; the teacher starts as a deep copy of it.
        decay: the largest EMA decay ``alpha`` (0.99 - 0.9999 are usual).
        warmup_steps: for ``step < warmup_steps`` the teacher copies the student outright
            (decay 0), so it does not average in the random initial weights.

    The decay at step ``t`` is ``min(decay, (1 + t) / (10 + t))``: the warm-up rule of the mean-teacher
    reference code and of Polyak-averaging implementations, which lets the early teacher follow a
    fast-changing student and approaches ``decay`` after a few hundred steps.

    Buffers (BatchNorm ``running_mean`` / ``running_var`` / ``num_batches_tracked``) are *copied* from
    the student, not averaged: they already are running averages of the student's activations, and
    an average of the integer batch counter has no meaning.

    The teacher's parameters never require gradients, it stays in eval mode even when the enclosing
    LightningModule calls ``.train()``, and :meth:`forward` runs under ``torch.no_grad``.

    >>> student = nn.Linear(2, 1)
    >>> teacher = EMATeacher(student, decay=0.99)
    >>> teacher.decay_at(0), round(teacher.decay_at(10_000), 2)
    (0.1, 0.99)
    >>> teacher(torch.zeros(4, 2)).shape, teacher(torch.zeros(4, 2)).requires_grad
    (torch.Size([4, 1]), False)
    """

    def __init__(self, student: nn.Module, decay: float = 0.999, warmup_steps: int = 0) -> None:
        super().__init__()
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay must be in [0, 1], got {decay}")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.decay = float(decay)
        self.warmup_steps = int(warmup_steps)
        self.model = copy.deepcopy(student)
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        self.model.eval()

    def train(self, mode: bool = True) -> EMATeacher:
        """Keep the wrapped model in eval mode: the teacher's dropout and BatchNorm never train."""
        super().train(mode)
        self.model.eval()
        return self

    def decay_at(self, step: int) -> float:
        """The EMA decay used by :meth:`update` at optimisation step ``step`` (0-based)."""
        if step < self.warmup_steps:
            return 0.0
        return min(self.decay, (1.0 + step) / (10.0 + step))

    @torch.no_grad()
    def update(self, student: nn.Module, step: int) -> float:
        """Move the teacher towards ``student``; returns the decay that was used.

        Parameters: ``teacher = decay_t * teacher + (1 - decay_t) * student``; buffers: copied.
        ``student`` must have the same parameter and buffer names as the teacher.
        """
        decay = self.decay_at(step)
        teacher_params = dict(self.model.named_parameters())
        student_params = dict(student.named_parameters())
        _check_same_names("parameters", teacher_params, student_params)
        for name, teacher_param in teacher_params.items():
            student_param = student_params[name].detach()
            teacher_param.mul_(decay).add_(student_param.to(teacher_param.dtype), alpha=1.0 - decay)
        teacher_buffers = dict(self.model.named_buffers())
        student_buffers = dict(student.named_buffers())
        _check_same_names("buffers", teacher_buffers, student_buffers)
        for name, teacher_buffer in teacher_buffers.items():
            teacher_buffer.copy_(student_buffers[name])
        return decay

    def forward(self, *args, **kwargs):
        """The teacher's prediction, without gradient; same inputs and outputs as the student."""
        with torch.no_grad():
            return self.model(*args, **kwargs)


def _check_same_names(kind: str, teacher: dict, student: dict) -> None:
    if teacher.keys() != student.keys():
        missing = sorted(teacher.keys() - student.keys())[:3]
        extra = sorted(student.keys() - teacher.keys())[:3]
        raise ValueError(f"student {kind} do not match the teacher's: missing {missing}, unexpected {extra}")
