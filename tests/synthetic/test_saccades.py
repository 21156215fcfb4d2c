"""Images -> event recordings by N-MNIST-style saccades: events on edges, labels move with the image."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from datamodules.formats.dsec import read_dsec_semantic_sequence, write_label_png
from datamodules.synthetic.saccades import (
    displacement_at,
    images_to_event_recordings,
    saccade_path,
    shift_image,
    shift_mask,
)
from vision.errors import DataError
from vision.labels.types import IGNORE_INDEX

TOP, BOTTOM, LEFT, RIGHT = 10, 26, 12, 29  # the bright square occupies rows 10..25, columns 12..28


def square_pair(folder, name="square"):
    """A 40x48 dark image with a bright square, and its mask (1 = square, 0 = background)."""
    image = np.full((40, 48), 25, np.uint8)
    image[TOP:BOTTOM, LEFT:RIGHT] = 230
    mask = np.zeros((40, 48), np.int64)
    mask[TOP:BOTTOM, LEFT:RIGHT] = 1
    Image.fromarray(image).save(folder / f"{name}.png")
    write_label_png(folder / f"{name}_mask.png", mask)
    return folder / f"{name}.png", folder / f"{name}_mask.png"


def distance_to_square_border(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Distance (px) from pixel centres to the border of the square [LEFT-0.5, RIGHT-0.5) x [TOP-0.5, BOTTOM-0.5)."""
    dx = np.minimum(np.abs(x - (LEFT - 0.5)), np.abs(x - (RIGHT - 0.5)))
    dy = np.minimum(np.abs(y - (TOP - 0.5)), np.abs(y - (BOTTOM - 0.5)))
    inside_x = (x > LEFT - 0.5) & (x < RIGHT - 0.5)
    inside_y = (y > TOP - 0.5) & (y < BOTTOM - 0.5)
    return np.where(inside_x & inside_y, np.minimum(dx, dy),
                    np.where(inside_x, dy, np.where(inside_y, dx, np.hypot(dx, dy))))


@pytest.fixture
def recording(tmp_path):
    pair = square_pair(tmp_path)
    [folder] = images_to_event_recordings([pair], tmp_path / "out", seed=0, amplitude_px=4.0)
    return folder


def test_triangle_saccades_visit_three_vertices_in_300_ms():
    path = saccade_path("triangle", 300, 4.0)
    assert displacement_at(path, 100_000) == (4.0, 0.0)
    assert displacement_at(path, 150_000) == pytest.approx((3.0, np.sqrt(3)))  # half way up the second side
    assert displacement_at(path, 300_000) == (0.0, 0.0)


def test_events_fall_on_the_edges_of_the_moving_image(recording):
    ev = read_dsec_semantic_sequence(recording, num_classes=None).events.read_all()
    assert len(ev) > 1000 and set(np.unique(ev.p).tolist()) == {0, 1}
    path = saccade_path("triangle", 300, 4.0)
    shift = np.array([displacement_at(path, t) for t in ev.t])
    # back in the image's own frame, each event pixel should sit on the square's border
    near = distance_to_square_border(ev.x - shift[:, 0], ev.y - shift[:, 1]) <= 1.5
    assert near.mean() > 0.95


def test_labels_move_with_the_image(recording):
    sequence = read_dsec_semantic_sequence(recording, num_classes=None)
    assert sequence.timestamps_us.tolist() == [50_000, 150_000, 250_000]  # the middle of each saccade
    gray = np.asarray(Image.open(recording.parent.parent / "square.png"), np.float64) / 255
    for i, t in enumerate(sequence.timestamps_us):
        dx, dy = displacement_at(saccade_path("triangle", 300, 4.0), t)
        mask = sequence.label(i)
        moved = shift_image(gray, dx, dy)
        known = mask != IGNORE_INDEX
        assert np.array_equal(mask[known] == 1, moved[known] > 0.5)
        assert np.array_equal(np.argwhere(mask == 1).min(axis=0), [TOP + round(dy), LEFT + round(dx)])
    # at 150 ms the image sits at (3, 1.73): the first 3 columns and 2 rows have no source pixel
    assert (sequence.label(1)[:, :3] == IGNORE_INDEX).all() and (sequence.label(1)[:2] == IGNORE_INDEX).all()


def test_shift_mask_uses_nearest_whole_pixels_and_marks_uncovered_pixels_ignore():
    mask = np.arange(12).reshape(3, 4)
    assert shift_mask(mask, 1.4, -0.6).tolist() == [[-100, 4, 5, 6], [-100, 8, 9, 10], [-100, -100, -100, -100]]


def test_conversion_is_reproducible_refuses_to_overwrite_and_replaces_on_request(tmp_path, recording):
    pair = (recording.parent.parent / "square.png", recording.parent.parent / "square_mask.png")
    first = (recording / "events.h5").read_bytes()
    with pytest.raises(DataError, match="exists; pass overwrite=True"):
        images_to_event_recordings([pair], recording.parent, amplitude_px=4.0)
    images_to_event_recordings([pair], recording.parent, amplitude_px=4.0, overwrite=True)
    assert (recording / "events.h5").read_bytes() == first
    assert sorted(p.name for p in recording.parent.iterdir()) == ["square"]  # no temporary folders left


def test_mask_of_another_size_and_flat_image_are_data_errors(tmp_path):
    image, _ = square_pair(tmp_path)
    write_label_png(tmp_path / "small.png", np.zeros((8, 8), np.int64))
    with pytest.raises(DataError, match="small.png: mask is 8x8 but image"):
        images_to_event_recordings([(image, tmp_path / "small.png")], tmp_path / "out")
    Image.fromarray(np.full((40, 48), 90, np.uint8)).save(tmp_path / "flat.png")
    with pytest.raises(DataError, match="flat.png: the image is uniform"):
        images_to_event_recordings([(tmp_path / "flat.png", tmp_path / "square_mask.png")], tmp_path / "out",
                                   model=None, contrast=0.2, label_times_ms=[100])
    assert not (tmp_path / "out" / "flat").exists()
