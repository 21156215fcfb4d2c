"""RandLA-Net building blocks (LocSE, attentive pooling, gathers) and the encoder-decoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vision.errors import DataError
from vision.models.pointcloud import RandLAEncoder, RandLANet, build_pyramid, collate_pyramids
from vision.models.pointcloud.randla import (
    AttentivePooling,
    LocalSpatialEncoding,
    gather_neighbors,
    pool_down,
    relative_position_features,
    upsample_nearest,
)


def make_batch(num_points: int = 256, batch_size: int = 2, k: int = 8, num_layers: int = 2) -> dict:
    """Random clouds through build_pyramid + collate_pyramids, features = xyz, as a DataLoader would."""
    rng = np.random.default_rng(0)
    samples = []
    for _ in range(batch_size):
        xyz = rng.random((num_points, 3), dtype=np.float32)
        sample = build_pyramid(xyz, num_layers=num_layers, k=k, sub_ratios=(4,) * num_layers, rng=rng)
        sample["features"] = xyz
        samples.append(sample)
    return collate_pyramids(samples)


def test_gather_neighbors_copies_the_indexed_rows_per_cloud():
    features = torch.tensor([[[1.0], [2.0], [3.0]], [[10.0], [20.0], [30.0]]])  # (B=2, N=3, D=1)
    index = torch.tensor([[[2, 0]], [[1, 1]]])  # (B=2, M=1, K=2)
    assert gather_neighbors(features, index).squeeze(-1).tolist() == [[[3.0, 1.0]], [[20.0, 20.0]]]


def test_relative_position_features_on_a_hand_example():
    xyz = torch.tensor([[[0.0, 0.0, 0.0], [3.0, 4.0, 0.0]]])  # (1, 2, 3)
    neighbor_index = torch.tensor([[[0, 1], [1, 0]]])
    geometry = relative_position_features(xyz, neighbor_index)  # (1, 2, 2, 10)
    # point 0 and its neighbour 1: [p_i, p_k, p_i - p_k, ||p_i - p_k||]
    assert geometry[0, 0, 1].tolist() == [0, 0, 0, 3, 4, 0, -3, -4, 0, 5]
    assert geometry[0, 1, 1].tolist() == [3, 4, 0, 0, 0, 0, 3, 4, 0, 5]
    assert geometry[0, 0, 0].tolist() == [0] * 10  # the point itself: zero offset and distance


def test_local_spatial_encoding_appends_the_neighbours_features():
    torch.manual_seed(0)
    xyz, index = torch.rand(1, 4, 3), torch.tensor([[[0, 3], [1, 2], [2, 0], [3, 1]]])
    features = torch.arange(8.0).view(1, 4, 2)  # point i has features [2i, 2i + 1]
    encoded = LocalSpatialEncoding(2)(relative_position_features(xyz, index), features, index)
    assert tuple(encoded.shape) == (1, 4, 2, 4)  # 2 encoded-position channels + 2 feature channels
    assert encoded[0, 0, 1, 2:].tolist() == [6.0, 7.0]  # point 0's second neighbour is point 3


def test_attentive_pooling_scores_sum_to_one_over_the_neighbours():
    torch.manual_seed(0)
    pooling = AttentivePooling(6, 4)
    scores = pooling.attention_scores(torch.randn(2, 5, 7, 6))  # (B, N, K, D)
    torch.testing.assert_close(scores.sum(dim=2), torch.ones(2, 5, 6))
    assert (scores > 0).all()


def test_attentive_pooling_with_zero_score_weights_is_the_neighbour_mean():
    pooling = AttentivePooling(2, 2)
    torch.nn.init.zeros_(pooling.score.weight)
    features = torch.tensor([[[[1.0, 0.0], [3.0, 4.0]]]])  # (1, N=1, K=2, D=2)
    assert pooling.attention_scores(features).flatten().tolist() == [0.5, 0.5, 0.5, 0.5]
    pooling.mlp = torch.nn.Identity()  # look at the weighted sum itself
    assert pooling(features).flatten().tolist() == [2.0, 2.0]


def test_pool_down_takes_the_neighbourhood_max_and_upsample_copies_the_nearest():
    features = torch.tensor([[[1.0], [5.0], [2.0]]])  # (1, 3, 1)
    assert pool_down(features, torch.tensor([[[0, 2], [1, 0]]])).flatten().tolist() == [2.0, 5.0]
    coarse = torch.tensor([[[7.0], [9.0]]])
    assert upsample_nearest(coarse, torch.tensor([[[1], [0], [1]]])).flatten().tolist() == [9.0, 7.0, 9.0]


def test_encoder_returns_each_level_after_downsampling_channel_first():
    batch = make_batch()
    encoder = RandLAEncoder(in_channels=3, dims=(8, 16), k=8)
    levels, first = encoder(batch)
    assert encoder.out_dims == [16, 32]
    assert [tuple(f.shape) for f in levels] == [(2, 16, 64), (2, 32, 16)]
    assert tuple(first.shape) == (2, 16, 256)


def test_randlanet_gives_finite_logits_for_every_point_and_trains():
    torch.manual_seed(0)
    batch = make_batch()
    model = RandLANet(in_channels=3, num_classes=5, dims=(8, 16), k=8)
    logits = model(batch)
    assert tuple(logits.shape) == (2, 5, 256) and torch.isfinite(logits).all()
    torch.nn.functional.cross_entropy(logits, torch.zeros(2, 256, dtype=torch.long)).backward()
    assert model.encoder.stem.linear.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        single = model({key: value[:1] if torch.is_tensor(value) else [v[:1] for v in value]
                        for key, value in batch.items()})
    assert tuple(single.shape) == (1, 5, 256) and torch.isfinite(single).all()


def test_randlanet_default_size_runs_on_a_four_level_pyramid():
    batch = make_batch(num_points=1024, batch_size=1, k=16, num_layers=4)
    model = RandLANet(in_channels=3, num_classes=3).eval()
    with torch.no_grad():
        logits = model(batch)
    assert tuple(logits.shape) == (1, 3, 1024) and torch.isfinite(logits).all()


def test_batches_that_do_not_fit_the_encoder_raise_data_error():
    batch = make_batch()
    with pytest.raises(DataError, match=r"features must be \(B, N, 4\)"):
        RandLAEncoder(in_channels=4, dims=(8, 16), k=8)(batch)
    with pytest.raises(DataError, match="k=16"):
        RandLAEncoder(in_channels=3, dims=(8, 16), k=16)(batch)
    with pytest.raises(DataError, match="encoder needs 3"):
        RandLAEncoder(in_channels=3, dims=(8, 16, 32), k=8)(batch)
    del batch["features"]
    with pytest.raises(DataError, match="missing 'features'"):
        RandLAEncoder(in_channels=3, dims=(8, 16), k=8)(batch)
