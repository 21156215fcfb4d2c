"""YOLO txt reader/writer: normalised centre boxes, class files, validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datamodules.formats.detection_common import BoxClippedWarning
from datamodules.formats.yolo import read_yolo, write_yolo
from vision.errors import DataError
from vision.labels.types import PointLabels


def make_image(path: Path, width: int, height: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), (10, 90, 200)).save(path)


def make_yolo(root: Path, labels: dict[str, str], classes: str = "cat\ndog\n") -> Path:
    """100x50 images ``<name>.png`` and their label text (None = no label file)."""
    for name, text in labels.items():
        make_image(root / "images" / f"{name}.png", 100, 50)
        if text is not None:
            (root / "labels").mkdir(parents=True, exist_ok=True)
            (root / "labels" / f"{name}.txt").write_text(text)
    (root / "classes.txt").write_text(classes)
    return root


def test_read_yolo_converts_normalised_centres_to_pixel_xyxy(tmp_path):
    root = make_yolo(tmp_path, {"a": "1 0.5 0.5 0.2 0.4\n\n0 0.1 0.2 0.2 0.4\n", "b": None})
    dataset = read_yolo(root)

    assert dataset.categories == ["cat", "dog"]
    first, second = dataset.images
    assert (first.image_id, first.file_name, first.width, first.height) == ("a", "a.png", 100, 50)
    # centre (50, 25), size (20, 20) -> [40, 15, 60, 35]; centre (10, 10), size (20, 20) -> [0, 0, 20, 20]
    np.testing.assert_allclose(first.boxes.boxes, [[40, 15, 60, 35], [0, 0, 20, 20]], atol=1e-4)
    assert first.boxes.class_id.tolist() == [1, 0]
    assert len(second.boxes) == 0  # no label file: an image without objects


def test_class_names_from_data_yaml_dict(tmp_path):
    root = make_yolo(tmp_path, {"a": "2 0.5 0.5 0.2 0.2\n"})
    (root / "classes.txt").unlink()
    (root / "data.yaml").write_text("names:\n  0: person\n  1: car\n  2: bike\n")
    dataset = read_yolo(root)
    assert dataset.categories == ["person", "car", "bike"]
    assert dataset.class_counts() == {"person": 0, "car": 0, "bike": 1}


def test_write_yolo_round_trip_within_a_thousandth_of_a_pixel(tmp_path):
    dataset = read_yolo(make_yolo(tmp_path / "src", {"a": "1 0.5 0.5 0.2 0.4\n", "b": None}))
    dataset.images[0].boxes.boxes[0] = [12.345, 6.789, 98.765, 43.21]
    write_yolo(dataset, tmp_path / "dst", split="train")

    row = (tmp_path / "dst" / "labels" / "train" / "a.txt").read_text().split()
    # cx = (12.345 + 98.765) / 2 / 100, cy = (6.789 + 43.21) / 2 / 50, w = 86.42 / 100, h = 36.421 / 50
    assert row[0] == "1" and len(row[1]) == len("0.55555000")
    np.testing.assert_allclose([float(v) for v in row[1:]], [0.55555, 0.49999, 0.8642, 0.72842], atol=1e-7)
    assert (tmp_path / "dst" / "labels" / "train" / "b.txt").read_text() == ""
    assert "names:\n- cat\n- dog\n" in (tmp_path / "dst" / "data.yaml").read_text()
    again = read_yolo(tmp_path / "dst", split="train")
    assert again.categories == ["cat", "dog"]
    np.testing.assert_allclose(again.images[0].boxes.boxes, dataset.images[0].boxes.boxes, atol=1e-3)
    with pytest.raises(DataError, match="already exists"):
        write_yolo(dataset, tmp_path / "dst", split="train")


def test_box_partly_outside_is_clipped_with_a_warning(tmp_path):
    root = make_yolo(tmp_path, {"a": "0 0.95 0.5 0.2 0.2\n"})  # x from 85 to 105 in a 100 px image
    with pytest.warns(BoxClippedWarning, match=r"a.txt: line 1: .*clipped to \[85, 20, 100, 30\]"):
        dataset = read_yolo(root)
    np.testing.assert_allclose(dataset.images[0].boxes.boxes, [[85, 20, 100, 30]], atol=1e-4)


@pytest.mark.parametrize("text, reason", [
    ("0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2\n", "a.txt: line 2: expected 5 columns 'class cx cy w h', got 4"),
    ("0 0.5 0.5 0.2 0.2 0.1 0.1\n", "a.txt: line 1: expected 5 columns"),
    ("2 0.5 0.5 0.2 0.2\n", "a.txt: line 1: class id 2 out of range 0..1"),
    ("1.5 0.5 0.5 0.2 0.2\n", "a.txt: line 1: class id '1.5' is not an integer"),
    ("0 0.5 abc 0.2 0.2\n", "a.txt: line 1: not a number"),
    ("0 0.5 0.5 0 0.2\n", "a.txt: line 1: empty box"),
    ("0 1.5 1.5 0.2 0.2\n", "a.txt: line 1: box [140, 70, 160, 80] lies entirely outside"),
])
def test_bad_label_lines_raise_data_error(tmp_path, text, reason):
    root = make_yolo(tmp_path, {"a": text})
    with pytest.raises(DataError) as info:
        read_yolo(root)
    assert reason in str(info.value)


def test_orphan_label_and_missing_classes_raise_data_error(tmp_path):
    root = make_yolo(tmp_path, {"a": "0 0.5 0.5 0.2 0.2\n"})
    (root / "labels" / "ghost.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    with pytest.raises(DataError, match="ghost.txt: label file has no image"):
        read_yolo(root)
    (root / "classes.txt").unlink()
    with pytest.raises(DataError, match="classes.txt: class names file not found"):
        read_yolo(root)


def test_corrupt_image_header_raises_data_error(tmp_path):
    root = make_yolo(tmp_path, {"a": "0 0.5 0.5 0.2 0.2\n"})
    (root / "images" / "a.png").write_bytes(b"not an image at all")
    with pytest.raises(DataError, match="a.png: cannot read the image header"):
        read_yolo(root)


def test_write_yolo_refuses_point_labels(tmp_path):
    dataset = read_yolo(make_yolo(tmp_path / "src", {"a": "0 0.5 0.5 0.2 0.2\n"}))
    dataset.images[0].points = PointLabels(class_id=[0], xy=[[3.0, 4.0]])
    with pytest.raises(DataError, match="1 point labels cannot be written as YOLO"):
        write_yolo(dataset, tmp_path / "dst")
