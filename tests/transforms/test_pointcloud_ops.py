"""Grid subsampling with a label vote, k-NN, random sampling and coverage crops on tiny clouds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from datamodules.transforms.pointcloud_ops import (
    CoverageSampler,
    crop_neighbourhood,
    grid_subsample,
    knn,
    random_subsample_indices,
)
from vision.labels.types import IGNORE_INDEX

IGNORE = IGNORE_INDEX


def test_grid_subsample_votes_labels_and_averages_coords_and_features():
    # voxel_size 1 with the grid anchored at the minimum corner (0, 0, 0):
    #   voxel (0,0,0): labels 1, 1, 2     -> 1
    #   voxel (1,0,0): labels 3, IGNORE   -> 3 (ignored points do not vote)
    #   voxel (0,1,0): IGNORE, IGNORE     -> IGNORE
    #   voxel (0,0,1): labels 2, 0 (tie)  -> 0 (lowest class id)
    coords = np.array([[0.1, 0.1, 0.1], [0.3, 0.1, 0.1], [0.2, 0.4, 0.1],
                       [1.5, 0.5, 0.5], [1.7, 0.5, 0.5],
                       [0.5, 1.2, 0.5], [0.5, 1.6, 0.5],
                       [0.5, 0.5, 1.2], [0.5, 0.5, 1.4]])
    labels = np.array([1, 1, 2, 3, IGNORE, IGNORE, IGNORE, 2, 0])
    features = np.arange(18, dtype=np.float32).reshape(9, 2)
    sub, sub_features, sub_labels, inverse = grid_subsample(coords, 1.0, features, labels, num_classes=4)

    # voxels come out ordered by their key (x-major): (0,0,0), (0,0,1), (0,1,0), (1,0,0)
    assert inverse.tolist() == [0, 0, 0, 3, 3, 2, 2, 1, 1]
    assert sub_labels.tolist() == [1, 0, IGNORE, 3]
    np.testing.assert_allclose(sub[0], [0.2, 0.2, 0.1])
    np.testing.assert_allclose(sub[3], [1.6, 0.5, 0.5])
    np.testing.assert_allclose(sub_features, [[2, 3], [15, 16], [11, 12], [7, 8]])
    assert sub_features.dtype == np.float32 and sub_labels.dtype == np.int64 and inverse.dtype == np.int64


def test_grid_subsample_inverse_maps_every_point_to_its_own_voxel():
    rng = np.random.default_rng(0)
    coords = rng.uniform(-1, 1, size=(2000, 3))
    sub, _, _, inverse = grid_subsample(coords, 0.25)
    cell = np.floor((coords - coords.min(axis=0)) / 0.25).astype(int)
    # points share an inverse id exactly when they share a grid cell
    _, cell_id = np.unique(cell, axis=0, return_inverse=True)
    assert len(sub) == cell_id.max() + 1
    np.testing.assert_array_equal(inverse, cell_id.reshape(-1))
    # every voxel centroid is the mean of its own points
    np.testing.assert_allclose(sub[inverse[7]], coords[inverse == inverse[7]].mean(axis=0))


def test_grid_subsample_rejects_labels_outside_the_classes():
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        grid_subsample(np.zeros((2, 3)), 0.1, labels=np.array([0, 5]), num_classes=3)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        grid_subsample(np.zeros((4, 2)), 0.1)


def test_knn_matches_brute_force():
    rng = np.random.default_rng(1)
    support, query = rng.uniform(size=(300, 3)), rng.uniform(size=(40, 3))
    indices, distances = knn(query, support, k=6)
    all_distances = np.linalg.norm(query[:, None] - support[None], axis=2)
    np.testing.assert_array_equal(indices, np.argsort(all_distances, axis=1)[:, :6])
    np.testing.assert_allclose(distances, np.sort(all_distances, axis=1)[:, :6])
    assert indices.dtype == np.int64 and indices.shape == (40, 6)


def test_knn_with_k_one_keeps_two_dimensions_and_refuses_k_above_support():
    line = np.array([[0.0, 0, 0], [1, 0, 0], [2, 0, 0]])
    indices, distances = knn(np.array([[1.9, 0, 0]]), line, k=1)
    assert indices.tolist() == [[2]] and distances.round(6).tolist() == [[0.1]]
    with pytest.raises(ValueError, match="k must be"):
        knn(line, line, k=4)


def test_random_subsample_indices_are_distinct_and_seeded():
    a = random_subsample_indices(1000, 0.25, np.random.default_rng(3))
    b = random_subsample_indices(1000, 0.25, np.random.default_rng(3))
    assert len(a) == 250 and len(np.unique(a)) == 250 and a.min() >= 0 and a.max() < 1000
    np.testing.assert_array_equal(a, b)
    assert len(random_subsample_indices(5, 0.01, np.random.default_rng(0))) == 1  # never empty


def test_crop_neighbourhood_takes_the_nearest_points_nearest_first():
    line = np.stack([np.arange(10.0), np.zeros(10), np.zeros(10)], axis=1)
    assert crop_neighbourhood(line, [4.2, 0, 0], 3).tolist() == [4, 5, 3]
    assert sorted(crop_neighbourhood(line, [0, 0, 0], 50).tolist()) == list(range(10))  # whole scene


def test_coverage_sampler_covers_a_5000_point_cloud_within_three_times_the_ideal_crops():
    coords = np.random.default_rng(0).uniform(size=(5000, 3))
    sampler = CoverageSampler(coords, num_points=500, rng=np.random.default_rng(0))
    first = sampler.next_crop()
    assert len(first) == 500 and sampler.covered.sum() == 500
    # the first seed is the point with the lowest initial possibility, and a crop starts at its seed
    assert first[0] == np.argmin(np.random.default_rng(0).random(5000))
    budget = math.ceil(5000 / 500) * 3
    crops = 1
    while not sampler.covered.all() and crops < budget:
        sampler.next_crop()
        crops += 1
    assert sampler.covered.sum() == 5000 and sampler.coverage == 1.0
    assert crops <= budget  # measured 28 crops for this seed


def test_coverage_sampler_is_reproducible_and_starts_new_crops_where_coverage_is_low():
    coords = np.random.default_rng(1).uniform(size=(1000, 3))
    runs = []
    for _ in range(2):
        sampler = CoverageSampler(coords, 100, np.random.default_rng(5))
        runs.append([sampler.next_crop() for _ in range(5)])
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)
    # each new seed lies outside the previous crop's core (its inner half by distance)
    for previous, current in zip(runs[0], runs[0][1:]):
        assert current[0] not in set(previous[:50].tolist())
