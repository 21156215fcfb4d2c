"""SQN's point-query head: k-NN interpolation, weighting, gradients, and a tiny overfit run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vision.errors import DataError
from vision.models.pointcloud import SQN, SQNQueryHead, build_pyramid, collate_pyramids
from vision.models.pointcloud.sqn_head import interpolate_features, knn_query

# A 1D toy on the x axis: points at x = 0, 1, 3 carry the features 0, 10, 30.
LINE_XYZ = torch.tensor([[[0.0, 0, 0], [1.0, 0, 0], [3.0, 0, 0]]])  # (1, 3, 3)
LINE_FEATURES = torch.tensor([[[0.0, 10.0, 30.0]]])  # (1, D=1, N=3)


def query_at(*xs: float) -> torch.Tensor:
    return torch.tensor([[[x, 0.0, 0.0] for x in xs]])


def test_knn_query_returns_exact_distances_nearest_first():
    distances, index = knn_query(query_at(0.75), LINE_XYZ, k=3)
    assert index.tolist() == [[[1, 0, 2]]]
    torch.testing.assert_close(distances, torch.tensor([[[0.25, 0.75, 2.25]]]))


def test_inverse_distance_interpolation_on_the_line():
    # weights 1/0.75, 1/0.25, 1/2.25 = 4/3, 4, 4/9, normalised by 52/9: (4 * 10 + 4/9 * 30) / (52/9) = 480/52
    value = interpolate_features(query_at(0.75), LINE_XYZ, LINE_FEATURES, k=3)
    torch.testing.assert_close(value, torch.tensor([[[480 / 52]]]))
    # with k=2 only x=1 and x=0: weights 3/4 and 1/4
    value = interpolate_features(query_at(0.75), LINE_XYZ, LINE_FEATURES, k=2)
    torch.testing.assert_close(value, torch.tensor([[[7.5]]]))


def test_a_query_on_a_point_takes_that_points_features():
    value = interpolate_features(query_at(3.0, 1.0), LINE_XYZ, LINE_FEATURES, k=3)
    torch.testing.assert_close(value, torch.tensor([[[30.0, 10.0]]]))


def test_equal_weighting_is_the_plain_mean_of_the_k_nearest():
    value = interpolate_features(query_at(0.75, 100.0), LINE_XYZ, LINE_FEATURES, k=3, weighting="equal")
    torch.testing.assert_close(value, torch.tensor([[[40 / 3, 40 / 3]]]))
    value = interpolate_features(query_at(0.75), LINE_XYZ, LINE_FEATURES, k=2, weighting="equal")
    torch.testing.assert_close(value, torch.tensor([[[5.0]]]))


def test_query_chunks_do_not_change_the_result():
    torch.manual_seed(0)
    xyz, features, queries = torch.rand(2, 50, 3), torch.randn(2, 4, 50), torch.rand(2, 37, 3)
    whole = interpolate_features(queries, xyz, features, k=3, query_chunk_size=1024)
    chunked = interpolate_features(queries, xyz, features, k=3, query_chunk_size=5)
    torch.testing.assert_close(whole, chunked)


def test_head_concatenates_levels_and_classifies_every_query():
    torch.manual_seed(0)
    head = SQNQueryHead(level_dims=[4, 6], num_classes=3, hidden=(16, 8), k=2)
    level_xyz = [torch.rand(2, 20, 3), torch.rand(2, 5, 3)]
    level_features = [torch.randn(2, 4, 20), torch.randn(2, 6, 5)]
    queries = level_xyz[0][:, :7]  # queries on level-0 points read those points' features exactly
    logits, features = head(queries, level_xyz, level_features)
    assert tuple(logits.shape) == (2, 3, 7) and tuple(features.shape) == (2, 10, 7)
    torch.testing.assert_close(features[:, :4], level_features[0][:, :, :7])
    with pytest.raises(DataError, match="expects 2 levels"):
        head(queries, level_xyz[:1], level_features[:1])
    with pytest.raises(ValueError, match="weighting"):
        SQNQueryHead([4], 3, weighting="gaussian")


def two_planes(num_points: int = 512) -> tuple[dict, torch.Tensor]:
    """Two horizontal planes, z = 0 (class 0) and z = 0.3 (class 1), as one collated batch of 1 cloud."""
    rng = np.random.default_rng(0)
    xyz = rng.random((num_points, 3), dtype=np.float32)
    labels = (np.arange(num_points) % 2).astype(np.int64)
    xyz[:, 2] = 0.3 * labels + rng.normal(0, 0.01, num_points)
    sample = build_pyramid(xyz, num_layers=2, k=8, sub_ratios=(4, 4), rng=rng)
    sample["features"] = xyz
    return collate_pyramids([sample]), torch.from_numpy(labels)[None]


def tiny_sqn() -> SQN:
    return SQN(in_channels=3, num_classes=2, encoder_kwargs={"dims": (8, 16), "k": 8},
               head_kwargs={"hidden": (32, 16), "k": 3, "dropout": 0.0})


def test_gradients_reach_the_encoder_through_the_head():
    torch.manual_seed(0)
    batch, _ = two_planes(128)
    model = tiny_sqn()
    out = model(batch, batch["xyz"][0][:, :10])
    assert tuple(out["logits"].shape) == (1, 2, 10) and tuple(out["features"].shape) == (1, 16 + 32, 10)
    out["logits"].sum().backward()
    assert model.encoder.stem.linear.weight.grad.abs().sum() > 0
    assert model.encoder.blocks[1].shortcut.linear.weight.grad.abs().sum() > 0


def test_a_tiny_sqn_overfits_two_planes_from_a_few_labelled_points():
    torch.manual_seed(0)
    batch, labels = two_planes()
    labelled = torch.from_numpy(np.random.default_rng(1).choice(512, 24, replace=False))
    query_xyz, targets = batch["xyz"][0][:, labelled], labels[:, labelled]
    model = tiny_sqn()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(100):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(batch, query_xyz)["logits"], targets)
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        predicted = model(batch, query_xyz)["logits"].argmax(1)
        every_point = model(batch, batch["xyz"][0])["logits"].argmax(1)  # inference queries all 512 points
    assert (predicted == targets).float().mean() > 0.95
    assert (every_point == labels).float().mean() > 0.9


def two_clouds_with_query_neighbours(seed: int) -> dict:
    """A collated batch of two random 256-point clouds whose pyramid precomputes the head's neighbours."""
    rng = np.random.default_rng(seed)
    clouds = []
    for _ in range(2):
        pyramid = build_pyramid(rng.random((256, 3)).astype(np.float32), num_layers=2, k=8, sub_ratios=(4, 4),
                                rng=rng, query_k=3)
        pyramid["features"] = rng.random((256, 6)).astype(np.float32)
        clouds.append(pyramid)
    return collate_pyramids(clouds)


def test_precomputed_query_neighbours_give_the_same_logits_as_the_head_search():
    batch = two_clouds_with_query_neighbours(3)
    assert [tuple(q.shape) for q in batch["query"]] == [(2, 256, 3), (2, 256, 3)]
    torch.manual_seed(0)
    model = SQN(6, 4, encoder_kwargs={"dims": [8, 16], "k": 8}, head_kwargs={"hidden": [16], "k": 3}).eval()
    with torch.no_grad():
        precomputed = model(batch, batch["xyz"][0])["logits"]
        searched = model({k: v for k, v in batch.items() if k != "query"}, batch["xyz"][0])["logits"]
        # other query points than the cloud's own: the precomputed neighbours must not be used
        shifted = batch["xyz"][0] + 0.0
        assert torch.allclose(model(batch, shifted)["logits"], searched, atol=1e-5)
    assert torch.allclose(precomputed, searched, atol=1e-5)


def test_querying_an_index_gives_those_points_logits_from_the_whole_cloud_query():
    batch = two_clouds_with_query_neighbours(4)
    torch.manual_seed(0)
    model = SQN(6, 4, encoder_kwargs={"dims": [8, 16], "k": 8}, head_kwargs={"hidden": [16], "k": 3}).eval()
    index = torch.tensor([[0, 17, 255, 3], [100, 5, 5, 42]])
    with torch.no_grad():
        every = model(batch, batch["xyz"][0])
        picked = model(batch, query_index=index)
        searched = model({k: v for k, v in batch.items() if k != "query"}, query_index=index)
    expected = torch.stack([every["logits"][b, :, index[b]] for b in range(2)])
    assert picked["logits"].shape == (2, 4, 4) and picked["features"].shape[-1] == 4
    assert torch.allclose(picked["logits"], expected, atol=1e-5)
    assert torch.allclose(searched["logits"], expected, atol=1e-5)
    with pytest.raises(ValueError, match="exactly one"):
        model(batch)
    with pytest.raises(DataError, match="query_index"):
        model(batch, query_index=torch.zeros(3, 4, dtype=torch.long))
