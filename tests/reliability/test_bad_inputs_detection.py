"""Bad detection inputs: COCO JSON, Pascal VOC XML, YOLO txt and the images they point to.

Each case breaks a valid dataset in one way and checks the DataError: its type, the file it names
and the reason.
"""

from __future__ import annotations

import json

import pytest

from datamodules.detection import DetectionDataModule, load_image
from datamodules.formats.coco import read_coco
from datamodules.formats.detection_common import check_image_file
from datamodules.formats.voc import read_voc
from datamodules.formats.yolo import read_yolo


def _coco_with(valid, change):
    """A valid COCO file after ``change(data)`` edits its parsed JSON in place."""
    path, data = valid.coco_data()
    change(data)
    path.write_text(json.dumps(data))
    return path


def _replace_in(path, old: str, new: str):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return path


# ---------------------------------------------------------------------------------------------- COCO
def coco_truncated(valid):
    path = valid.coco()
    path.write_text(path.read_text()[:-25])
    return lambda: read_coco(path), path


def coco_not_utf8(valid):
    path = valid.coco()
    path.write_bytes(b'{"images": [{"file_name": "\xff\xfe.jpg"}]}')
    return lambda: read_coco(path), path


def coco_missing_image_file(valid):
    path = valid.coco()
    (valid.root / "src_images" / "img1.jpg").unlink()
    return lambda: read_coco(path), valid.root / "src_images" / "img1.jpg"


def coco_dangling_category(valid):
    path = _coco_with(valid, lambda data: data["annotations"][1].update(category_id=99))
    return lambda: read_coco(path), path


def coco_unknown_image(valid):
    path = _coco_with(valid, lambda data: data["annotations"][0].update(image_id=42))
    return lambda: read_coco(path), path


def coco_box_with_zero_width(valid):
    path = _coco_with(valid, lambda data: data["annotations"][0].update(bbox=[5, 5, 0, 4]))
    return lambda: read_coco(path), path


def coco_box_with_negative_height(valid):
    path = _coco_with(valid, lambda data: data["annotations"][2].update(bbox=[5, 5, 4, -3]))
    return lambda: read_coco(path), path


def coco_box_with_nan(valid):
    path = _coco_with(valid, lambda data: data["annotations"][0].update(bbox=[float("nan"), 5, 4, 4]))
    return lambda: read_coco(path), path


def coco_box_outside_the_image(valid):
    path = _coco_with(valid, lambda data: data["annotations"][0].update(bbox=[100, 100, 5, 5]))
    return lambda: read_coco(path), path


def coco_width_as_text(valid):
    path = _coco_with(valid, lambda data: data["images"][0].update(width="40"))
    return lambda: read_coco(path), path


def coco_duplicate_image_id(valid):
    path = _coco_with(valid, lambda data: data["images"][1].update(id=data["images"][0]["id"]))
    return lambda: read_coco(path), path


def coco_without_categories(valid):
    path = _coco_with(valid, lambda data: data.pop("categories"))
    return lambda: read_coco(path), path


def coco_image_of_another_size(valid):
    path = _coco_with(valid, lambda data: data["images"][0].update(width=64))
    return lambda: read_coco(path, verify_images=True), valid.root / "src_images" / "img0.jpg"


# ---------------------------------------------------------------------------------------------- VOC
def voc_truncated_xml(valid):
    root = valid.voc()
    xml = root / "Annotations" / "img0.xml"
    xml.write_text(xml.read_text()[:-40])
    return lambda: read_voc(root, split="train"), xml


def voc_box_with_x2_below_x1(valid):
    root = valid.voc()
    xml = _replace_in(root / "Annotations" / "img1.xml", "<xmax>12</xmax>", "<xmax>2</xmax>")
    return lambda: read_voc(root, split="train"), xml


def voc_coordinate_not_a_number(valid):
    root = valid.voc()
    xml = _replace_in(root / "Annotations" / "img0.xml", "<ymin>4</ymin>", "<ymin>four</ymin>")
    return lambda: read_voc(root, split="train"), xml


def voc_unknown_class(valid):
    root = valid.voc()
    xml = root / "Annotations" / "img0.xml"
    return lambda: read_voc(root, split="train", class_names=["cat"]), xml


def voc_missing_image(valid):
    root = valid.voc()
    (root / "JPEGImages" / "img1.jpg").unlink()
    return lambda: read_voc(root, split="train"), root / "JPEGImages" / "img1.jpg"


def voc_split_names_missing_annotation(valid):
    root = valid.voc()
    split = root / "ImageSets" / "Main" / "train.txt"
    split.write_text(split.read_text() + "img7\n")
    return lambda: read_voc(root, split="train"), root / "Annotations" / "img7.xml"


def voc_split_file_not_utf8(valid):
    root = valid.voc()
    split = root / "ImageSets" / "Main" / "train.txt"
    split.write_bytes(b"img0\n\xffimg1\n")
    return lambda: read_voc(root, split="train"), split


# ---------------------------------------------------------------------------------------------- YOLO
def yolo_class_out_of_range(valid):
    root = valid.yolo()
    labels = root / "labels" / "img0.txt"
    labels.write_text("5 0.5 0.5 0.2 0.2\n")
    return lambda: read_yolo(root), labels


def yolo_four_columns(valid):
    root = valid.yolo()
    labels = root / "labels" / "img1.txt"
    labels.write_text("0 0.5 0.5 0.2\n")
    return lambda: read_yolo(root), labels


def yolo_nan(valid):
    root = valid.yolo()
    labels = root / "labels" / "img0.txt"
    labels.write_text("0 0.5 nan 0.2 0.2\n")
    return lambda: read_yolo(root), labels


def yolo_zero_width(valid):
    root = valid.yolo()
    labels = root / "labels" / "img0.txt"
    labels.write_text("1 0.5 0.5 0.0 0.2\n")
    return lambda: read_yolo(root), labels


def yolo_label_without_image(valid):
    root = valid.yolo()
    orphan = root / "labels" / "img9.txt"
    orphan.write_text("0 0.5 0.5 0.2 0.2\n")
    return lambda: read_yolo(root), orphan


def yolo_labels_not_utf8(valid):
    root = valid.yolo()
    labels = root / "labels" / "img0.txt"
    labels.write_bytes(b"0 0.5 0.5 0.2 0.2\n\x80\x81\n")
    return lambda: read_yolo(root), labels


def yolo_no_class_names(valid):
    root = valid.yolo()
    (root / "classes.txt").unlink()
    (root / "data.yaml").unlink()
    return lambda: read_yolo(root), root / "classes.txt"


# ---------------------------------------------------------------------------------------------- images
def jpeg_truncated(valid):
    path = valid.jpeg()
    path.write_bytes(path.read_bytes()[:400])
    return lambda: load_image(path, None), path


def jpeg_garbage(valid):
    path = valid.root / "photo.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0" + b"not a jpeg" * 20)
    return lambda: load_image(path, 64), path


def png_truncated(valid):
    path = valid.png()
    path.write_bytes(path.read_bytes()[:200])
    return lambda: load_image(path, None), path


def png_verified_truncated(valid):
    path = valid.png()
    path.write_bytes(path.read_bytes()[:-100])
    return lambda: check_image_file(path, 40, 30, verify=True), path


def datamodule_corrupt_image(valid):
    root = valid.coco().parent
    (valid.root / "src_images" / "img1.jpg").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    datamodule = DetectionDataModule(data_root=str(valid.root), splits={"val": str(root / "annotations.json")})
    images = datamodule.images("val")
    return lambda: images[1], valid.root / "src_images" / "img1.jpg"


CASES = [
    pytest.param(coco_truncated, "malformed or truncated JSON", id="coco-truncated"),
    pytest.param(coco_not_utf8, "not UTF-8 text", id="coco-not-utf8"),
    pytest.param(coco_missing_image_file, r"image file not found \(referenced by .*annotations.json\)",
                 id="coco-missing-image-file"),
    pytest.param(coco_dangling_category, "annotation id 2: unknown category id 99", id="coco-dangling-category"),
    pytest.param(coco_unknown_image, "annotation id 1: unknown image id 42", id="coco-unknown-image-id"),
    pytest.param(coco_box_with_zero_width, r"empty box \[5, 5, 5, 9\] \(x2 <= x1 or y2 <= y1\)",
                 id="coco-box-x2-equals-x1"),
    pytest.param(coco_box_with_negative_height, r"empty box \[5, 5, 9, 2\]", id="coco-box-y2-below-y1"),
    pytest.param(coco_box_with_nan, "is not 4 finite numbers", id="coco-box-nan"),
    pytest.param(coco_box_outside_the_image, "lies entirely outside the 40x30 image", id="coco-box-outside-image"),
    pytest.param(coco_width_as_text, "field 'width' has the wrong type", id="coco-wrong-dtype"),
    pytest.param(coco_duplicate_image_id, "duplicate image id 1", id="coco-duplicate-image-id"),
    pytest.param(coco_without_categories, "missing or malformed 'categories' list", id="coco-no-categories"),
    pytest.param(coco_image_of_another_size, "image is 40x30 but the annotation says 64x30",
                 id="coco-image-size-mismatch"),
    pytest.param(voc_truncated_xml, "malformed XML", id="voc-truncated-xml"),
    pytest.param(voc_box_with_x2_below_x1, r"object 0: empty box \[2, 3, 2, 13\]", id="voc-x2-below-x1"),
    pytest.param(voc_coordinate_not_a_number, r"<ymin> is not a number \('four'\)", id="voc-not-a-number"),
    pytest.param(voc_unknown_class, "unknown class name 'dog'", id="voc-unknown-class"),
    pytest.param(voc_missing_image, "image file not found", id="voc-missing-image"),
    pytest.param(voc_split_names_missing_annotation, "annotation file not found", id="voc-missing-annotation"),
    pytest.param(voc_split_file_not_utf8, "split file is not UTF-8 text", id="voc-split-not-utf8"),
    pytest.param(yolo_class_out_of_range, r"line 1: class id 5 out of range 0..1", id="yolo-class-out-of-range"),
    pytest.param(yolo_four_columns, "line 1: expected 5 columns", id="yolo-four-columns"),
    pytest.param(yolo_nan, "line 1: non-finite number", id="yolo-nan"),
    pytest.param(yolo_zero_width, r"line 1: empty box", id="yolo-zero-width"),
    pytest.param(yolo_label_without_image, "label file has no image", id="yolo-label-without-image"),
    pytest.param(yolo_labels_not_utf8, "label file is not UTF-8 text", id="yolo-labels-not-utf8"),
    pytest.param(yolo_no_class_names, "class names file not found", id="yolo-no-class-names"),
    pytest.param(jpeg_truncated, "cannot read the image", id="jpeg-truncated"),
    pytest.param(jpeg_garbage, "cannot read the image", id="jpeg-corrupt"),
    pytest.param(png_truncated, "cannot read the image", id="png-truncated"),
    pytest.param(png_verified_truncated, "corrupt or truncated image", id="png-truncated-verified"),
    pytest.param(datamodule_corrupt_image, "cannot read the image", id="datamodule-corrupt-image"),
]


@pytest.mark.parametrize(("make", "reason"), CASES)
def test_bad_detection_input_raises_data_error_naming_the_file(valid, expect_data_error, make, reason):
    read, path = make(valid)
    expect_data_error(read, path, reason)
