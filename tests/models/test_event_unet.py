"""EventUNet: any image size in, same size out, pixel-aligned; seeded; learns a tiny polarity pattern."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vision.errors import DataError
from vision.models.events import EventUNet


def tiny_unet(**kwargs) -> EventUNet:
    torch.manual_seed(0)
    options = {"in_channels": 5, "num_classes": 3, "base_channels": 4, "depth": 4} | kwargs
    return EventUNet(**options)


@pytest.mark.parametrize("height, width", [(128, 160), (100, 130), (480, 640), (1, 1), (17, 33)])
def test_any_image_size_gives_same_size_logits_and_features(height, width):
    model = tiny_unet().eval()
    with torch.no_grad():
        out = model(torch.randn(1, 5, height, width))
    assert out["logits"].shape == (1, 3, height, width)
    assert out["features"].shape == (1, model.feature_dim, height, width)
    assert model.feature_dim == 4
    assert torch.isfinite(out["logits"]).all() and torch.isfinite(out["features"]).all()
    if height * width > 1:
        assert out["features"].min() < 0 < out["features"].max()  # signed: taken before the head's ReLU


def test_internal_padding_equals_padding_by_hand_then_cropping():
    # 100 x 130 is padded to 112 x 144 (multiples of 2 ** 4) with zeros at the bottom and right
    model = tiny_unet().eval()
    voxel = torch.randn(1, 5, 100, 130)
    with torch.no_grad():
        out = model(voxel)
        by_hand = model(F.pad(voxel, (0, 14, 0, 12)))
    torch.testing.assert_close(out["logits"], by_hand["logits"][..., :100, :130])
    torch.testing.assert_close(out["features"], by_hand["features"][..., :100, :130])


def test_output_pixel_depends_on_the_same_input_pixel_not_on_far_ones():
    model = tiny_unet(depth=2).eval()  # receptive field well under 100 pixels
    voxel = torch.randn(1, 5, 100, 130, requires_grad=True)
    model(voxel)["logits"][0, :, 0, 0].sum().backward()
    grad = voxel.grad[0].abs().sum(0)
    assert grad[0, 0] > 0
    assert grad[99, 129] == 0 and grad[60:, :].sum() == 0 and grad[:, 80:].sum() == 0


def test_same_seed_same_model_other_seed_other_model():
    first, second = tiny_unet(), tiny_unet()
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name
    torch.manual_seed(1)
    other = EventUNet(5, 3, base_channels=4, depth=4)
    assert not torch.equal(first.encoder.stem[0].weight, other.encoder.stem[0].weight)
    voxel = torch.randn(1, 5, 32, 40)
    with torch.no_grad():
        torch.testing.assert_close(first.eval()(voxel)["logits"], second.eval()(voxel)["logits"])


def test_kaiming_init_gives_convolutions_fan_out_variance():
    model = tiny_unet(base_channels=16, depth=2)
    weight = model.decoder.blocks[-1].fuse.conv1.weight  # (16, 32, 3, 3): fan_out = 16 * 9
    assert weight.std().item() == pytest.approx((2 / (16 * 9)) ** 0.5, rel=0.1)
    assert model.head.classifier.bias.abs().sum() == 0


def test_group_norm_variant_trains_on_a_batch_of_one():
    model = tiny_unet(norm="group", dropout=0.1).train()
    out = model(torch.randn(1, 5, 20, 24))
    out["logits"].mean().backward()
    assert model.encoder.stem[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("voxel", [torch.zeros(1, 4, 8, 8), torch.zeros(5, 8, 8), torch.zeros(1, 5, 8, 8, dtype=torch.int64),
                                   torch.zeros(1, 5, 0, 8)])
def test_bad_voxel_grids_raise_data_error(voxel):
    with pytest.raises(DataError, match="^<voxel>: "):
        tiny_unet()(voxel)


@pytest.mark.parametrize("kwargs", [{"depth": 0}, {"num_classes": 0}, {"norm": "layer"}, {"dropout": 1.0}])
def test_bad_arguments_raise_data_error(kwargs):
    with pytest.raises(DataError, match="^EventUNet: "):
        tiny_unet(**kwargs)


def polarity_halves(batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """32 x 32 voxel grids, 5 bins: sparse positive events on the left half, negative on the right."""
    events = (torch.rand(batch, 5, 32, 32, generator=generator) < 0.2).float()
    sign = torch.ones(32, 32)
    sign[:, 16:] = -1
    labels = torch.zeros(batch, 32, 32, dtype=torch.long)
    labels[:, :, 16:] = 1
    return events * sign, labels


def test_tiny_unet_overfits_a_two_polarity_pattern():
    torch.manual_seed(0)
    model = EventUNet(in_channels=5, num_classes=2, base_channels=8, depth=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        voxel, labels = polarity_halves(2, generator)
        loss = F.cross_entropy(model(voxel)["logits"], labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    voxel, labels = polarity_halves(4, generator)  # unseen event samples of the same pattern
    with torch.no_grad():
        accuracy = (model.eval()(voxel)["logits"].argmax(1) == labels).float().mean().item()
    assert accuracy > 0.95
    assert loss.item() < 0.2
