"""PNG pictures of vision.viz: sizes, class colours where expected, overwrite refusal, same pixels twice."""

from __future__ import annotations

import json

import numpy as np
import pytest
from matplotlib.container import ErrorbarContainer
from PIL import Image

from vision.errors import DataError
from vision.labels.types import IGNORE_INDEX, PointLabels
from vision.viz import (
    IGNORE_COLOR,
    class_colors,
    colorize,
    event_frame_image,
    label_efficiency_figure,
    label_efficiency_plot,
    load_benchmark_rows,
    render_detection_panels,
    render_event_panels,
    render_point_cloud_panels,
)
from vision.viz.pointcloud import project

NAMES = ["floor", "wall", "ceiling"]


def pixels(path) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB of a PNG."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def colors_in(region: np.ndarray) -> set[tuple[int, int, int]]:
    """The distinct RGB colours of ``region`` ``(..., 3)`` (packed into one int: np.unique(axis=0) is slow)."""
    packed = np.unique(region.reshape(-1, 3).astype(np.int64) @ np.array([1 << 16, 1 << 8, 1]))
    return {(int(v >> 16), int(v >> 8) & 255, int(v) & 255) for v in packed}


def views_of(image: np.ndarray, column: int, rows=(0, 1)) -> np.ndarray:
    """The point-cloud views of a column: below the 40 px title strip, without the 20 px view caption."""
    return np.concatenate([image[40 + 500 * r + 20:40 + 500 * (r + 1), 500 * column:500 * (column + 1)]
                           for r in rows])


def color(class_id: int) -> tuple[int, int, int]:
    return tuple(int(v) for v in class_colors(len(NAMES))[class_id])


def plane(z: float, n: int, seed: int) -> np.ndarray:
    """``n`` points on the 4 x 3 m rectangle at height ``z``."""
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.uniform(0, 4, n), rng.uniform(0, 3, n), np.full(n, z)])


@pytest.fixture
def room():
    """A floor (class 0) at z = 0 and a ceiling (class 2) 3 m above it, point for point."""
    floor = plane(0.0, 3000, 1)
    coords = np.concatenate([floor, floor + [0.0, 0.0, 3.0]])
    return coords, np.repeat([0, 2], 3000)


def test_palette_is_fixed_distinct_and_keeps_grey_for_ignore():
    assert class_colors(3).tolist() == [[31, 119, 180], [255, 127, 14], [44, 160, 44]]  # tab10 order
    many = class_colors(60)
    assert many.dtype == np.uint8 and np.array_equal(many[:3], class_colors(3))
    assert len(np.unique(many, axis=0)) == 60 and IGNORE_COLOR not in {tuple(c) for c in many.tolist()}
    assert colorize(np.array([[1, IGNORE_INDEX]]), 3).tolist() == [[[255, 127, 14], list(IGNORE_COLOR)]]
    with pytest.raises(ValueError, match="label 3 is outside the 3 classes"):
        colorize(np.array([3]), 3)


def test_oblique_projection_numbers():
    # looking from +x (azimuth 0) at the horizon (elevation 0): screen right = +y, up = +z, depth = x
    uv, depth = project(np.array([[1.0, 2.0, 3.0]]), "oblique", azimuth=0.0, elevation=0.0)
    np.testing.assert_allclose(uv, [[2.0, 3.0]], atol=1e-12)
    np.testing.assert_allclose(depth, [1.0])


def test_point_cloud_panels_show_class_colours_per_column(tmp_path, room):
    coords, labels = room
    out = render_point_cloud_panels(coords, {"full labels": labels, "unlabelled": np.full(6000, IGNORE_INDEX),
                                             "prediction": np.zeros(6000, int)}, NAMES, tmp_path / "room.png")
    image = pixels(out)
    assert out == tmp_path / "room.png" and image.shape == (1110, 1500, 3)
    full, unlabelled, prediction = (colors_in(views_of(image, c)) for c in range(3))
    # the default clip (85% of the height range) removes the ceiling, so the floor shows from above;
    # the oblique view looks through the missing ceiling too
    assert color(0) in full and color(2) not in full and IGNORE_COLOR not in full
    assert IGNORE_COLOR in unlabelled and not {color(0), color(2)} & unlabelled
    assert color(0) in prediction and color(2) not in prediction
    legend = colors_in(image[1040:])
    assert {color(0), IGNORE_COLOR} <= legend and color(1) not in legend  # only the classes present


def test_top_view_without_clip_shows_the_ceiling(tmp_path, room):
    coords, labels = room
    out = render_point_cloud_panels(coords, {"full labels": labels}, NAMES, tmp_path / "room.png",
                                    top_view_clip=None)
    top = colors_in(views_of(pixels(out), 0, rows=(0,)))
    assert color(2) in top and color(0) not in top  # the z-buffer keeps the nearest (highest) point


def test_sparse_points_are_drawn_as_markers_with_rgb_column(tmp_path, room):
    coords, labels = room
    sparse = np.full(6000, IGNORE_INDEX)
    picked = np.array([10, 20, 30])
    sparse[picked] = labels[picked]
    rgb = np.tile([1.0, 0.0, 1.0], (6000, 1))  # magenta
    out = render_point_cloud_panels(coords, {"sparse labels (3 points)": sparse}, NAMES, tmp_path / "s.png",
                                    colors=rgb, sparse_points=picked, max_points=1000)
    image = pixels(out)
    assert image.shape == (1110, 1000, 3)
    assert (255, 0, 255) in colors_in(views_of(image, 0))
    sparse_column = colors_in(views_of(image, 1))
    assert color(0) in sparse_column and IGNORE_COLOR in sparse_column


def test_same_input_same_pixels_and_no_silent_overwrite(tmp_path, room):
    coords, labels = room
    first = render_point_cloud_panels(coords, {"full labels": labels}, NAMES, tmp_path / "a.png", max_points=2000)
    second = render_point_cloud_panels(coords, {"full labels": labels}, NAMES, tmp_path / "b.png", max_points=2000)
    assert np.array_equal(pixels(first), pixels(second))
    before = first.read_bytes()
    with pytest.raises(FileExistsError, match="a.png: already exists"):
        render_point_cloud_panels(coords, {"full labels": 2 - labels}, NAMES, first)
    assert first.read_bytes() == before
    render_point_cloud_panels(coords, {"full labels": 2 - labels}, NAMES, first, overwrite=True)
    assert not np.array_equal(pixels(first), pixels(second))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]  # no temporary files left


def test_point_cloud_rejects_labels_of_the_wrong_length(tmp_path, room):
    coords, labels = room
    with pytest.raises(DataError, match=r"panel 'full labels' has 5 labels for 6000 points"):
        render_point_cloud_panels(coords, {"full labels": labels[:5]}, NAMES, tmp_path / "x.png")
    with pytest.raises(DataError, match="label 5 is outside the 3 classes"):
        render_point_cloud_panels(coords, {"full labels": labels + 5}, NAMES, tmp_path / "x.png")


def test_event_frame_latest_event_decides_the_colour():
    # pixel (0,0): ON then OFF -> blue; pixel (1,0): OFF then ON (polarity +-1) -> red; (2,0) no event
    image = event_frame_image(np.array([0, 1, 0, 1]), np.array([0, 0, 0, 0]), np.array([1, -1, -1, 1]), 2, 3)
    assert image.shape == (2, 3, 3) and image.dtype == np.uint8
    assert image[0].tolist() == [[0, 0, 255], [255, 0, 0], [255, 255, 255]]
    assert (image[1] == 255).all()
    with pytest.raises(ValueError, match="1 events lie outside the 3x2 sensor"):
        event_frame_image(np.array([3]), np.array([0]), np.array([1]), 2, 3)


def test_event_panels_masks_and_point_circles(tmp_path):
    height, width = 48, 64
    frame = event_frame_image(np.array([5, 6]), np.array([5, 5]), np.array([1, 0]), height, width)
    mask = np.zeros((height, width), int)
    mask[:, 32:] = 1
    sparse = np.full((height, width), IGNORE_INDEX)
    points = {"sparse labels": PointLabels(class_id=[1], xy=[[48.0, 20.0]])}
    out = render_event_panels(frame, {"full labels": mask, "sparse labels": sparse}, NAMES, tmp_path / "ev.png",
                              points=points)
    image = pixels(out)
    assert image.shape == (40 + 375 + 60, 1500, 3)  # 500 px wide images, 500 * 48 / 64 = 375 px high
    body = image[40:415]
    assert {(255, 0, 0), (0, 0, 255)} <= colors_in(body[:, :500])
    full = body[:, 500:1000]
    assert tuple(full[187, 100]) == color(0) and tuple(full[187, 400]) == color(1)  # left / right halves
    sparse_column = colors_in(body[:, 1000:])
    assert IGNORE_COLOR in sparse_column and color(1) in sparse_column and color(0) not in sparse_column
    with pytest.raises(FileExistsError):
        render_event_panels(frame, {"full labels": mask}, NAMES, out)


def test_detection_panels_colour_boxes_by_class_and_hide_low_scores(tmp_path):
    image = np.full((50, 100, 3), 90, np.uint8)
    panels = {
        "full labels": {"boxes": [[10, 10, 40, 40]], "labels": [1]},
        "sparse labels given": {"points": [[70.0, 25.0]], "labels": [2]},
        "prediction": {"boxes": [[10, 10, 40, 40], [50, 5, 90, 45]], "labels": [1, 0], "scores": [0.9, 0.2]},
    }
    out = render_detection_panels(image, panels, NAMES, tmp_path / "det.png")
    picture = pixels(out)
    assert picture.shape == (40 + 250 + 60, 1500, 3)  # 100 x 50 image enlarged to 500 x 250
    body = picture[40:290]
    full, given, predicted = (colors_in(body[:, c * 500:(c + 1) * 500]) for c in range(3))
    assert color(1) in full and color(0) not in full
    assert color(2) in given and color(1) not in given  # the point's cross
    assert color(1) in predicted and color(0) not in predicted  # score 0.2 < 0.3: not drawn
    lowered = render_detection_panels(image, panels, NAMES, tmp_path / "low.png", score_threshold=0.1)
    assert color(0) in colors_in(pixels(lowered)[40:290, 1000:])


def benchmark_rows() -> list[dict]:
    return [
        {"task": "pointcloud", "method": "sqn", "labels": "0.1pct", "label_fraction": 0.001, "label_count": 52,
         "metric": {"miou": 0.50, "miou_std": 0.03}},
        {"task": "pointcloud", "method": "sqn", "labels": "1pct", "label_fraction": 0.01, "label_count": 520,
         "metric": {"miou": 0.60, "miou_std": 0.02}},
        {"task": "pointcloud", "method": "sqn", "labels": "full", "label_fraction": 1.0, "metric": {"miou": 0.70}},
        {"task": "pointcloud", "method": "pce", "labels": "1pct", "label_fraction": 0.01, "metric": {"miou": 0.55}},
    ]


def test_label_efficiency_figure_has_error_bars_and_full_label_line():
    figure = label_efficiency_figure(benchmark_rows())
    axes = figure.axes[0]
    assert axes.get_xscale() == "log"
    bars = {c.get_label(): c for c in axes.containers if isinstance(c, ErrorbarContainer)}
    assert bars["sqn"].has_yerr and not bars["pce"].has_yerr
    segments = bars["sqn"].lines[2][0].get_segments()
    np.testing.assert_allclose([s[:, 1] for s in segments], [[0.47, 0.53], [0.58, 0.62]])  # mean -+ std
    dashed = [line for line in axes.lines if line.get_linestyle() == "--"]
    assert [line.get_label() for line in dashed] == ["sqn (full labels)"]
    np.testing.assert_allclose(dashed[0].get_ydata(), [0.70, 0.70])


def test_rows_of_several_seeds_are_averaged_with_their_spread():
    rows = [{"task": "events", "method": "m", "label_fraction": 0.01, "metric": {"miou": v}} for v in (0.5, 0.6, 0.7)]
    bars = label_efficiency_figure(rows).axes[0].containers[0]
    (segment,) = bars.lines[2][0].get_segments()
    np.testing.assert_allclose(segment[:, 1], [0.5, 0.7])  # mean 0.6, sample std 0.1


def test_label_efficiency_plot_writes_png(tmp_path):
    out = label_efficiency_plot(benchmark_rows(), tmp_path / "plot.png")
    assert pixels(out).shape == (450, 700, 3)
    with pytest.raises(FileExistsError):
        label_efficiency_plot(benchmark_rows(), out)
    with pytest.raises(DataError, match="no benchmark row has metric 'map'"):
        label_efficiency_plot(benchmark_rows(), tmp_path / "map.png", metric="map")


def test_load_benchmark_rows_skips_non_rows_and_names_bad_json(tmp_path):
    rows = benchmark_rows()
    (tmp_path / "a.json").write_text(json.dumps(rows[0]))
    (tmp_path / "b.json").write_text(json.dumps(rows[1:]))
    (tmp_path / "index.json").write_text(json.dumps({"generated": "2024-01-01"}))
    (tmp_path / "events.json").write_text(json.dumps({"task": "events", "method": "x", "metric": {"miou": 0.3}}))
    assert load_benchmark_rows(tmp_path, task="pointcloud") == rows
    assert len(load_benchmark_rows(tmp_path)) == 5
    (tmp_path / "broken.json").write_text('{"task": ')
    with pytest.raises(DataError, match=r"broken\.json: invalid JSON"):
        load_benchmark_rows(tmp_path)
