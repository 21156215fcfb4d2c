"""ProjectionHead: unit-norm per-pixel projections, hand-checked with identity weights."""

from __future__ import annotations

import pytest
import torch

from vision.errors import DataError
from vision.models.events import EventUNet, ProjectionHead


def identity_head() -> ProjectionHead:
    """2 -> 2 -> 2 with identity 1x1 convolutions and no norm: output = normalize(relu(x))."""
    head = ProjectionHead(in_dim=2, out_dim=2, hidden=2, norm="none")
    with torch.no_grad():
        for conv in (head.mlp[0], head.mlp[3]):
            conv.weight.copy_(torch.eye(2).reshape(2, 2, 1, 1))
            conv.bias.zero_()
    return head


def test_identity_head_by_hand():
    # pixels (3, 4) -> (0.6, 0.8); (-3, 4) -> relu (0, 4) -> (0, 1); (0, 0) stays 0 instead of NaN
    features = torch.tensor([[[[3.0, -3.0, 0.0]], [[4.0, 4.0, 0.0]]]])  # (B=1, D=2, H=1, W=3)
    out = identity_head()(features)
    torch.testing.assert_close(out, torch.tensor([[[[0.6, 0.0, 0.0]], [[0.8, 1.0, 0.0]]]]))


def test_point_features_b_d_n_work_like_pixels():
    features = torch.tensor([[[3.0, -3.0], [4.0, 4.0]]])  # (B=1, D=2, N=2)
    torch.testing.assert_close(identity_head()(features), torch.tensor([[[0.6, 0.0], [0.8, 1.0]]]))


@pytest.mark.parametrize("norm", ["batch", "group", "none"])
def test_projections_of_a_students_features_have_unit_norm(norm):
    torch.manual_seed(0)
    student = EventUNet(in_channels=5, num_classes=3, base_channels=8, depth=2)
    head = ProjectionHead(student.feature_dim, out_dim=16, hidden=32, norm=norm)
    projected = head(student(torch.randn(2, 5, 12, 20))["features"])
    assert projected.shape == (2, 16, 12, 20)
    torch.testing.assert_close(projected.norm(dim=1), torch.ones(2, 12, 20))
    projected.sum().backward()  # trains with the student
    assert student.encoder.stem[0].weight.grad.abs().sum() > 0


def test_bad_features_and_arguments_raise_data_error():
    head = ProjectionHead(in_dim=8)
    for bad in (torch.zeros(1, 4, 3, 3), torch.zeros(8, 3), torch.zeros(1, 8, 2, 2, 2)):
        with pytest.raises(DataError, match="^<features>: "):
            head(bad)
    with pytest.raises(DataError, match="^ProjectionHead: "):
        ProjectionHead(8, norm="layer")
    with pytest.raises(DataError, match="^ProjectionHead: "):
        ProjectionHead(0)
