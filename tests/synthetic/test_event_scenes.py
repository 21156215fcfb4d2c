"""Street scenes: parallax by depth, occlusion by depth, determinism, every class present."""

from __future__ import annotations

import numpy as np

from datamodules.synthetic.event_scenes import (
    BUILDING,
    EVENT_CLASSES,
    SKY,
    VEHICLE,
    CameraPath,
    StreetScene,
    make_layer,
    make_street_scene,
)
from vision.labels.seeding import sample_rng


def still_camera_moving_at(speed: float) -> CameraPath:
    t = np.arange(0.0, 1.0, 0.001)
    zeros = np.zeros_like(t)
    return CameraPath(t, speed * t, np.full_like(t, speed), zeros, zeros, np.ones_like(t))


def stripe_layer(depth: float, label: int, x0: float) -> object:
    """A 20-row canvas, 60 px wide, transparent except one bright column (index 30)."""
    alpha = np.zeros((20, 60))
    alpha[:, 30] = 1.0
    return make_layer(alpha * 0.9, alpha, np.full((20, 60), label), depth=depth, x0=x0, top=0.0)


def test_nearer_layers_move_faster_and_cover_farther_ones():
    # focal 100 px, camera at 2 m/s: after 0.1 s a point at depth d has moved 100 * 0.2 / d px left
    camera = still_camera_moving_at(2.0)
    far, near = stripe_layer(10.0, BUILDING, x0=-2.0), stripe_layer(5.0, VEHICLE, x0=-1.0)
    scene = StreetScene(height=20, width=40, focal=100.0, horizon=5.0, camera=camera, layers=[far, near])
    # canvas column 30 is world x0 + 30 * d / f: screen column 20 + (x0 + 0.3 d) * 100 / d at t = 0
    image, labels = scene.render(0.0, with_labels=True)
    assert np.flatnonzero(image[10] > 0.5).tolist() == [30]  # both stripes on column 30: near one in front
    assert labels[10, 30] == VEHICLE and labels[10, 0] == SKY
    image, labels = scene.render(0.1, with_labels=True)
    assert np.flatnonzero(image[10] > 0.5).tolist() == [26, 28]  # near moved 4 px, far 2 px
    assert labels[10, 26] == VEHICLE and labels[10, 28] == BUILDING
    assert scene.max_flow()[100] >= 40.0  # 2 m/s * 100 px / 5 m


def test_scene_is_reproducible_and_renders_valid_frames():
    first = make_street_scene(sample_rng(0, "a"), 48, 60, 0.5).render(0.25, with_labels=True)
    again = make_street_scene(sample_rng(0, "a"), 48, 60, 0.5).render(0.25, with_labels=True)
    other = make_street_scene(sample_rng(0, "b"), 48, 60, 0.5).render(0.25, with_labels=True)
    image, labels = first
    assert image.shape == (48, 60) and image.dtype == np.float32 and 0 <= image.min() and image.max() <= 1
    assert labels.dtype == np.int64 and labels.min() >= 0 and labels.max() < len(EVENT_CLASSES)
    assert np.array_equal(image, again[0]) and np.array_equal(labels, again[1])
    assert not np.array_equal(image, other[0])
    assert labels[0].tolist().count(SKY) + labels[0].tolist().count(BUILDING) > 30  # top row: sky or buildings


def test_every_class_appears_across_a_few_streets_and_brightness_does_not_give_the_class():
    counts = np.zeros(len(EVENT_CLASSES), np.int64)
    means = [[] for _ in EVENT_CLASSES]
    for i in range(6):
        scene = make_street_scene(sample_rng(0, f"street_{i}"), 96, 120, 1.0)
        for t in (0.2, 0.5, 0.8):
            image, labels = scene.render(t, with_labels=True)
            counts += np.bincount(labels.reshape(-1), minlength=len(EVENT_CLASSES))
            for k in np.unique(labels):
                means[k].append(float(image[labels == k].mean()))
    assert np.all(counts > 0), dict(zip(EVENT_CLASSES, counts.tolist()))
    # the brightness ranges of buildings and vehicles overlap: neither is always brighter
    assert min(means[BUILDING]) < max(means[VEHICLE]) and min(means[VEHICLE]) < max(means[BUILDING])
