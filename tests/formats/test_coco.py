"""COCO JSON reader/writer: boxes, this project's point labels, validation, results files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datamodules.formats.coco import coco_id_maps, read_coco, write_coco, write_coco_results
from datamodules.formats.detection_common import BoxClippedWarning
from vision.errors import DataError
from vision.labels.types import BoxLabels


def make_image(path: Path, width: int, height: int, noise: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = (np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8) if noise
              else np.full((height, width, 3), 120, np.uint8))
    Image.fromarray(pixels).save(path)


def coco_dict() -> dict:
    """Two images; category ids 7 (dog) and 3 (cat) are out of order on purpose; one crowd box."""
    return {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48},
                   {"id": 2, "file_name": "b.jpg", "width": 32, "height": 32}],
        "annotations": [{"id": 10, "image_id": 1, "category_id": 7, "bbox": [10, 20, 30, 15]},
                        {"id": 11, "image_id": 1, "category_id": 3, "bbox": [0.5, 1.5, 4, 6]},
                        {"id": 12, "image_id": 2, "category_id": 7, "bbox": [2, 2, 10, 10], "iscrowd": 1}],
        "categories": [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}],
    }


def write_sample(folder: Path, data: dict) -> Path:
    make_image(folder / "a.jpg", 64, 48)
    make_image(folder / "b.jpg", 32, 32)
    path = folder / "annotations.json"
    path.write_text(json.dumps(data))
    return path


def test_read_coco_converts_xywh_to_xyxy_and_sorts_category_ids(tmp_path):
    dataset = read_coco(write_sample(tmp_path, coco_dict()))

    assert dataset.categories == ["cat", "dog"]  # COCO id 3 before 7
    assert dataset.category_ids == [3, 7]
    first, second = dataset.images
    assert (first.image_id, first.file_name, first.width, first.height) == ("1", "a.jpg", 64, 48)
    np.testing.assert_allclose(first.boxes.boxes, [[10, 20, 40, 35], [0.5, 1.5, 4.5, 7.5]])
    assert first.boxes.class_id.tolist() == [1, 0]
    assert first.boxes.complete and first.points is None
    assert len(second.boxes) == 0  # the crowd box is skipped
    assert dataset.class_counts() == {"cat": 1, "dog": 1}
    assert dataset.image_path(first) == tmp_path / "a.jpg"


def test_write_coco_round_trip_keeps_ids_boxes_and_refuses_overwrite(tmp_path):
    dataset = read_coco(write_sample(tmp_path, coco_dict()))
    out = tmp_path / "out" / "copy.json"
    write_coco(dataset, out)

    written = json.loads(out.read_text())
    assert [image["file_name"] for image in written["images"]] == ["../a.jpg", "../b.jpg"]
    assert written["annotations"][0] == {"id": 1, "image_id": 1, "category_id": 7,
                                         "bbox": [10.0, 20.0, 30.0, 15.0], "area": 450.0, "iscrowd": 0}
    again = read_coco(out)
    assert again.categories == ["cat", "dog"] and again.category_ids == [3, 7]
    assert [r.image_id for r in again.images] == ["1", "2"]
    np.testing.assert_allclose(again.images[0].boxes.boxes, dataset.images[0].boxes.boxes)
    with pytest.raises(DataError, match="already exists"):
        write_coco(dataset, out)
    write_coco(dataset, out, overwrite=True)
    assert not list(out.parent.glob("*.tmp"))  # the atomic write leaves no temporary file


def test_point_labels_and_missing_box_flag_round_trip(tmp_path):
    data = coco_dict()
    data["annotations"].append({"id": 13, "image_id": 2, "category_id": 3, "point": [5.5, 7.25]})
    data["annotations"].append({"id": 14, "image_id": 2, "category_id": 7, "point": [30, 1], "bbox": []})
    data["images"][0]["boxes_complete"] = False
    dataset = read_coco(write_sample(tmp_path, data))

    image_a, image_b = dataset.images
    assert not image_a.boxes.complete and image_a.points is None
    np.testing.assert_allclose(image_b.points.xy, [[5.5, 7.25], [30, 1]])
    assert image_b.points.class_id.tolist() == [0, 1]
    assert not image_b.boxes.complete  # points mean objects without boxes
    assert dataset.num_points == 2

    write_coco(dataset, tmp_path / "points.json")
    written = json.loads((tmp_path / "points.json").read_text())
    assert written["annotations"][-1] == {"id": 4, "image_id": 2, "category_id": 7, "point": [30.0, 1.0],
                                          "iscrowd": 0}
    assert written["images"][0]["boxes_complete"] is False
    again = read_coco(tmp_path / "points.json")
    np.testing.assert_allclose(again.images[1].points.xy, image_b.points.xy)
    assert again.images[1].points.class_id.tolist() == [0, 1]
    assert not again.images[0].boxes.complete


def test_box_partly_outside_is_clipped_with_a_warning(tmp_path):
    data = coco_dict()
    data["annotations"][0]["bbox"] = [50, 40, 20, 20]  # reaches x = 70 > 64 and y = 60 > 48
    with pytest.warns(BoxClippedWarning, match=r"annotations.json: annotation id 10: .*clipped to \[50, 40, 64, 48\]"):
        dataset = read_coco(write_sample(tmp_path, data))
    np.testing.assert_allclose(dataset.images[0].boxes.boxes[0], [50, 40, 64, 48])


def _set(path: list, value):
    def mutate(data):
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return mutate


MALFORMED = {
    "unknown category id": (_set(["annotations", 0, "category_id"], 99), "unknown category id 99"),
    "unknown image id": (_set(["annotations", 1, "image_id"], 5), "annotation id 11: unknown image id 5"),
    "duplicate image id": (_set(["images", 1, "id"], 1), "duplicate image id 1"),
    "duplicate annotation id": (_set(["annotations", 1, "id"], 10), "duplicate annotation id 10"),
    "zero width": (_set(["annotations", 0, "bbox"], [10, 20, 0, 5]), "annotation id 10: empty box"),
    "entirely outside": (_set(["annotations", 0, "bbox"], [100, 10, 5, 5]), "lies entirely outside the 64x48"),
    "bad bbox": (_set(["annotations", 0, "bbox"], [1, 2, 3]), "is not [x, y, w, h]"),
    "category without name": (_set(["categories", 0], {"id": 7}), "missing field 'name'"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_annotations_raise_data_error_naming_the_file(tmp_path, case):
    mutate, reason = MALFORMED[case]
    data = coco_dict()
    mutate(data)
    path = write_sample(tmp_path, data)
    with pytest.raises(DataError, match=re.escape(reason)) as info:
        read_coco(path)
    assert str(info.value).startswith(str(path))


def test_truncated_json_raises_data_error(tmp_path):
    path = write_sample(tmp_path, coco_dict())
    path.write_text(path.read_text()[:100])
    with pytest.raises(DataError, match="annotations.json: malformed or truncated JSON"):
        read_coco(path)


def test_missing_image_file_raises_data_error(tmp_path):
    path = write_sample(tmp_path, coco_dict())
    (tmp_path / "b.jpg").unlink()
    with pytest.raises(DataError, match=r"b.jpg: image file not found \(referenced by .*annotations.json\)"):
        read_coco(path)


def test_corrupt_jpeg_is_caught_only_with_verify_images(tmp_path):
    path = write_sample(tmp_path, coco_dict())
    make_image(tmp_path / "a.jpg", 64, 48, noise=True)
    jpeg = (tmp_path / "a.jpg").read_bytes()
    (tmp_path / "a.jpg").write_bytes(jpeg[: len(jpeg) // 2])  # header intact, pixel data cut
    assert len(read_coco(path).images) == 2  # existence check only
    with pytest.raises(DataError, match="a.jpg: corrupt or truncated image"):
        read_coco(path, verify_images=True)


def test_verify_images_compares_the_size(tmp_path):
    path = write_sample(tmp_path, coco_dict())
    make_image(tmp_path / "b.jpg", 40, 32)
    with pytest.raises(DataError, match="b.jpg: image is 40x32 but the annotation says 32x32"):
        read_coco(path, verify_images=True)


def test_write_coco_results_scores_perfectly_in_cocoeval(tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    dataset = read_coco(write_sample(tmp_path, coco_dict()))
    image_ids, category_ids = coco_id_maps(dataset)
    assert image_ids == {"1": 1, "2": 2} and category_ids == [3, 7]
    first = dataset.images[0].boxes
    predictions = {"1": {"boxes": first.boxes, "labels": first.class_id, "scores": np.array([0.9, 0.8])},
                   "2": BoxLabels(np.zeros((0, 4)), [])}
    results = tmp_path / "results.json"
    write_coco_results(predictions, results, image_ids, category_ids)

    rows = json.loads(results.read_text())
    assert rows[0] == {"image_id": 1, "category_id": 7, "bbox": [10.0, 20.0, 30.0, 15.0], "score": 0.9}
    assert rows[1]["category_id"] == 3 and rows[1]["bbox"] == [0.5, 1.5, 4.0, 6.0]
    write_coco(dataset, tmp_path / "ground_truth.json")  # adds the area/iscrowd fields COCOeval needs
    ground_truth = COCO(str(tmp_path / "ground_truth.json"))
    evaluation = COCOeval(ground_truth, ground_truth.loadRes(str(results)), "bbox")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    assert evaluation.stats[1] == pytest.approx(1.0)  # AP50 of the ground truth itself


def test_write_coco_results_rejects_unknown_image(tmp_path):
    with pytest.raises(DataError, match="prediction for image 'x' has no COCO image id"):
        write_coco_results({"x": BoxLabels(np.zeros((0, 4)), [])}, tmp_path / "r.json", {}, [1])
