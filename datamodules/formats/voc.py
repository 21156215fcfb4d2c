"""Pascal VOC detection XML: reader and writer.

Layout (http://host.robots.ox.ac.uk/pascal/VOC/voc2012/devkit_doc.pdf)::

    root/Annotations/<id>.xml        one file per image: size, object/name, object/bndbox
    root/JPEGImages/<id>.jpg         the images (the XML's <filename> wins when that file exists)
    root/ImageSets/Main/<split>.txt  one image id per line

**Coordinates.** VOC pixel coordinates are 1-based and inclusive: a box with ``xmin = 1, xmax = 10``
covers the first ten pixel columns. In this project's 0-based xyxy (pixel edges, image spanning
``[0, W]``) that box is ``x1 = xmin - 1 = 0, x2 = xmax = 10``; likewise ``y1 = ymin - 1, y2 = ymax``.
The writer does the inverse, so a box round-trips exactly.

``difficult`` objects are dropped unless ``use_difficult=True`` (the VOC benchmark ignores them);
an image that lost one has ``boxes.complete = False``, since it holds an object without a box.
A box whose file coordinates have ``xmin == xmax`` (or ``ymin == ymax``) is read as a 1-pixel box
with a :class:`SuspiciousBoxWarning`: valid by the convention above, but almost surely a slip.
"""

from __future__ import annotations

import warnings
import xml.etree.ElementTree as ET
from functools import partial
from pathlib import Path
from typing import Optional

import numpy as np

from datamodules.formats.detection_common import (
    BadImageHandler,
    DetectionDataset,
    ImageRecord,
    SuspiciousBoxWarning,
    check_box,
    check_image_file,
    flat_file_names,
    per_image,
    place_image,
    read_image_size,
    read_text,
    refuse_any_existing,
    reject_points,
    stack_boxes,
)
from vision.atomic import atomic_write_text
from vision.errors import DataError, PathLike


def _text(node: ET.Element, tag: str, path: Path, where: str) -> str:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise DataError(path, f"{where}: missing <{tag}>")
    return child.text.strip()


def _number(node: ET.Element, tag: str, path: Path, where: str) -> float:
    text = _text(node, tag, path, where)
    try:
        return float(text)
    except ValueError:
        raise DataError(path, f"{where}: <{tag}> is not a number ({text!r})") from None


def _parse_xml(path: Path) -> dict:
    """The raw content of one annotation file: filename, size (or None) and objects in file coordinates."""
    if not path.is_file():
        raise DataError(path, "annotation file not found")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise DataError(path, f"malformed XML ({err})") from None
    size = root.find("size")
    width = height = 0
    if size is not None and size.find("width") is not None:
        width, height = int(_number(size, "width", path, "size")), int(_number(size, "height", path, "size"))
    objects = []
    for i, obj in enumerate(root.findall("object")):
        where = f"object {i}"
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise DataError(path, f"{where}: missing <bndbox>")
        difficult = obj.find("difficult")
        objects.append({"name": _text(obj, "name", path, where),
                        "box": [_number(bndbox, tag, path, where) for tag in ("xmin", "ymin", "xmax", "ymax")],
                        "difficult": difficult is not None and (difficult.text or "0").strip() not in ("0", "")})
    filename = root.find("filename")
    return {"filename": None if filename is None or not filename.text else filename.text.strip(),
            "width": width, "height": height, "objects": objects}


def _split_ids(root: Path, split: Optional[str]) -> list[str]:
    if split is None:
        # hidden files are temporaries of interrupted writes (vision.atomic), not annotations
        return sorted(p.stem for p in (root / "Annotations").glob("*.xml") if not p.name.startswith("."))
    path = root / "ImageSets" / "Main" / f"{split}.txt"
    if not path.is_file():
        raise DataError(path, f"split file for {split!r} not found")
    ids = [line.split()[0] for line in read_text(path, "split file").splitlines() if line.strip()]
    if len(set(ids)) != len(ids):
        raise DataError(path, "duplicate image ids in the split file")
    return ids


def _image_file(root: Path, image_id: str, raw: dict, xml_path: Path) -> str:
    """The image's name inside ``JPEGImages/``: the XML's <filename> if present there, else ``<id>.jpg``."""
    if raw["filename"] and (root / "JPEGImages" / raw["filename"]).is_file():
        return raw["filename"]
    name = f"{image_id}.jpg"
    check_image_file(root / "JPEGImages" / name, referenced_by=xml_path)
    return name


def _record(root: Path, image_id: str, raw: dict, class_of: dict, use_difficult: bool,
            verify_images: bool) -> ImageRecord:
    xml_path = root / "Annotations" / f"{image_id}.xml"
    file_name = _image_file(root, image_id, raw, xml_path)
    width, height = raw["width"], raw["height"]
    if width <= 0 or height <= 0:  # some VOC exports write <width>0</width>: trust the image instead
        width, height = read_image_size(root / "JPEGImages" / file_name)
    check_image_file(root / "JPEGImages" / file_name, width, height, verify_images, xml_path)
    boxes, classes, complete = [], [], True
    for i, obj in enumerate(raw["objects"]):
        if obj["difficult"] and not use_difficult:
            complete = False
            continue
        if obj["name"] not in class_of:
            raise DataError(xml_path, f"object {i}: unknown class name {obj['name']!r} "
                                      f"(known: {sorted(class_of)})")
        xmin, ymin, xmax, ymax = obj["box"]
        if xmin == xmax or ymin == ymax:
            warnings.warn(f"{xml_path}: object {i}: zero-size box {obj['box']} in the file, read as a "
                          "1-pixel box (VOC coordinates are inclusive)", SuspiciousBoxWarning, stacklevel=2)
        boxes.append(check_box([xmin - 1, ymin - 1, xmax, ymax], width, height, xml_path, f"object {i}"))
        classes.append(class_of[obj["name"]])
    return ImageRecord(image_id, file_name, width, height, stack_boxes(boxes, classes, complete))


def read_voc(root: PathLike, split: Optional[str] = "train", class_names: Optional[list[str]] = None,
             use_difficult: bool = False, verify_images: bool = False,
             on_bad_image: Optional[BadImageHandler] = None) -> DetectionDataset:
    """Read a Pascal VOC folder into a :class:`DetectionDataset`.

    Args:
        root: folder holding ``Annotations/``, ``JPEGImages/`` and ``ImageSets/Main/``.
        split: name of the ``ImageSets/Main/<split>.txt`` list, or None for every ``Annotations/*.xml``.
        class_names: the classes in class-id order; an object of another class raises DataError.
            Default: the sorted names found in *all* annotation files, so every split gets the same ids.
        use_difficult: keep objects marked ``difficult``.
        verify_images: decode every image and compare its size with the XML (slow).
        on_bad_image: receives the DataError of an image whose XML or image file is bad, which is then
            left out; None raises it. A bad split file always raises.
    """
    root = Path(root)
    if not (root / "Annotations").is_dir():
        raise DataError(root, "not a VOC folder: Annotations/ is missing")
    ids = _split_ids(root, split)
    parsed = {image_id: per_image(on_bad_image, partial(_parse_xml, root / "Annotations" / f"{image_id}.xml"))
              for image_id in ids}
    raw = {image_id: item for image_id, item in parsed.items() if item is not None}
    if class_names is None:
        every = [raw.get(p.stem) or per_image(on_bad_image, partial(_parse_xml, p))
                 for p in (root / "Annotations").glob("*.xml")
                 if not p.name.startswith(".") and (p.stem not in parsed or p.stem in raw)]
        class_names = sorted({obj["name"] for item in every if item is not None for obj in item["objects"]})
    class_of = {name: i for i, name in enumerate(class_names)}
    records = [per_image(on_bad_image, partial(_record, root, image_id, item, class_of, use_difficult, verify_images))
               for image_id, item in raw.items()]
    records = [record for record in records if record is not None]
    return DetectionDataset(list(class_names), records, root / "JPEGImages")


def _coordinate(value: float) -> str:
    # shortest text that reads back to the same float32, so boxes round-trip exactly
    return np.format_float_positional(np.float32(value), trim="-")


def _xml_text(record: ImageRecord, file_name: str, categories: list[str]) -> str:
    annotation = ET.Element("annotation")
    ET.SubElement(annotation, "folder").text = "JPEGImages"
    ET.SubElement(annotation, "filename").text = file_name
    size = ET.SubElement(annotation, "size")
    for tag, value in (("width", record.width), ("height", record.height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(int(value))
    ET.SubElement(annotation, "segmented").text = "0"
    for box, class_id in zip(record.boxes.boxes, record.boxes.class_id):
        obj = ET.SubElement(annotation, "object")
        for tag, value in (("name", categories[class_id]), ("pose", "Unspecified"),
                           ("truncated", "0"), ("difficult", "0")):
            ET.SubElement(obj, tag).text = value
        bndbox = ET.SubElement(obj, "bndbox")
        file_box = (float(box[0]) + 1, float(box[1]) + 1, box[2], box[3])  # 0-based edges -> 1-based inclusive
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), file_box):
            ET.SubElement(bndbox, tag).text = _coordinate(value)
    ET.indent(annotation, space="\t")
    return ET.tostring(annotation, encoding="unicode") + "\n"


def write_voc(dataset: DetectionDataset, root: PathLike, split: str = "trainval",
              overwrite: bool = False) -> None:
    """Write ``dataset`` as a VOC folder: XML per image, images in ``JPEGImages/``, ``ImageSets/Main/<split>.txt``.

    Image ids become the image file stems (which must be unique). Images are hard-linked, or copied
    across file systems, never re-encoded (a PNG stays a PNG; the XML's <filename> names it).
    Point labels cannot be stored in VOC and raise DataError; so does any existing target file
    unless ``overwrite``. Each XML is written atomically.
    """
    root = Path(root)
    reject_points(dataset, root, "Pascal VOC")
    names = flat_file_names(dataset, root)
    stems = [Path(name).stem for name in names]
    split_file = root / "ImageSets" / "Main" / f"{split}.txt"
    refuse_any_existing([split_file] + [root / "Annotations" / f"{s}.xml" for s in stems]
                    + [root / "JPEGImages" / n for n in names], overwrite)
    for record, name, stem in zip(dataset.images, names, stems):
        place_image(dataset.image_path(record), root / "JPEGImages" / name, overwrite)
        atomic_write_text(root / "Annotations" / f"{stem}.xml", _xml_text(record, name, dataset.categories))
    atomic_write_text(split_file, "".join(f"{stem}\n" for stem in stems))
