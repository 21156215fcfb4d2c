"""Seeded point-cloud augmentations: rotation, scaling, jitter, colour drop, YAML configuration."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import pdist

from datamodules.transforms.pointcloud_augment import PointCloudAugment, rotate_z


@pytest.fixture
def cloud():
    rng = np.random.default_rng(0)
    coords = rng.uniform(-1, 1, size=(200, 3)).astype(np.float32)
    return coords, rng.integers(0, 256, (200, 3)).astype(np.uint8)


def test_rotate_z_quarter_turn():
    np.testing.assert_allclose(rotate_z(np.array([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0]]), np.pi / 2),
                               [[0.0, 1.0, 2.0], [-1.0, 0.0, -1.0]], atol=1e-12)


def test_rotation_keeps_z_and_pairwise_distances(cloud):
    coords, colors = cloud
    rotate_only = PointCloudAugment(rotate_z=True, scale=None, jitter_sigma=0, color_drop=0)
    out, out_colors = rotate_only(coords, colors, np.random.default_rng(1))
    np.testing.assert_array_equal(out[:, 2], coords[:, 2])
    np.testing.assert_allclose(pdist(out), pdist(coords), atol=1e-5)
    assert not np.allclose(out[:, :2], coords[:, :2])
    np.testing.assert_array_equal(out_colors, colors)


def test_scaling_stays_in_range_per_axis(cloud):
    coords, colors = cloud
    scale_only = PointCloudAugment(rotate_z=False, scale=(0.8, 1.2), jitter_sigma=0, color_drop=0)
    rng = np.random.default_rng(2)
    factors = []
    for _ in range(200):
        out, _ = scale_only(coords, colors, rng)
        factor = out[0] / coords[0]
        np.testing.assert_allclose(out, coords * factor, rtol=1e-5)  # one factor per axis
        factors.append(factor)
    factors = np.array(factors)
    assert factors.min() >= 0.8 and factors.max() <= 1.2
    assert factors.min() < 0.82 and factors.max() > 1.18  # uniform draws reach both ends
    assert np.std(factors[:, 0] - factors[:, 1]) > 0.05  # anisotropic: axes scale differently


def test_jitter_is_clipped(cloud):
    coords, colors = cloud
    jitter_only = PointCloudAugment(rotate_z=False, scale=None, jitter_sigma=0.01, jitter_clip=0.015,
                                    color_drop=0)
    out, _ = jitter_only(coords, colors, np.random.default_rng(3))
    delta = out - coords
    assert np.abs(delta).max() <= 0.015 + 1e-6
    assert 0.006 < delta.std() < 0.01  # N(0, 0.01) shrunk a little by the clip at 1.5 sigma


def test_colour_drop_happens_with_its_probability(cloud):
    coords, colors = cloud
    augment = PointCloudAugment(color_drop=0.3)
    rng = np.random.default_rng(4)
    dropped = [not augment(coords, colors, rng)[1].any() for _ in range(2000)]
    assert abs(np.mean(dropped) - 0.3) < 0.03  # binomial std 0.01
    _, kept = PointCloudAugment(color_drop=0.0)(coords, colors, rng)
    np.testing.assert_array_equal(kept, colors)


def test_colour_jitter_keeps_uint8_range(cloud):
    coords, _ = cloud
    colors = np.array([[0, 128, 255]] * 200, dtype=np.uint8)
    _, out = PointCloudAugment(color_drop=0, color_jitter=0.05)(coords, colors, np.random.default_rng(5))
    assert out.dtype == np.uint8
    assert out[:, 0].min() == 0 and out[:, 2].max() == 255 and 110 < out[:, 1].mean() < 146


def test_same_seed_same_result_other_seed_other_result(cloud):
    coords, colors = cloud
    augment = PointCloudAugment(color_jitter=0.02)
    a = augment(coords, colors, np.random.default_rng(7))
    b = augment(coords, colors, np.random.default_rng(7))
    c = augment(coords, colors, np.random.default_rng(8))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.allclose(a[0], c[0])
    np.testing.assert_array_equal(cloud[0], coords)  # the input is not modified


def test_configurable_from_yaml_through_jsonargparse():
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(PointCloudAugment, "augment")
    config = parser.parse_string("augment:\n  scale: [0.7, 1.3]\n  color_drop: 0.5\n  rotate_z: false\n")
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # renamed in 4.49
    augment = instantiate(config).augment
    assert isinstance(augment, PointCloudAugment)
    assert (augment.scale, augment.color_drop, augment.rotate_z) == ((0.7, 1.3), 0.5, False)
    assert augment.jitter_sigma == 0.005  # the default


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="scale"):
        PointCloudAugment(scale=(1.2, 0.8))
    with pytest.raises(ValueError, match="probability"):
        PointCloudAugment(color_drop=1.5)
