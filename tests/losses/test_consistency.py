"""ConsistencyLoss between two views, with index correspondence; view b is the detached target."""

from __future__ import annotations

import math

import pytest
import torch

from vision.errors import DataError
from vision.losses import ConsistencyLoss

# Student view a: uniform (1/2, 1/2); target view b: (3/4, 1/4).
LOGITS_A = [[0.0, 0.0]]
LOGITS_B = [[math.log(3), 0.0]]
KL_BY_HAND = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)


def test_kl_by_hand():
    loss = ConsistencyLoss("kl")(torch.tensor(LOGITS_A), torch.tensor(LOGITS_B))
    assert loss.item() == pytest.approx(KL_BY_HAND, abs=1e-6)


def test_mse_by_hand():
    loss = ConsistencyLoss("mse")(torch.tensor(LOGITS_A), torch.tensor(LOGITS_B))
    assert loss.item() == pytest.approx((0.25**2 + 0.25**2) / 2, abs=1e-7)


def test_temperature_divides_both_views():
    a = torch.tensor(LOGITS_A)
    b = 2 * torch.tensor(LOGITS_B)  # at T = 2 this is again (3/4, 1/4)
    assert ConsistencyLoss("kl", temperature=2.0)(a, b).item() == pytest.approx(KL_BY_HAND, abs=1e-6)


def test_index_correspondence_points_layout_and_gradients():
    # View a: 3 points (B=1, C=2, N=3); view b: 2 points in the other order (b0 = a2, b1 = a0).
    a = torch.tensor([[[1.0, 7.0, -2.0],
                       [0.0, 7.0, 3.0]]], requires_grad=True)
    b = torch.tensor([[[-2.0, 1.0],
                       [3.0, 0.0]]], requires_grad=True)
    loss = ConsistencyLoss("kl")(a, b, index_a=torch.tensor([0, 2]), index_b=torch.tensor([1, 0]))
    assert loss.item() == pytest.approx(0.0, abs=1e-7)
    loss.backward()
    assert b.grad is None  # target view: detached
    assert torch.equal(a.grad[0, :, 1], torch.zeros(2))  # point 1 of view a has no partner: no gradient
    mismatched = ConsistencyLoss("kl")(a, b, index_a=torch.tensor([0, 2]), index_b=torch.tensor([0, 1]))
    assert mismatched.item() > 0.1


def test_bool_mask_index_and_pixel_layout():
    torch.manual_seed(0)
    a = torch.randn(1, 3, 2, 2)  # (B, C, H, W), rows in (h, w) order: 0=(0,0) 1=(0,1) 2=(1,0) 3=(1,1)
    b = a.clone()
    b[0, :, 0, 1] += torch.tensor([5.0, 0.0, 0.0])  # only pixel (0, 1) disagrees
    mask = torch.tensor([True, False, True, True])
    assert ConsistencyLoss("mse")(a, b, index_a=mask, index_b=mask).item() == pytest.approx(0.0, abs=1e-7)
    assert ConsistencyLoss("mse")(a, b).item() > 0.01


def test_weight_gives_a_weighted_mean():
    a = torch.tensor(LOGITS_A * 2)
    b = torch.tensor(LOGITS_B + LOGITS_A)  # pair 0: KL_BY_HAND, pair 1: 0
    loss = ConsistencyLoss("kl")(a, b, weight=torch.tensor([3.0, 1.0]))
    assert loss.item() == pytest.approx(3 * KL_BY_HAND / 4, abs=1e-6)
    assert ConsistencyLoss("kl")(a, b, weight=torch.zeros(2)).item() == 0.0


def test_no_pairs_is_zero_with_graph():
    a = torch.randn(4, 3, requires_grad=True)
    loss = ConsistencyLoss()(a, torch.randn(4, 3), index_a=torch.tensor([], dtype=torch.long),
                             index_b=torch.tensor([], dtype=torch.long))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(a.grad, torch.zeros(4, 3))


def test_bad_correspondence_raises_data_error():
    loss_fn = ConsistencyLoss()
    with pytest.raises(DataError, match="correspond one to one"):
        loss_fn(torch.zeros(3, 2), torch.zeros(2, 2))
    with pytest.raises(DataError, match="index outside"):
        loss_fn(torch.zeros(3, 2), torch.zeros(2, 2), index_a=torch.tensor([0, 3]))
    with pytest.raises(DataError, match="kind"):
        ConsistencyLoss("l1")
