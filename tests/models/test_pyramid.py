"""RandLA-Net's random-sampling pyramid: k-NN, subsets, up/down indices, batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vision.errors import DataError
from vision.models.pointcloud.pyramid import build_pyramid, collate_pyramids


def brute_force_knn(queries: np.ndarray, points: np.ndarray, k: int) -> np.ndarray:
    distances = np.linalg.norm(queries[:, None, :] - points[None, :, :], axis=-1)
    return np.argsort(distances, axis=1, kind="stable")[:, :k]


@pytest.fixture
def pyramid() -> dict:
    coords = np.random.default_rng(1).random((200, 3), dtype=np.float32)
    return build_pyramid(coords, num_layers=3, k=5, sub_ratios=(4, 2, 2), rng=np.random.default_rng(7))


def test_level_sizes_follow_the_ratios(pyramid):
    assert [x.shape for x in pyramid["xyz"]] == [(200, 3), (50, 3), (25, 3), (12, 3)]
    assert [n.shape for n in pyramid["neighbors"]] == [(200, 5), (50, 5), (25, 5)]
    assert [s.shape for s in pyramid["subsample"]] == [(50, 5), (25, 5), (12, 5)]
    assert [u.shape for u in pyramid["upsample"]] == [(200, 1), (50, 1), (25, 1)]
    assert all(n.dtype == np.int64 for n in pyramid["neighbors"] + pyramid["subsample"] + pyramid["upsample"])
    assert pyramid["xyz"][0].dtype == np.float32


def test_neighbors_are_the_exact_k_nearest_in_the_same_level(pyramid):
    for xyz, neighbors in zip(pyramid["xyz"], pyramid["neighbors"]):
        np.testing.assert_array_equal(neighbors, brute_force_knn(xyz, xyz, 5))
        np.testing.assert_array_equal(neighbors[:, 0], np.arange(len(xyz)))  # a point is its own nearest


def test_neighbors_on_a_hand_made_line():
    line = np.array([[0, 0, 0], [1, 0, 0], [3, 0, 0], [7, 0, 0]], np.float32)
    pyramid = build_pyramid(line, num_layers=1, k=2, sub_ratios=(2,), rng=np.random.default_rng(0))
    assert pyramid["neighbors"][0].tolist() == [[0, 1], [1, 0], [2, 1], [3, 2]]


def test_each_level_is_a_random_subset_of_the_previous_one(pyramid):
    for finer, coarser in zip(pyramid["xyz"][:-1], pyramid["xyz"][1:]):
        matches = (coarser[:, None, :] == finer[None, :, :]).all(-1)
        assert (matches.sum(1) == 1).all()  # every coarse point is exactly one fine point
        assert len(np.unique(matches.argmax(1))) == len(coarser)  # drawn without replacement


def test_down_and_up_indices_point_at_the_right_neighbours(pyramid):
    for level in range(3):
        finer, coarser = pyramid["xyz"][level], pyramid["xyz"][level + 1]
        np.testing.assert_array_equal(pyramid["subsample"][level], brute_force_knn(coarser, finer, 5))
        np.testing.assert_array_equal(pyramid["upsample"][level], brute_force_knn(finer, coarser, 1))


def test_the_same_generator_seed_gives_the_same_pyramid():
    coords = np.random.default_rng(0).random((64, 3))
    first = build_pyramid(coords, 2, 4, (4, 4), np.random.default_rng(3))
    again = build_pyramid(coords, 2, 4, (4, 4), np.random.default_rng(3))
    other = build_pyramid(coords, 2, 4, (4, 4), np.random.default_rng(4))
    np.testing.assert_array_equal(first["xyz"][2], again["xyz"][2])
    assert not np.array_equal(first["xyz"][1], other["xyz"][1])


def test_levels_smaller_than_k_repeat_their_farthest_neighbour():
    coords = np.array([[0, 0, 0], [1, 0, 0], [3, 0, 0], [7, 0, 0]], np.float32)
    pyramid = build_pyramid(coords, num_layers=1, k=6, sub_ratios=(2,), rng=np.random.default_rng(0))
    assert pyramid["neighbors"][0][0].tolist() == [0, 1, 2, 3, 3, 3]


@pytest.mark.parametrize("coords, reason", [
    (np.zeros((10, 2)), "must have shape"),
    (np.array([[0, 0, np.nan]] * 10), "NaN"),
    (np.zeros((3, 3)), "too few"),
])
def test_bad_clouds_raise_data_error_naming_the_source(coords, reason):
    with pytest.raises(DataError, match=f"^scan_7.bin: .*{reason}"):
        build_pyramid(coords, num_layers=1, k=2, sub_ratios=(4,), source="scan_7.bin")


def test_collate_stacks_levels_and_extra_arrays_batch_first():
    rng = np.random.default_rng(0)
    samples = []
    for name in ("a", "b"):
        xyz = rng.random((32, 3), dtype=np.float32)
        sample = build_pyramid(xyz, num_layers=2, k=4, sub_ratios=(4, 2), rng=rng)
        sample.update(features=xyz, target=np.full(32, 1, np.int64), sample_id=name)
        samples.append(sample)
    batch = collate_pyramids(samples)
    assert [tuple(x.shape) for x in batch["xyz"]] == [(2, 32, 3), (2, 8, 3), (2, 4, 3)]
    assert tuple(batch["subsample"][1].shape) == (2, 4, 4) and batch["upsample"][0].dtype == torch.int64
    torch.testing.assert_close(batch["neighbors"][1][1], torch.from_numpy(samples[1]["neighbors"][1]))
    assert tuple(batch["features"].shape) == (2, 32, 3) and batch["target"].sum().item() == 64
    assert batch["sample_id"] == ["a", "b"]


def test_collate_refuses_clouds_of_different_sizes():
    rng = np.random.default_rng(0)
    samples = [build_pyramid(rng.random((n, 3)), 1, 4, (4,), rng) for n in (32, 40)]
    with pytest.raises(DataError, match="same number of points"):
        collate_pyramids(samples)
