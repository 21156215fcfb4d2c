"""Property tests: every protocol, on random label sets and budgets, keeps its exact budget, emits
only labels of the source, and gives the same labels for the same (seed, sample id)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from vision.labels.protocols import (
    BoxToPoint,
    Count,
    DropBoxes,
    Full,
    KeepBoxes,
    PerClass,
    PerInstance,
    Ratio,
)
from vision.labels.types import HUMAN, IGNORE_INDEX, BoxLabels, DenseLabels, PointLabels
from vision.labels.weakfile import sparsify

SETTINGS = settings(max_examples=50, deadline=None)

# class ids 0..4, with -1 standing for IGNORE_INDEX so that unlabelled entries are frequent
shapes = st.one_of(st.tuples(st.integers(0, 120)), st.tuples(st.integers(1, 9), st.integers(1, 9)))


@st.composite
def dense_labels(draw, with_instance: bool = False) -> DenseLabels:
    shape = draw(shapes)
    semantic = draw(arrays(np.int64, shape, elements=st.integers(-1, 4)))
    semantic[semantic == -1] = IGNORE_INDEX
    instance = draw(arrays(np.int64, shape, elements=st.integers(-1, 5))) if with_instance else None
    return DenseLabels(semantic, instance)


@st.composite
def box_labels(draw) -> BoxLabels:
    n = draw(st.integers(0, 12))
    corner = draw(arrays(np.float32, (n, 2), elements=st.floats(0, 500, width=32)))
    size = draw(arrays(np.float32, (n, 2), elements=st.floats(1, 200, width=32)))
    return BoxLabels(np.hstack([corner, corner + size]), draw(arrays(np.int32, n, elements=st.integers(0, 3))),
                     complete=draw(st.booleans()))


sample_ids = st.text(min_size=1, max_size=12)
seeds = st.integers(0, 2**31)


def positions_of(points: PointLabels, full: DenseLabels) -> np.ndarray:
    """Flat positions of the labels, checking that image labels sit on pixel centres."""
    if points.is_3d:
        return points.index
    cols, rows = points.xy.astype(np.int64).T
    assert np.array_equal(points.xy, np.stack([cols, rows], 1).astype(np.float32))
    return rows * full.semantic.shape[1] + cols


def check_points(points: PointLabels, full: DenseLabels) -> np.ndarray:
    """Labels come from labelled entries with their class, sorted and unique, human, confidence 1."""
    assert points.is_3d == (full.semantic.ndim == 1)
    positions = positions_of(points, full)
    assert np.array_equal(positions, np.unique(positions))
    assert np.array_equal(full.semantic.reshape(-1)[positions], points.class_id)
    assert (points.class_id != IGNORE_INDEX).all()
    assert (points.source == HUMAN).all() and (points.confidence == 1).all()
    return positions


def check_reproducible(protocol, full, seed, sample_id, **kwargs):
    first = protocol.draw(full, seed, sample_id, **kwargs)
    again = protocol.draw(full, seed, sample_id, **kwargs)
    for name in ("index", "xy", "boxes", "class_id"):
        a, b = getattr(first, name, None), getattr(again, name, None)
        assert (a is None and b is None) or np.array_equal(a, b)
    return first


@SETTINGS
@given(dense_labels(), st.floats(1e-4, 1.0), seeds, sample_ids)
def test_ratio(full, ratio, seed, sample_id):
    points = check_reproducible(Ratio(ratio), full, seed, sample_id)
    labelled = int((full.semantic != IGNORE_INDEX).sum())
    expected = 0 if labelled == 0 else min(labelled, max(1, int(np.floor(ratio * labelled + 0.5))))
    assert len(points) == expected
    check_points(points, full)


@SETTINGS
@given(dense_labels(), st.integers(1, 150), seeds, sample_ids)
def test_count(full, n, seed, sample_id):
    points = check_reproducible(Count(n), full, seed, sample_id)
    assert len(points) == min(n, int((full.semantic != IGNORE_INDEX).sum()))
    check_points(points, full)


@SETTINGS
@given(dense_labels(), st.integers(1, 6), seeds, sample_ids)
def test_per_class(full, k, seed, sample_id):
    points = check_reproducible(PerClass(k), full, seed, sample_id)
    check_points(points, full)
    present, counts = np.unique(full.semantic[full.semantic != IGNORE_INDEX], return_counts=True)
    kept, kept_counts = np.unique(points.class_id, return_counts=True)
    assert kept.tolist() == present.tolist()  # every class present is covered
    assert kept_counts.tolist() == np.minimum(counts, k).tolist()


@SETTINGS
@given(dense_labels(with_instance=True), st.integers(1, 4), st.sampled_from(["random", "centroid"]), seeds,
       sample_ids)
def test_per_instance(full, k, where, seed, sample_id):
    coords = np.random.default_rng(0).normal(size=(full.semantic.size, 3))
    kwargs = {"coords": coords} if full.semantic.ndim == 1 else {}
    points = check_reproducible(PerInstance(k, where), full, seed, sample_id, **kwargs)
    positions = check_points(points, full)
    instance = full.instance.reshape(-1)
    usable = instance[(full.semantic.reshape(-1) != IGNORE_INDEX) & (instance >= 0)]
    ids, counts = np.unique(usable, return_counts=True)
    kept, kept_counts = np.unique(instance[positions], return_counts=True)
    assert kept.tolist() == ids.tolist()
    assert kept_counts.tolist() == np.minimum(counts, k).tolist()


@SETTINGS
@given(dense_labels(), seeds, sample_ids)
def test_full_points(full, seed, sample_id):
    points = Full().draw(full, seed, sample_id)
    assert len(points) == int((full.semantic != IGNORE_INDEX).sum())
    check_points(points, full)


def check_boxes(out: BoxLabels, full: BoxLabels) -> None:
    rows = [tuple(b) + (c,) for b, c in zip(full.boxes.tolist(), full.class_id.tolist())]
    kept = [tuple(b) + (c,) for b, c in zip(out.boxes.tolist(), out.class_id.tolist())]
    remaining = iter(rows)
    assert all(any(r == row for row in remaining) for r in kept)  # a subsequence: original boxes, in order
    assert out.complete == (full.complete and len(out) == len(full))
    assert (out.source == HUMAN).all() and (out.confidence == 1).all()


@SETTINGS
@given(box_labels(), st.floats(0.0, 1.0), st.booleans(), seeds, sample_ids)
def test_drop_boxes(full, rate, keep_one, seed, sample_id):
    out = check_reproducible(DropBoxes(rate, keep_one), full, seed, sample_id)
    check_boxes(out, full)
    if keep_one and len(full):
        assert len(out) >= 1
    if rate == 0.0:
        assert len(out) == len(full)


@SETTINGS
@given(box_labels(), st.integers(1, 15), seeds, sample_ids)
def test_keep_boxes(full, k, seed, sample_id):
    out = check_reproducible(KeepBoxes(k), full, seed, sample_id)
    assert len(out) == min(k, len(full))
    check_boxes(out, full)


@SETTINGS
@given(box_labels(), st.sampled_from(["center", "ellipse"]), st.floats(0.01, 1.0), seeds, sample_ids)
def test_box_to_point(full, where, size, seed, sample_id):
    points = check_reproducible(BoxToPoint(where, size), full, seed, sample_id)
    assert len(points) == len(full) and points.class_id.tolist() == full.class_id.tolist()
    low, high = full.boxes[:, :2].astype(np.float64), full.boxes[:, 2:].astype(np.float64)
    centre, semi_axes = (low + high) / 2, size * (high - low) / 2
    assert ((((points.xy - centre) / semi_axes) ** 2).sum(axis=1) <= 1 + 1e-3).all()
    assert (points.xy >= low - 1e-3).all() and (points.xy <= high + 1e-3).all()


@SETTINGS
@given(st.lists(st.tuples(sample_ids, dense_labels()), min_size=1, max_size=6, unique_by=lambda t: t[0]),
       st.randoms(use_true_random=False), seeds)
def test_sparsify_ignores_order_and_subset(items, shuffler, seed):
    whole = sparsify(items, Ratio(0.3), seed)
    shuffled = list(items)
    shuffler.shuffle(shuffled)
    part = sparsify(shuffled[: max(1, len(items) // 2)], Ratio(0.3), seed)
    for sample_id in part:
        a, b = whole[sample_id], part[sample_id]
        assert np.array_equal(a.class_id, b.class_id)
        assert np.array_equal(a.index if a.is_3d else a.xy, b.index if b.is_3d else b.xy)
