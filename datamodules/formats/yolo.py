"""YOLO detection text labels (Darknet / Ultralytics layout): reader and writer.

Layout (https://docs.ultralytics.com/datasets/detect/)::

    root/images[/<split>]/<name>.jpg   images (any of IMAGE_EXTENSIONS, subfolders allowed)
    root/labels[/<split>]/<name>.txt   one row per box: ``class cx cy w h``, centre and size divided
                                       by the image width/height (so in [0, 1]); no file = no boxes
    root/classes.txt                   one class name per line, or
    root/data.yaml                     ``names: [a, b]`` or ``names: {0: a, 1: b}``

Image sizes come from the image headers (PIL reads no pixels). The normalised numbers convert to
0-based pixel xyxy as ``x1 = (cx - w / 2) * W``, ``x2 = (cx + w / 2) * W`` (and likewise for y).
YOLO cannot store point labels or "boxes may be missing" flags.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Optional

import numpy as np
import yaml

from datamodules.formats.detection_common import (
    IMAGE_EXTENSIONS,
    BadImageHandler,
    DetectionDataset,
    ImageRecord,
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

CLASS_FILES = ("classes.txt", "data.yaml", "dataset.yaml")


def _names_from_yaml(path: Path) -> list[str]:
    try:
        data = yaml.safe_load(read_text(path, "class names file"))
    except yaml.YAMLError as err:
        raise DataError(path, f"malformed YAML ({err})") from None
    names = data.get("names") if isinstance(data, dict) else None
    if isinstance(names, dict):
        if sorted(names) != list(range(len(names))):
            raise DataError(path, f"'names' keys must be 0..{len(names) - 1}, got {sorted(names)}")
        names = [names[i] for i in range(len(names))]
    if not isinstance(names, list) or not names:
        raise DataError(path, "no 'names' list of class names")
    return [str(name) for name in names]


def read_yolo_classes(root: PathLike, classes_file: Optional[PathLike] = None) -> list[str]:
    """Class names from ``classes_file`` or the first of ``classes.txt``, ``data.yaml``, ``dataset.yaml``."""
    root = Path(root)
    candidates = [Path(classes_file)] if classes_file is not None else [root / name for name in CLASS_FILES]
    for path in candidates:
        if not path.is_file():
            continue
        if path.suffix in (".yaml", ".yml"):
            return _names_from_yaml(path)
        names = [line.strip() for line in read_text(path, "class names file").splitlines()
                 if line.strip()]
        if not names or len(set(names)) != len(names):
            raise DataError(path, "class names must be non-empty and unique")
        return names
    raise DataError(candidates[0], f"class names file not found (looked for {', '.join(CLASS_FILES)})")


def _parse_row(text: str, path: Path, line: int, num_classes: int) -> tuple[int, np.ndarray]:
    fields = text.split()
    if len(fields) != 5:
        raise DataError(path, f"line {line}: expected 5 columns 'class cx cy w h', got {len(fields)}")
    try:
        values = [float(v) for v in fields]
    except ValueError:
        raise DataError(path, f"line {line}: not a number in {text.strip()!r}") from None
    if not np.all(np.isfinite(values)):
        raise DataError(path, f"line {line}: non-finite number in {text.strip()!r}")
    class_id = values[0]
    if class_id != int(class_id):
        raise DataError(path, f"line {line}: class id {fields[0]!r} is not an integer")
    if not 0 <= class_id < num_classes:
        raise DataError(path, f"line {line}: class id {int(class_id)} out of range 0..{num_classes - 1}")
    return int(class_id), np.asarray(values[1:], dtype=np.float64)


def _read_labels(path: Path, width: int, height: int, num_classes: int):
    if not path.is_file():
        return stack_boxes([], [])
    boxes, classes = [], []
    for line, text in enumerate(read_text(path, "label file").splitlines(), start=1):
        if not text.strip():
            continue
        class_id, (cx, cy, w, h) = _parse_row(text, path, line, num_classes)
        xyxy = [(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height]
        boxes.append(check_box(xyxy, width, height, path, f"line {line}"))
        classes.append(class_id)
    return stack_boxes(boxes, classes)


def _image_files(images_dir: Path) -> list[Path]:
    # hidden files are temporaries of interrupted writes (vision.atomic), not images
    files = sorted(p for p in images_dir.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
                   and not p.name.startswith("."))
    stems: dict[Path, Path] = {}
    for path in files:
        key = path.with_suffix("")
        if key in stems:
            raise DataError(path, f"shares its label file with {stems[key].name}; image stems must be unique")
        stems[key] = path
    return files


def _record(images_dir: Path, labels_dir: Path, image_path: Path, num_classes: int,
            verify_images: bool) -> ImageRecord:
    relative = image_path.relative_to(images_dir)
    label_path = labels_dir / relative.with_suffix(".txt")
    width, height = read_image_size(image_path)
    check_image_file(image_path, width, height, verify_images, label_path)
    boxes = _read_labels(label_path, width, height, num_classes)
    return ImageRecord(relative.with_suffix("").as_posix(), relative.as_posix(), width, height, boxes)


def read_yolo(root: PathLike, split: Optional[str] = None, classes_file: Optional[PathLike] = None,
              verify_images: bool = False, on_bad_image: Optional[BadImageHandler] = None) -> DetectionDataset:
    """Read a YOLO folder into a :class:`DetectionDataset`.

    Args:
        root: folder holding ``images/``, ``labels/`` and the class names file.
        split: optional subfolder (``images/<split>``, ``labels/<split>``).
        classes_file: class names file; default: ``classes.txt``, ``data.yaml`` or ``dataset.yaml`` in root.
        verify_images: decode every image (slow); otherwise only its header is read for the size.
        on_bad_image: receives the DataError of an image whose file or label file is bad, which is then
            left out; None raises it.

    Image ids are image paths relative to ``images[/<split>]`` without extension. A label file
    without a matching image raises DataError.
    """
    root = Path(root)
    categories = read_yolo_classes(root, classes_file)
    images_dir, labels_dir = root / "images", root / "labels"
    if split is not None:
        images_dir, labels_dir = images_dir / split, labels_dir / split
    if not images_dir.is_dir():
        raise DataError(images_dir, "YOLO images folder not found")
    files = _image_files(images_dir)
    records = [per_image(on_bad_image, partial(_record, images_dir, labels_dir, image_path, len(categories),
                                               verify_images)) for image_path in files]
    records = [record for record in records if record is not None]
    expected = {labels_dir / path.relative_to(images_dir).with_suffix(".txt") for path in files}
    for label_path in sorted(labels_dir.rglob("*.txt")) if labels_dir.is_dir() else []:
        if label_path not in expected and not label_path.name.startswith("."):
            raise DataError(label_path, f"label file has no image in {images_dir}")
    return DetectionDataset(categories, records, images_dir)


def _label_text(boxes: np.ndarray, class_ids: np.ndarray, width: int, height: int) -> str:
    rows = []
    for (x1, y1, x2, y2), class_id in zip(boxes.astype(np.float64), class_ids):
        cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
        w, h = (x2 - x1) / width, (y2 - y1) / height
        rows.append(f"{int(class_id)} {cx:.8f} {cy:.8f} {w:.8f} {h:.8f}\n")  # 8 digits: < 1e-3 px to 50k px
    return "".join(rows)


def write_yolo(dataset: DetectionDataset, root: PathLike, split: Optional[str] = None,
               overwrite: bool = False) -> None:
    """Write ``dataset`` as a YOLO folder: ``images/``, ``labels/`` (one file per image, empty when it
    has no boxes), ``classes.txt`` and an Ultralytics ``data.yaml`` with the same names.

    Images are hard-linked, or copied across file systems, under their base names (which must have
    unique stems). Point labels raise DataError; so does any existing target file unless ``overwrite``.
    """
    root = Path(root)
    reject_points(dataset, root, "YOLO")
    names = flat_file_names(dataset, root)
    images_dir, labels_dir = root / "images", root / "labels"
    if split is not None:
        images_dir, labels_dir = images_dir / split, labels_dir / split
    label_paths = [labels_dir / f"{Path(name).stem}.txt" for name in names]
    if (root / "classes.txt").is_file() and not overwrite:  # another split may already be there
        if read_yolo_classes(root, root / "classes.txt") != list(dataset.categories):
            raise DataError(root / "classes.txt", "holds other class names; pass overwrite=True to replace it")
    refuse_any_existing(label_paths + [images_dir / n for n in names], overwrite)
    for record, name, label_path in zip(dataset.images, names, label_paths):
        place_image(dataset.image_path(record), images_dir / name, overwrite)
        atomic_write_text(label_path, _label_text(record.boxes.boxes, record.boxes.class_id,
                                                  record.width, record.height))
    images_folder = images_dir.relative_to(root).as_posix()
    atomic_write_text(root / "classes.txt", "".join(f"{name}\n" for name in dataset.categories))
    data_yaml = {"path": ".", "train": images_folder, "val": images_folder,
                 "nc": len(dataset.categories), "names": list(dataset.categories)}
    atomic_write_text(root / "data.yaml", yaml.safe_dump(data_yaml, sort_keys=False))
