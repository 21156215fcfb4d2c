"""EMATeacher: the mean-teacher update (Tarvainen & Valpola 2017) on a tiny model, by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vision.engine import EMATeacher


def tiny_model(weight: float, bias: float) -> nn.Sequential:
    """Linear(2 -> 1) followed by BatchNorm, with constant weights so expected values are exact."""
    model = nn.Sequential(nn.Linear(2, 1), nn.BatchNorm1d(1))
    with torch.no_grad():
        model[0].weight.fill_(weight)
        model[0].bias.fill_(bias)
    return model


def test_update_is_the_ema_formula_and_copies_buffers():
    student = tiny_model(weight=1.0, bias=-2.0)
    teacher = EMATeacher(student, decay=0.75)
    with torch.no_grad():
        student[0].weight.fill_(3.0)
        student[0].bias.fill_(2.0)
        student[1].running_mean.fill_(5.0)
        student[1].num_batches_tracked.fill_(7)

    used = teacher.update(student, step=1000)  # (1 + 1000) / (10 + 1000) > 0.75, so decay = 0.75

    assert used == 0.75
    # teacher = 0.75 * teacher + 0.25 * student
    torch.testing.assert_close(teacher.model[0].weight, torch.tensor([[1.5, 1.5]]), rtol=0, atol=0)
    torch.testing.assert_close(teacher.model[0].bias, torch.tensor([-1.0]), rtol=0, atol=0)
    # buffers are copied, not averaged
    assert teacher.model[1].running_mean.item() == 5.0
    assert teacher.model[1].num_batches_tracked.item() == 7


def test_warmup_rule_and_warmup_steps():
    student = tiny_model(weight=1.0, bias=0.0)
    teacher = EMATeacher(student, decay=0.999, warmup_steps=2)
    with torch.no_grad():
        student[0].weight.fill_(3.0)

    assert teacher.update(student, step=1) == 0.0  # before warmup_steps: plain copy
    assert teacher.model[0].weight.tolist() == [[3.0, 3.0]]

    with torch.no_grad():
        student[0].weight.fill_(13.0)
    used = teacher.update(student, step=2)  # min(0.999, 3 / 12) = 0.25
    assert used == 0.25
    torch.testing.assert_close(teacher.model[0].weight, torch.full((1, 2), 0.25 * 3.0 + 0.75 * 13.0))
    assert teacher.decay_at(0) == 0.0
    assert EMATeacher(student, decay=0.999).decay_at(0) == pytest.approx(0.1)  # (1 + 0) / (10 + 0)
    assert teacher.decay_at(10**6) == 0.999


def test_teacher_is_frozen_eval_and_gradient_free():
    student = tiny_model(weight=1.0, bias=0.0)
    teacher = EMATeacher(student)
    holder = nn.ModuleDict({"student": student, "teacher": teacher})
    holder.train()  # what Lightning does at the start of every training epoch

    assert student.training and not teacher.model.training
    assert not any(p.requires_grad for p in teacher.parameters())
    assert all(p.requires_grad for p in student.parameters())
    out = teacher(torch.ones(4, 2))
    assert not out.requires_grad
    # eval-mode BatchNorm uses running stats (mean 0, var 1): output = 1*1 + 1*1 + 0, up to BN eps
    torch.testing.assert_close(out, torch.full((4, 1), 2.0), atol=1e-4, rtol=0)


def test_state_dict_round_trip_restores_the_teacher():
    student = tiny_model(weight=1.0, bias=0.0)
    teacher = EMATeacher(student, decay=0.5)
    with torch.no_grad():
        student[0].weight.fill_(3.0)
        student[1].running_var.fill_(4.0)
    teacher.update(student, step=100)
    saved = teacher.state_dict()
    assert "model.1.running_var" in saved

    resumed = EMATeacher(tiny_model(weight=9.0, bias=9.0), decay=0.5)
    resumed.load_state_dict(saved)

    assert resumed.model[0].weight.tolist() == [[2.0, 2.0]]  # 0.5 * 1 + 0.5 * 3
    assert resumed.model[1].running_var.item() == 4.0
    assert not any(p.requires_grad for p in resumed.parameters())


def test_update_rejects_a_different_architecture():
    teacher = EMATeacher(tiny_model(1.0, 0.0))
    with pytest.raises(ValueError, match="parameters do not match"):
        teacher.update(nn.Linear(2, 1), step=0)
