"""Pascal VOC XML reader/writer: 1-based coordinates, difficult objects, validation, real BCCD data."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datamodules.formats.detection_common import BoxClippedWarning, SuspiciousBoxWarning
from datamodules.formats.voc import read_voc, write_voc
from vision.errors import DataError


def make_image(path: Path, width: int, height: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), (200, 40, 40)).save(path)


def voc_xml(objects: list[tuple], width: int = 64, height: int = 48) -> str:
    """``objects``: (name, xmin, ymin, xmax, ymax, difficult)."""
    rows = "".join(f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{x1}</xmin>"
                   f"<ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
                   for n, x1, y1, x2, y2, d in objects)
    return (f"<annotation><filename>IGNORED.jpg</filename><size><width>{width}</width>"
            f"<height>{height}</height><depth>3</depth></size>{rows}</annotation>")


def make_voc(root: Path, images: dict[str, list[tuple]], split: str = "train") -> Path:
    for image_id, objects in images.items():
        make_image(root / "JPEGImages" / f"{image_id}.jpg", 64, 48)
        (root / "Annotations").mkdir(parents=True, exist_ok=True)
        (root / "Annotations" / f"{image_id}.xml").write_text(voc_xml(objects))
    (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in images))
    return root


SAMPLE = {"img1": [("dog", 1, 1, 10, 20, 0), ("cat", 30, 5, 64, 48, 0), ("cat", 5, 5, 9, 9, 1)],
          "img2": []}


def test_read_voc_converts_one_based_inclusive_to_zero_based_xyxy(tmp_path):
    dataset = read_voc(make_voc(tmp_path, SAMPLE), split="train")

    assert dataset.categories == ["cat", "dog"]  # sorted names from the files
    first, second = dataset.images
    assert (first.image_id, first.file_name, first.width, first.height) == ("img1", "img1.jpg", 64, 48)
    np.testing.assert_array_equal(first.boxes.boxes, [[0, 0, 10, 20], [29, 4, 64, 48]])
    assert first.boxes.class_id.tolist() == [1, 0]
    assert not first.boxes.complete  # the difficult cat was dropped: an object without a box
    assert len(second.boxes) == 0 and second.boxes.complete
    assert dataset.images_root == tmp_path / "JPEGImages"


def test_use_difficult_keeps_difficult_objects(tmp_path):
    dataset = read_voc(make_voc(tmp_path, SAMPLE), use_difficult=True)
    assert len(dataset.images[0].boxes) == 3 and dataset.images[0].boxes.complete
    np.testing.assert_array_equal(dataset.images[0].boxes.boxes[2], [4, 4, 9, 9])


def test_write_voc_round_trip_is_exact_for_fractional_boxes(tmp_path):
    dataset = read_voc(make_voc(tmp_path / "src", SAMPLE))
    dataset.images[0].boxes.boxes[0] = [0.25, 3.5, 10.75, 20.125]
    write_voc(dataset, tmp_path / "dst", split="val")

    xml = (tmp_path / "dst" / "Annotations" / "img1.xml").read_text()
    assert "<xmin>1.25</xmin>" in xml and "<ymin>4.5</ymin>" in xml and "<xmax>10.75</xmax>" in xml
    assert (tmp_path / "dst" / "ImageSets" / "Main" / "val.txt").read_text() == "img1\nimg2\n"
    again = read_voc(tmp_path / "dst", split="val", class_names=dataset.categories)
    for before, after in zip(dataset.images, again.images):
        np.testing.assert_array_equal(after.boxes.boxes, before.boxes.boxes)
        assert after.boxes.class_id.tolist() == before.boxes.class_id.tolist()
    assert (tmp_path / "dst" / "JPEGImages" / "img2.jpg").is_file()
    with pytest.raises(DataError, match="already exists"):
        write_voc(dataset, tmp_path / "dst", split="val")


def test_box_partly_outside_is_clipped_with_a_warning(tmp_path):
    root = make_voc(tmp_path, {"img1": [("dog", 50, 40, 70, 60, 0)]})
    with pytest.warns(BoxClippedWarning, match=r"img1.xml: object 0: .*clipped to \[49, 39, 64, 48\]"):
        dataset = read_voc(root)
    np.testing.assert_array_equal(dataset.images[0].boxes.boxes, [[49, 39, 64, 48]])


@pytest.mark.parametrize("objects, reason", [
    ([("dog", 10, 5, 8, 9, 0)], "img1.xml: object 0: empty box"),
    ([("dog", 80, 60, 90, 70, 0)], "img1.xml: object 0: box [79, 59, 90, 70] lies entirely outside"),
    ([("dog", 1, 2, "x", 9, 0)], "img1.xml: object 0: <xmax> is not a number"),
    ([("bird", 1, 2, 5, 9, 0)], "img1.xml: object 0: unknown class name 'bird'"),
])
def test_bad_objects_raise_data_error(tmp_path, objects, reason):
    root = make_voc(tmp_path, {"img1": objects})
    with pytest.raises(DataError) as info:
        read_voc(root, class_names=["cat", "dog"])
    assert reason in str(info.value)


def test_malformed_xml_raises_data_error_naming_the_file(tmp_path):
    root = make_voc(tmp_path, SAMPLE)
    (root / "Annotations" / "img2.xml").write_text("<annotation><size>")
    with pytest.raises(DataError, match=r"img2.xml: malformed XML"):
        read_voc(root)


def test_missing_image_or_split_raises_data_error(tmp_path):
    root = make_voc(tmp_path, SAMPLE)
    (root / "JPEGImages" / "img2.jpg").unlink()
    with pytest.raises(DataError, match=r"img2.jpg: image file not found \(referenced by .*img2.xml\)"):
        read_voc(root)
    with pytest.raises(DataError, match=r"test.txt: split file for 'test' not found"):
        read_voc(root, split="test")


BCCD_SPLITS = {  # images, boxes, boxes per class (Platelets, RBC, WBC)
    "train": (205, 2805, [209, 2382, 214]),
    "val": (87, 1138, [83, 968, 87]),
    "trainval": (292, 3943, [292, 3350, 301]),
    "test": (72, 945, [69, 805, 71]),
    None: (364, 4888, [361, 4155, 372]),
}


def test_bccd_real_data_counts_per_split_and_class(shared_data):
    root = shared_data / "bccd" / "BCCD"
    for split, (num_images, num_boxes, per_class) in BCCD_SPLITS.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            dataset = read_voc(root, split=split, class_names=["Platelets", "RBC", "WBC"])
        assert len(dataset.images) == num_images, split
        assert dataset.num_boxes == num_boxes, split
        assert list(dataset.class_counts().values()) == per_class, split
        assert all(dataset.image_path(r).is_file() and (r.width, r.height) == (640, 480) for r in dataset.images)
        assert not [w for w in caught if issubclass(w.category, BoxClippedWarning)]  # none lie outside
    # the file's first object, WBC at VOC (260, 177)-(491, 376)
    first = next(r for r in dataset.images if r.image_id == "BloodImage_00000")
    np.testing.assert_array_equal(first.boxes.boxes[0], [259, 176, 491, 376])
    assert dataset.categories[first.boxes.class_id[0]] == "WBC"


def test_bccd_two_zero_size_boxes_warn_and_become_one_pixel(shared_data):
    with pytest.warns(SuspiciousBoxWarning) as caught:
        dataset = read_voc(shared_data / "bccd" / "BCCD", split=None)
    named = sorted(Path(str(w.message).split(":")[0]).name for w in caught
                   if issubclass(w.category, SuspiciousBoxWarning))
    assert named == ["BloodImage_00338.xml", "BloodImage_00343.xml"]
    image = next(r for r in dataset.images if r.image_id == "BloodImage_00338")
    np.testing.assert_array_equal(image.boxes.boxes[12], [503, 336, 504, 337])
