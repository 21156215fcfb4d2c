"""Conversions between COCO, VOC and YOLO: round trips keep boxes and classes; images are linked."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datamodules.formats.detection_convert import convert_detection, read_detection
from vision.errors import DataError


def make_image(path: Path, width: int, height: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), (60, 160, 60)).save(path)


def make_coco(folder: Path, extra_annotations: list | None = None) -> Path:
    """Two images (one without boxes); fractional boxes; category ids 5 (person) and 2 (car)."""
    make_image(folder / "pics" / "street.jpg", 120, 80)
    make_image(folder / "pics" / "empty.png", 40, 30)
    data = {
        "images": [{"id": 4, "file_name": "pics/street.jpg", "width": 120, "height": 80},
                   {"id": 9, "file_name": "pics/empty.png", "width": 40, "height": 30}],
        "annotations": [{"id": 1, "image_id": 4, "category_id": 5, "bbox": [10.25, 5.5, 30.5, 60.125]},
                        {"id": 2, "image_id": 4, "category_id": 2, "bbox": [70, 40, 50, 40]},
                        {"id": 3, "image_id": 4, "category_id": 5, "bbox": [0, 0, 1.5, 2.75]}]
                       + (extra_annotations or []),
        "categories": [{"id": 5, "name": "person"}, {"id": 2, "name": "car"}],
    }
    (folder / "instances.json").write_text(json.dumps(data))
    return folder / "instances.json"


def named_boxes(dataset) -> dict[str, list[tuple[str, list[float]]]]:
    """Per image stem, (class name, box) pairs: comparable across formats that renumber ids."""
    return {Path(r.file_name).stem: [(dataset.categories[c], b.tolist())
                                     for b, c in zip(r.boxes.boxes, r.boxes.class_id)]
            for r in dataset.images}


def test_coco_to_voc_to_yolo_to_coco_keeps_boxes_and_classes(tmp_path):
    source = read_detection(make_coco(tmp_path / "coco"), "coco")
    convert_detection(tmp_path / "coco" / "instances.json", "coco", tmp_path / "voc", "voc")
    convert_detection(tmp_path / "voc", "voc", tmp_path / "yolo", "yolo")
    convert_detection(tmp_path / "yolo", "yolo", tmp_path / "back", "coco")
    result = read_detection(tmp_path / "back", "coco")

    assert sorted(result.categories) == ["car", "person"]
    before, after = named_boxes(source), named_boxes(result)
    assert sorted(after) == ["empty", "street"] and after["empty"] == []
    assert [name for name, _ in after["street"]] == ["person", "car", "person"]
    # [x, y, w, h] = [10.25, 5.5, 30.5, 60.125] -> xyxy [10.25, 5.5, 40.75, 65.625] after three formats
    np.testing.assert_allclose(after["street"][0][1], [10.25, 5.5, 40.75, 65.625], atol=1e-3)
    np.testing.assert_allclose([b for _, b in after["street"]], [b for _, b in before["street"]], atol=1e-3)
    assert (tmp_path / "back" / "images" / "empty.png").is_file()
    # hard links, not copies: same inode as the original picture
    assert os.stat(tmp_path / "back" / "images" / "street.jpg").st_ino == \
        os.stat(tmp_path / "coco" / "pics" / "street.jpg").st_ino


def test_point_labels_survive_coco_to_coco_but_not_voc(tmp_path):
    json_path = make_coco(tmp_path / "coco", [{"id": 7, "image_id": 9, "category_id": 2, "point": [12, 3.5]}])
    convert_detection(json_path, "coco", tmp_path / "copy", "coco")
    copy = read_detection(tmp_path / "copy", "coco")
    np.testing.assert_allclose(copy.images[1].points.xy, [[12, 3.5]])
    assert copy.categories[copy.images[1].points.class_id[0]] == "car"
    with pytest.raises(DataError, match="1 point labels cannot be written as Pascal VOC"):
        convert_detection(json_path, "coco", tmp_path / "voc", "voc")


def test_convert_refuses_unknown_formats_and_existing_output(tmp_path):
    json_path = make_coco(tmp_path / "coco")
    with pytest.raises(DataError, match="unknown detection format 'kitti'"):
        convert_detection(json_path, "coco", tmp_path / "out", "kitti")
    convert_detection(json_path, "coco", tmp_path / "out", "yolo")
    with pytest.raises(DataError, match="already exists; pass --overwrite"):
        convert_detection(json_path, "coco", tmp_path / "out", "yolo")
    convert_detection(json_path, "coco", tmp_path / "out", "yolo", overwrite=True)


def test_images_with_the_same_stem_cannot_share_a_flat_folder(tmp_path):
    make_image(tmp_path / "a" / "x.jpg", 8, 8)
    make_image(tmp_path / "b" / "x.jpg", 8, 8)
    data = {"images": [{"id": 1, "file_name": "a/x.jpg", "width": 8, "height": 8},
                       {"id": 2, "file_name": "b/x.jpg", "width": 8, "height": 8}],
            "annotations": [], "categories": [{"id": 1, "name": "thing"}]}
    (tmp_path / "c.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match="share the stem 'x'"):
        convert_detection(tmp_path / "c.json", "coco", tmp_path / "out", "yolo")


def test_bccd_test_split_to_coco_keeps_counts(shared_data, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BCCD's two zero-size boxes are covered in test_voc.py
        source = convert_detection(shared_data / "bccd" / "BCCD", "voc", tmp_path / "coco", "coco", split="test")
    result = read_detection(tmp_path / "coco", "coco")
    assert len(result.images) == 72 and result.num_boxes == 945
    assert result.class_counts() == {"Platelets": 69, "RBC": 805, "WBC": 71}
    assert named_boxes(result) == named_boxes(source)
