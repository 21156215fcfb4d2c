"""Weak-label protocols: exact budgets, labels only from the source, seeded and reproducible."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from jsonargparse import ArgumentParser

from vision.errors import DataError
from vision.labels.protocols import (
    PROTOCOLS,
    BoxToPoint,
    Count,
    DropBoxes,
    Full,
    KeepBoxes,
    PerClass,
    PerInstance,
    Ratio,
    WeakLabelProtocol,
    protocol_from_name,
)
from vision.labels.types import HUMAN, IGNORE_INDEX, BoxLabels, DenseLabels, PointLabels

IGN = IGNORE_INDEX


def cloud(n: int = 1000, ignored_every: int = 10, classes: int = 4) -> DenseLabels:
    """``n`` points, class ``i % classes``, every ``ignored_every``-th point unlabelled."""
    semantic = np.arange(n) % classes
    semantic[::ignored_every] = IGN
    return DenseLabels(semantic)


def assert_from_source(points: PointLabels, full: DenseLabels) -> None:
    """Every label sits on a labelled entry of ``full`` with the same class, no repeats, sorted."""
    if points.is_3d:
        positions = points.index
    else:
        cols, rows = points.xy.astype(np.int64).T
        assert np.array_equal(points.xy, np.stack([cols, rows], 1).astype(np.float32))  # on pixel centres
        positions = rows * full.semantic.shape[1] + cols
    assert np.array_equal(positions, np.unique(positions))
    assert np.array_equal(full.semantic.reshape(-1)[positions], points.class_id)
    assert (points.class_id != IGN).all()
    assert (points.source == HUMAN).all() and (points.confidence == 1).all()


def test_ratio_keeps_rounded_share_of_labelled_points_and_at_least_one():
    full = cloud()  # 900 labelled
    assert len(Ratio(0.01).draw(full, 0, "a")) == 9
    assert len(Ratio(0.001).draw(full, 0, "a")) == 1  # round(0.9) = 1
    assert len(Ratio(0.0001).draw(full, 0, "a")) == 1  # round(0.09) = 0, but at least one
    assert len(Ratio(1.0).draw(full, 0, "a")) == 900
    assert len(Ratio(0.5).draw(DenseLabels(np.arange(5)), 0, "a")) == 3  # 2.5 rounds half up
    assert len(Ratio(0.5).draw(DenseLabels(np.full(7, IGN)), 0, "a")) == 0
    assert_from_source(Ratio(0.01).draw(full, 0, "a"), full)


def test_count_keeps_exactly_n_or_all():
    full = cloud(100)  # 90 labelled
    points = Count(7).draw(full, 3, "scene")
    assert len(points) == 7
    assert_from_source(points, full)
    assert len(Count(500).draw(full, 3, "scene")) == 90


def test_per_class_covers_every_class_with_min_k_count():
    full = DenseLabels(np.array([0, 0, 0, 0, 0, 1, IGN, 2, 2, 2]))
    points = PerClass(k=2).draw(full, 0, "s")
    assert points.class_id.tolist() == [0, 0, 1, 2, 2]
    assert_from_source(points, full)
    assert PerClass().draw(full, 0, "s").class_id.tolist() == [0, 1, 2]


def test_image_labels_give_pixel_xy_with_x_column_y_row():
    semantic = np.full((4, 6), IGN)
    semantic[2, 5] = 3
    points = Full().draw(DenseLabels(semantic), 0, "frame")
    assert points.index is None
    assert points.xy.dtype == np.float32 and points.xy.tolist() == [[5.0, 2.0]]
    assert points.class_id.tolist() == [3]


def test_point_protocols_on_images_only_pick_labelled_pixels():
    rng = np.random.default_rng(1)
    semantic = rng.integers(0, 3, (12, 9))
    semantic[rng.random((12, 9)) < 0.5] = IGN
    full = DenseLabels(semantic)
    for protocol in (Ratio(0.2), Count(5), PerClass(2), Full()):
        assert_from_source(protocol.draw(full, 0, "frame"), full)


def test_per_instance_random_keeps_k_per_instance():
    semantic = np.array([1, 1, 1, 2, 2, IGN, 0, 0])
    instance = np.array([5, 5, 5, 7, 7, 7, -1, -1])  # -1: no instance (stuff), never picked
    full = DenseLabels(semantic, instance)
    points = PerInstance(k=2).draw(full, 0, "s")
    assert len(points) == 4
    assert_from_source(points, full)
    assert sorted(instance[points.index].tolist()) == [5, 5, 7, 7]


def test_per_instance_centroid_picks_the_middle():
    # 3D: two instances along a line; their centroids are at x=2 and x=11
    coords = np.array([[0.0], [1], [2], [3], [4], [10], [11], [12]])
    full = DenseLabels(np.array([4, 4, 4, 4, 4, 6, 6, 6]), np.array([0, 0, 0, 0, 0, 1, 1, 1]))
    points = PerInstance(where="centroid").draw(full, 0, "s", coords=coords)
    assert points.index.tolist() == [2, 6] and points.class_id.tolist() == [4, 6]
    # image: a 3x3 square at rows 1-3, cols 2-4 -> its centre pixel (x=3, y=2)
    instance = np.full((5, 6), -1)
    instance[1:4, 2:5] = 9
    image = DenseLabels(np.where(instance >= 0, 1, 0), instance)
    assert PerInstance(where="centroid").draw(image, 0, "f").xy.tolist() == [[3.0, 2.0]]


def test_per_instance_without_instances_is_a_clear_error():
    with pytest.raises(ValueError, match="instance"):
        PerInstance().apply(DenseLabels(np.zeros(4, int)), np.random.default_rng(0))
    with pytest.raises(DataError, match="^scene_7: .*instance"):
        PerInstance().draw(DenseLabels(np.zeros(4, int)), 0, "scene_7")
    with pytest.raises(DataError, match="coords"):
        PerInstance(where="centroid").draw(DenseLabels(np.zeros(4, int), np.zeros(4, int)), 0, "s")


def test_draw_is_seeded_by_seed_and_sample_id_only():
    full = cloud(5000)
    first = Ratio(0.01).draw(full, 0, "room_1").index
    assert np.array_equal(first, Ratio(0.01).draw(full, 0, "room_1").index)
    assert not np.array_equal(first, Ratio(0.01).draw(full, 1, "room_1").index)
    assert not np.array_equal(first, Ratio(0.01).draw(full, 0, "room_2").index)


def boxes(n: int, complete: bool = True) -> BoxLabels:
    xy = np.arange(n, dtype=np.float32)[:, None] * 10
    return BoxLabels(np.hstack([xy, xy, xy + 4, xy + 2]), np.arange(n) % 3, complete=complete)


def test_drop_boxes_rate_statistics_and_at_least_one():
    kept, empty = [], 0
    for i in range(1500):
        out = DropBoxes(0.5).draw(boxes(4), 0, f"img_{i}")
        kept.append(len(out))
        assert out.complete == (len(out) == 4)
        empty += len(DropBoxes(0.5, keep_at_least_one=False).draw(boxes(4), 0, f"img_{i}")) == 0
    # 4 boxes x 0.5 kept, plus one box in the 1/16 of images that lost all four
    assert np.mean(kept) == pytest.approx(2.0625, abs=0.06)
    assert min(kept) == 1
    assert empty / 1500 == pytest.approx(1 / 16, abs=0.02)


def test_drop_boxes_edges():
    assert len(DropBoxes(0.0).draw(boxes(5), 0, "a")) == 5 and DropBoxes(0.0).draw(boxes(5), 0, "a").complete
    assert len(DropBoxes(1.0).draw(boxes(5), 0, "a")) == 1
    assert len(DropBoxes(1.0, keep_at_least_one=False).draw(boxes(5), 0, "a")) == 0
    assert len(DropBoxes(0.5).draw(boxes(0), 0, "a")) == 0


def test_keep_boxes_keeps_k_original_boxes():
    full = boxes(5)
    out = KeepBoxes(k=2).draw(full, 0, "img")
    assert len(out) == 2 and not out.complete
    rows = {tuple(b) for b in full.boxes.tolist()}
    assert all(tuple(b) in rows for b in out.boxes.tolist())
    assert out.class_id.tolist() == [int(b[0] / 10) % 3 for b in out.boxes]
    small = KeepBoxes(k=5).draw(boxes(3), 0, "img")
    assert len(small) == 3 and small.complete
    assert not KeepBoxes(k=5).draw(boxes(3, complete=False), 0, "img").complete


def test_box_to_point_center():
    full = BoxLabels([[0, 0, 4, 2], [10, 20, 30, 60]], [1, 0])
    points = BoxToPoint().draw(full, 0, "img")
    assert points.xy.tolist() == [[2.0, 1.0], [20.0, 40.0]] and points.class_id.tolist() == [1, 0]


def test_box_to_point_ellipse_lies_inside_ellipse_and_box_and_fills_it_uniformly():
    rng = np.random.default_rng(0)
    x1y1 = rng.uniform(0, 100, (2000, 2))
    full = BoxLabels(np.hstack([x1y1, x1y1 + rng.uniform(1, 50, (2000, 2))]), np.zeros(2000, int))
    points = BoxToPoint(where="ellipse", size=0.5).draw(full, 0, "img")
    centre = (full.boxes[:, :2] + full.boxes[:, 2:]) / 2
    semi_axes = 0.5 * (full.boxes[:, 2:] - full.boxes[:, :2]) / 2
    r2 = (((points.xy - centre) / semi_axes) ** 2).sum(axis=1)
    assert r2.max() <= 1.0 + 1e-4
    assert (points.xy >= full.boxes[:, :2]).all() and (points.xy <= full.boxes[:, 2:]).all()
    assert r2.mean() == pytest.approx(0.5, abs=0.03)  # uniform over a disk: E[r^2] = 1/2


def test_full_keeps_everything():
    full = cloud(20)
    points = Full().draw(full, 0, "a")
    assert points.index.tolist() == [i for i in range(20) if i % 10]
    out = Full().draw(boxes(3, complete=False), 0, "a")
    assert len(out) == 3 and out.complete is False


def test_box_protocol_on_dense_labels_is_a_data_error():
    with pytest.raises(DataError, match="^img_3: .*needs BoxLabels"):
        KeepBoxes().draw(cloud(10), 0, "img_3")
    with pytest.raises(DataError, match="needs DenseLabels"):
        Ratio(0.5).draw(boxes(2), 0, "img_3")


@pytest.mark.parametrize("make", [lambda: Ratio(0), lambda: Ratio(1.5), lambda: Count(0), lambda: Count(2.5),
                                  lambda: PerClass(0), lambda: PerInstance(where="middle"),
                                  lambda: DropBoxes(-0.1), lambda: DropBoxes(0.5, keep_at_least_one="yes"),
                                  lambda: KeepBoxes(0), lambda: BoxToPoint(size=0), lambda: BoxToPoint("corner")])
def test_constructors_reject_bad_arguments(make):
    with pytest.raises(ValueError):
        make()


def test_registry_names_and_params():
    assert list(PROTOCOLS) == ["ratio", "count", "per_class", "per_instance", "drop_boxes", "keep_boxes",
                               "box_to_point", "full"]
    assert PerInstance(k=3, where="centroid").params() == {"k": 3, "where": "centroid"}
    assert BoxToPoint().params() == {"where": "center", "size": 0.1}
    assert Full().params() == {}
    assert protocol_from_name("drop_boxes", rate=0.25) == DropBoxes(0.25, True)
    with pytest.raises(ValueError, match="known: ratio"):
        protocol_from_name("half")
    with pytest.raises(ValueError, match="rate"):
        protocol_from_name("ratio", rate=0.5)


def test_protocols_load_from_yaml_with_jsonargparse():
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--weak_labels", type=WeakLabelProtocol)
    text = yaml.safe_dump({"weak_labels": {"class_path": "vision.labels.protocols.Ratio",
                                           "init_args": {"ratio": 0.001}}})
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # renamed in 4.49
    config = instantiate(parser.parse_string(text))
    assert config.weak_labels == Ratio(0.001)
    bad = text.replace("0.001", "2.0")
    with pytest.raises(Exception, match="ratio"):
        instantiate(parser.parse_string(bad))
